"""`webinstruct eval`: the warehouse's recall (and extraction) measured on labelled real pages."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

from webinstruct.options import BaseUrlOption, ConcurrencyOption, ModelOption, llm_session

console = Console(stderr=True, soft_wrap=True)

RECALL_COLUMNS = ["round", "version", "pages", "positives", "roc_auc", "pr_auc", "threshold", "kept", "precision",
                  "recall", "f1", "f1_cv", "best_f1_threshold"]


def register(app: typer.Typer) -> None:
    app.command(name="eval")(evaluate)


def evaluate(
    labels: Annotated[Optional[str], typer.Option(
        help="Labelled pages: TSV/CSV/JSONL with url, label (edu_qa|other) and optionally warc, kind "
             "[default: the shipped set in data/eval]")] = None,
    warc: Annotated[Optional[list[str]], typer.Option(
        help="WARC file(s) holding the labelled pages (repeatable) [default: the labels file's warc column, "
             "else the WARC files beside it]")] = None,
    version: Annotated[Optional[str], typer.Option(
        help="A recall_models fingerprint [default: the current models of both rounds]")] = None,
    extract: Annotated[bool, typer.Option(
        "--extract", help="Also run extraction (the settings it last ran with) on the positive pages")] = False,
    max_pages: Annotated[int, typer.Option(help="Positive pages sent to extraction at most")] = 12,
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    concurrency: ConcurrencyOption = None,
) -> None:
    """Score the labelled pages with the recall models and write `quality_evals` (ROC-AUC, PR-AUC, P/R/F1)."""
    import polars as pl

    from tasks.quality_eval import run_eval
    from warehouse.catalog import write_catalog
    from webinstruct import ui
    from webinstruct.cli import prefect_ready, warehouse

    wh = warehouse()
    if extract:
        prefect_ready()
        from flows.runtime import last_settings
        from flows.settings import ExtractSettings
        from tasks.llm_client import LLMSettings

        saved = last_settings(wh, "extract_llm", LLMSettings)  # the server extraction last used
        with llm_session(console, base_url or saved.base_urls, model or saved.model, concurrency) as live:
            rows = run_eval(wh, labels=labels, warcs=warc, version=version, max_pages=max_pages,
                            extract=(live, last_settings(wh, "extract", ExtractSettings)))
    else:
        rows = run_eval(wh, labels=labels, warcs=warc, version=version)
    write_catalog(wh)
    out = Console(soft_wrap=True)
    rec = rows.filter(pl.col("stage") == "recall").select(RECALL_COLUMNS).with_columns(
        pl.col(pl.Float64).round(3))
    ui.print_frame(out, rec, title=f"recall on labelled pages ({rows['eval_set'][0]})")
    ext = rows.filter(pl.col("stage") == "extract")
    if ext.height:
        ui.print_frame(out, ext.select("version", "pages", "pages_with_pairs", "pairs", "pairs_per_page",
                                       "failed_chunks", "details"), title="extraction on the positive pages")
    console.print("written to quality_evals; compare: webinstruct sql \"SELECT evaluated_at, stage, round, version, "
                  "roc_auc, pr_auc, f1, pages_with_pairs FROM quality_evals ORDER BY evaluated_at\"")
