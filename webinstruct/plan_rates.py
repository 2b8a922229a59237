"""The rates `webinstruct plan` scales up, measured on a warehouse's current versions.

Counts come from the tables (crawl_files, recall_scores, qa_extracted, qa_refined, qa_duplicates,
dataset), tokens from `llm_calls` of the current LLM-stage versions, CPU seconds from `stage_runs`
(finished runs of the current versions that processed rows: wall seconds / rows, counted as
core-seconds because these stages run in one process) and from `crawl_files.seconds` for ingest.
A rate with nothing to measure it on is None; `webinstruct.plan` says what to run.
"""
from __future__ import annotations

import polars as pl

from warehouse import Warehouse
from webinstruct.plan import RATES, Rate


def measure(wh: Warehouse) -> dict[str, Rate]:
    runs = wh.manifest("stage_runs")
    rates: dict[str, Rate] = {}

    def put(name: str, num: float | None, den: float | None, obs: int, basis: str, source: str,
            model: str | None = None) -> None:
        value = num / den if num is not None and den else None
        rates[name] = Rate(name, value, obs if value is not None else 0, basis, source, model)

    def current(table: str) -> list[str]:
        return wh.current_fingerprints(table, runs)

    # ingest: crawl_files times each file in its worker (one core)
    files = wh.scan("crawl_files").select(n=pl.len(), docs=pl.col("docs_kept").sum(),
                                          s=pl.col("seconds").sum()).collect().row(0, named=True)
    put("docs_per_warc", files["docs"], files["n"], files["n"], "WARC files", "crawl_files")
    put("ingest_s_per_doc", files["s"], files["docs"], files["docs"] or 0, "documents", "crawl_files.seconds")

    # recall: every round scores every document; extraction reads the last round's kept pages
    rounds = (wh.scan("recall_scores").group_by("round").agg(n=pl.len(), kept=pl.col("kept").sum())
              .sort("round").collect())
    scored = int(rounds["n"].sum()) if rounds.height else 0
    put("recall_rounds", rounds.height, 1 if rounds.height else None, rounds.height, "rounds", "recall_scores")
    if rounds.height:
        last = rounds.row(-1, named=True)
        put("recall_keep", last["kept"], last["n"], last["n"], "documents", f"recall_scores round {last['round']}")
    else:
        put("recall_keep", None, None, 0, "documents", "recall_scores")
    trained = _stage_runs(runs, "recall_train", current("recall_models")).filter(pl.col("shards_done") > 0)
    put("recall_train_s", trained["seconds"].sum(), trained.height, trained.height, "trainings", "stage_runs")
    timed = _stage_runs(runs, "recall_score", current("recall_scores")).filter(pl.col("rows_in") > 0)
    put("recall_score_s_per_doc", timed["seconds"].sum(), timed["rows_in"].sum(), int(timed["rows_in"].sum()),
        "documents", "stage_runs")

    # domains: label requests per scored document (0 when recall ran with --no-domains)
    dom = _requests(wh, "domains", current("domains"))
    if scored and not dom["requests"] and not wh.versions("domains"):
        put("domain_calls_per_doc", 0.0, 1, scored, "document scores", "no domains labelled")
    else:
        put("domain_calls_per_doc", dom["requests"], scored, scored, "document scores", "llm_calls domains")
    _tokens(rates, "domains", dom)

    # extract: requests and ok pairs per page that went through extraction
    qa = wh.scan("qa_extracted").select(pages=pl.col("doc_id").n_unique(),
                                        pairs=(pl.col("status") == "ok").sum()).collect().row(0, named=True)
    ext = _requests(wh, "extract", current("qa_extracted"))
    put("extract_calls_per_page", ext["requests"], qa["pages"], qa["pages"], "pages", "llm_calls extract")
    _tokens(rates, "extract", ext)
    put("pairs_per_page", qa["pairs"], qa["pages"], qa["pages"], "pages", "qa_extracted")

    # refine: every refiner refines every ok pair; ok and unrefined rows may enter the dataset
    rf = wh.scan("qa_refined").select(
        pairs=pl.col("qa_id").n_unique(),
        usable=pl.col("status").is_in(["ok", "unrefined"]).sum()).collect().row(0, named=True)
    ref = _requests(wh, "refine", current("qa_refined"))
    put("refine_calls_per_pair", ref["requests"], rf["pairs"], rf["pairs"], "pairs", "llm_calls refine")
    _tokens(rates, "refine", ref)
    put("refined_per_pair", rf["usable"], rf["pairs"], rf["pairs"], "pairs", "qa_refined")

    # curate: three CPU stages per refined pair, and what each keeps
    seconds: list[float] = []
    obs: list[int] = []
    for stage, table in (("dedup", "qa_duplicates"), ("decontaminate", "qa_contamination"), ("export", "dataset")):
        timed = _stage_runs(runs, stage, current(table)).filter(pl.col("rows_in") > 0)
        obs.append(int(timed["rows_in"].sum()))
        seconds.append(timed["seconds"].sum() / obs[-1] if obs[-1] else float("nan"))
    complete = all(obs)  # a stage never timed leaves the sum unknown
    put("curate_s_per_pair", sum(seconds) if complete else None, 1, min(obs), "pairs",
        "stage_runs dedup+decontaminate+export")
    dd = wh.scan("qa_duplicates").select(n=pl.len(), kept=pl.col("kept").sum()).collect().row(0, named=True)
    put("dedup_keep", dd["kept"], dd["n"], dd["n"], "pairs", "qa_duplicates")
    n_dataset = wh.scan("dataset").select(pl.len()).collect().item()
    put("dataset_keep", n_dataset, dd["kept"], dd["kept"] or 0, "pairs", "dataset")
    return {n: rates[n] for n in RATES}


