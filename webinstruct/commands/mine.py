"""`webinstruct mine`: extract Q-A pairs from recalled pages and refine them with LLMs."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

from webinstruct.options import BaseUrlOption, ConcurrencyOption, ModelOption, llm_session

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.command()(mine)


def mine(
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    refine_model: Annotated[Optional[list[str]], typer.Option(
        help="Refiner model, repeatable: each gives its own qa_refined version (default: --model)")] = None,
    concurrency: ConcurrencyOption = None,
    max_tokens: Annotated[Optional[int], typer.Option(help="Reply token limit per request")] = None,
    limit_docs: Annotated[Optional[int], typer.Option(help="Only the first N recalled documents")] = None,
    recall_fingerprint: Annotated[Optional[str], typer.Option(
        help="recall_scores version to read (default: the newest round; all documents if none)")] = None,
    chunk_chars: Annotated[int, typer.Option(help="Characters per page chunk sent to the LLM")] = 4000,
    max_chunks: Annotated[int, typer.Option(help="Chunks per page at most")] = 6,
    refine: Annotated[bool, typer.Option("--refine/--no-refine", help="Run the refine stage")] = True,
) -> None:
    """Extract question-answer pairs from recalled pages, then refine them (reruns are free)."""
    from webinstruct.cli import prefect_ready

    root = prefect_ready()
    from flows.mine import mine_flow

    with llm_session(console, base_url, model, concurrency, max_tokens=max_tokens) as live:
        refiners = [live.model_copy(update={"model": m}) for m in refine_model] if refine_model else None
        summary = mine_flow(data_dir=str(root), recall_fingerprint=recall_fingerprint, limit_docs=limit_docs,
                            extract_llm=live, refine_llms=refiners, chunk_chars=chunk_chars,
                            max_chunks=max_chunks, refine=refine)
    print_summary(summary)


def print_summary(summary: dict) -> None:
    if summary.get("warning"):
        console.print(f"[yellow]warning:[/] {summary['warning']}")
    x = summary["extract"]
    console.print(
        f"[green]extract[/] version {x['fingerprint']} ({x['model']}): {summary['docs']} page(s), "
        f"{x['pairs']} pair(s) from {x['docs_with_pairs']} page(s); {x['no_pairs']} chunk(s) without pairs, "
        f"{x['rejected']} rejected, {x['failed']} failed; {x['calls']} LLM call(s), {x['cached']} from cache, "
        f"{x['shards_skipped']}/{x['shards']} shard(s) already done")
    for r in summary["refine"]:
        console.print(
            f"[green]refine[/]  version {r['fingerprint']} ({r['model']}, T={r['temperature']}): {r['ok']} refined, "
            f"{r['failed']} failed; {r['calls']} LLM call(s), {r['cached']} from cache")
    console.print("inspect: webinstruct sql \"SELECT status, count(*) FROM qa_extracted GROUP BY ALL\"")
