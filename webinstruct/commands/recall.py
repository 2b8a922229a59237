"""`webinstruct recall`: two rounds of fastText recall with LLM-labelled domains."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

from webinstruct.options import BaseUrlOption, ConcurrencyOption, ModelOption, llm_session

console = Console(stderr=True, soft_wrap=True)  # ids and paths are never cut into lines


def register(app: typer.Typer) -> None:
    app.command()(recall)


def recall(
    seeds: Annotated[Optional[list[str]], typer.Option(
        help="Seed file of positive examples, repeatable (JSONL/JSON/Parquet/txt) [default: bundled GSM8K, AQuA-RAT, SVAMP]")] = None,
    dim: Annotated[int, typer.Option(help="fastText vector size")] = 256,
    epoch: Annotated[int, typer.Option(help="fastText epochs")] = 5,
    lr: Annotated[float, typer.Option(help="fastText learning rate")] = 1.0,
    word_ngrams: Annotated[int, typer.Option(help="fastText word n-grams")] = 2,
    neg_sample: Annotated[Optional[int], typer.Option(
        help="Random crawl documents as negatives [default: as many as positives, at most half the crawl]")] = None,
    threshold: Annotated[Optional[float], typer.Option(
        help="Keep documents scoring at least this [default: the best-F1 threshold on the labelled pages in data/eval]")] = None,
    language: Annotated[Optional[list[str]], typer.Option(
        help="Recall only pages in this language (ISO 639-1), repeatable; 'any' for every language [default: en]")] = None,
    domains: Annotated[bool, typer.Option(
        "--domains/--no-domains", help="Have the LLM label domains between the rounds")] = True,
    min_domain_docs: Annotated[int, typer.Option(
        help="Recalled documents a domain needs before the LLM labels it (paper: 1000 at crawl scale)")] = 1,
    max_llm_domains: Annotated[Optional[int], typer.Option(
        help="Label at most N domains per round with the LLM (most recalled docs first)")] = None,
    domain_overrides: Annotated[Optional[str], typer.Option(
        help="CSV/JSON file of domain,label (educational|other) that wins over the LLM")] = None,
    rounds: Annotated[int, typer.Option(help="Recall rounds (the paper: 2)")] = 2,
    retrain: Annotated[str, typer.Option(
        help="if_missing: train once, then pin the model | always: train on the documents there are now | never")] = "if_missing",
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    concurrency: ConcurrencyOption = None,
) -> None:
    """Score every ingested page with fastText, label domains with an LLM, retrain, rescore."""
    from webinstruct.cli import prefect_ready

    from flows.settings import DomainSettings, RecallSettings  # no Prefect: bad settings fail fast

    languages = None if language and "any" in language else (language or ["en"])
    settings = RecallSettings(seeds=seeds, dim=dim, epoch=epoch, lr=lr, word_ngrams=word_ngrams,
                              neg_sample=neg_sample, threshold=threshold, languages=languages,
                              rounds=rounds, retrain=retrain)
    domain_settings = DomainSettings(enabled=domains, min_domain_docs=min_domain_docs,
                                     max_llm_domains=max_llm_domains, overrides=domain_overrides)
    root = prefect_ready()
    from flows.recall import recall_flow

    with llm_session(console, base_url, model, concurrency) as live:
        summary = recall_flow(data_dir=str(root), recall=settings, domains=domain_settings, llm=live)
    print_summary(summary)


def print_summary(summary: dict) -> None:
    for r in summary["rounds"]:
        console.print(
            f"[green]round {r['round']}[/] model {r['model_fingerprint']} ({'trained' if r['trained'] else 'reused'}; "
            f"{r['n_pos']} pos / {r['n_neg']} neg) at threshold {r['threshold']:.4f}: {labelled_line(r)}; "
            f"kept {r['docs_kept']}/{r['docs_scored']} pages; "
            f"{r['labelled']}/{r['domains']} domains labelled ({r['new_domains']} new this run, {r['failed']} failed), "
            f"educational: {', '.join(r['educational'][:8]) or '-'}{' ...' if len(r['educational']) > 8 else ''}")
        if r.get("alarm"):
            console.print(f"[yellow]warning:[/] round {r['round']}: {r['alarm']}")
        if r["round"] > 1 and r.get("notes", {}).get("domain_labels"):
            console.print(f"[yellow]note:[/] round {r['round']}: {r['notes']['domain_labels']}")
    console.print(f"final recalled set: recall_scores version {summary['final_scores_fingerprint']} (kept = true)")
    console.print("inspect: webinstruct sql \"SELECT round, domain, docs_recalled, label, reason FROM domains "
                  "WHERE label_source <> 'below_min_docs' ORDER BY round, docs_recalled DESC\"")


def labelled_line(r: dict) -> str:
    """The labelled-page metrics of a round (what recall is for), or why there are none."""
    if r.get("eval_roc_auc") is None:
        return "no labelled pages to measure on (data/eval missing)"
    def f(k: str, digits: int = 2) -> str:
        return "-" if r.get(k) is None else f"{r[k]:.{digits}f}"

    return (f"on {r['eval_pages']} labelled pages ROC-AUC {f('eval_roc_auc', 3)} PR-AUC {f('eval_pr_auc', 3)} "
            f"P {f('eval_precision')} R {f('eval_recall')} F1 {f('eval_f1')} (cross-validated {f('eval_f1_cv')})")