def _stage_runs(runs: pl.DataFrame, stage: str, fingerprints: list[str]) -> pl.DataFrame:
    """Finished runs of `stage` that wrote one of `fingerprints`, with their wall seconds."""
    return (runs.filter((pl.col("stage") == stage) & (pl.col("status") == "done")
                        & pl.col("fingerprint").is_in(fingerprints) & pl.col("finished_at").is_not_null())
            .with_columns(seconds=(pl.col("finished_at") - pl.col("started_at")).dt.total_microseconds() / 1e6))


def _requests(wh: Warehouse, stage: str, fingerprints: list[str]) -> dict:
    """Distinct requests of an LLM stage's versions, and its token usage per request.

    A request logged twice (a rerun's cached copy, a retried failure) counts once. Token averages
    use the calls really sent; cached rows repeat their original usage and stand in only when
    nothing was sent (a warehouse rebuilt from the response cache)."""
    known = set(wh.versions("llm_calls"))
    frames = [wh.scan("llm_calls", fp).filter(pl.col("stage") == stage) for fp in fingerprints if fp in known]
    if not frames:
        return {"requests": 0, "calls": 0}
    calls = pl.concat(frames).select("fingerprint", "item_id", "model", "cached", "prompt_tokens",
                                     "completion_tokens").collect()
    with_usage = calls.filter(pl.col("prompt_tokens").is_not_null() & pl.col("completion_tokens").is_not_null())
    sent = with_usage.filter(~pl.col("cached"))
    used = sent if sent.height else with_usage
    return {"requests": calls.select("fingerprint", "item_id").n_unique(), "calls": used.height,
            "prompt": used["prompt_tokens"].sum(), "completion": used["completion_tokens"].sum(),
            "cached_only": not sent.height, "model": ", ".join(sorted(set(used["model"].drop_nulls())))}


def _tokens(rates: dict[str, Rate], stage: str, usage: dict) -> None:
    n = usage["calls"]
    source = f"llm_calls {stage}" + (" (cached rows)" if usage.get("cached_only") else "")
    for kind in ("prompt", "completion"):
        value = usage[kind] / n if n else None
        rates[f"{stage}_{kind}_tokens"] = Rate(f"{stage}_{kind}_tokens", value, n if n else 0, "calls", source,
                                               usage.get("model") or None)
