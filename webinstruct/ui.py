"""Terminal output: progress bars fed by flows, tables, status."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import polars as pl
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.measure import Measurement
from rich.table import Table

from flows.runtime import set_progress
from warehouse import TABLES, Warehouse


@contextmanager
def progress_bars(console: Console) -> Iterator[None]:
    """Show one bar per label that flows report through `flows.runtime.progress`."""
    bars = Progress(TextColumn("[bold]{task.description:>12}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)
    ids: dict[str, int] = {}

    def hook(label: str, advance: int, total: int | None) -> None:
        if label not in ids:
            ids[label] = bars.add_task(label, total=total)
        elif total is not None:
            bars.update(ids[label], total=total)
        if advance:
            bars.advance(ids[label], advance)

    set_progress(hook)
    try:
        with bars:
            yield
    finally:
        set_progress(None)


# Columns holding ids or paths are never folded: a user copies them whole.
_WHOLE = ("id", "fingerprint", "version", "path", "url", "file", "run", "dir")


def print_table(console: Console, table: Table) -> None:
    """Print at the table's natural width (not the terminal's), so no cell is cut into lines."""
    natural = Measurement.get(console, console.options.update(max_width=10_000), table).maximum
    if natural <= console.width:
        console.print(table)
        return
    wide = Console(file=console.file, width=natural, color_system=console.color_system,
                   force_terminal=console.is_terminal, soft_wrap=True)
    wide.print(table)


def print_frame(console: Console, df: pl.DataFrame, max_rows: int = 50, title: str | None = None) -> None:
    table = Table(title=title, show_lines=False)
    for col in df.columns:
        whole = any(w in col.lower() for w in _WHOLE)
        table.add_column(col, overflow="fold", no_wrap=whole, max_width=None if whole else 60)
    for row in df.head(max_rows).iter_rows():
        table.add_row(*["" if v is None else str(v)[:500] for v in row])
    print_table(console, table)
    if df.height > max_rows:
        console.print(f"[dim]{df.height - max_rows} more rows (use --format csv or --max-rows)[/]")


def print_ingest_summary(console: Console, summary: dict) -> None:
    console.print(
        f"[green]ingest[/] version {summary['fingerprint']}: {summary['files_ingested']} file(s) ingested, "
        f"{summary['files_skipped']} already done, {summary['docs_kept']} documents kept"
    )
    for path, error in summary["errors"]:
        console.print(f"  [yellow]error[/] {path}: {error}")


def print_status(console: Console, wh: Warehouse) -> None:
    table = Table(title=f"warehouse {wh.root}")
    for col in ("table", "version", "current", "rows", "shards"):
        table.add_column(col, justify="right" if col in ("rows", "shards") else "left", no_wrap=True)
    stage_runs = wh.manifest("stage_runs")
    for name, spec in TABLES.items():
        if spec.manifest:
            table.add_row(name, "-", "", str(wh.manifest(name).height), "")
            continue
        current = set(wh.current_fingerprints(name, stage_runs))
        for fp in wh.versions(name) or ["-"]:
            rows = 0 if fp == "-" else wh.scan(name, fp).select(pl.len()).collect().item()
            shards = 0 if fp == "-" else len(wh.shard_ids(name, fp))
            table.add_row(name, fp, "yes" if fp in current else "", str(rows), str(shards))
    print_table(console, table)
    from webinstruct.segments import segment_status

    segments = segment_status(wh)
    if segments.height:
        print_frame(console, segments, title="crawl segments per stage (current versions)")
    if stage_runs.height:
        last = stage_runs.sort("started_at", descending=True).head(10).select(
            "stage", "fingerprint", "status", "shards_done", "shards_skipped", "rows_out", "started_at", "error")
        print_frame(console, last, title="latest stage runs")


def print_tables(console: Console) -> None:
    table = Table(title="tables (each also as <name>_all: every version, with a fingerprint column)")
    table.add_column("table")
    table.add_column("what it holds")
    table.add_column("columns", overflow="fold")
    for name, spec in TABLES.items():
        table.add_row(name, spec.doc, ", ".join(spec.schema))
    table.add_row("versions", "Every version each stage wrote, with the settings that made it and whether it is current.",
                  "stage, version, current, settings, upstream, code_version, tables, runs, shards_written, "
                  "rows_written, first_run, last_run")
    table.add_row("doc_lineage", "Every current document, how far it got and why it stopped (`fate`).",
                  "doc_id, url, recall_score, recalled, pairs_extracted, pairs_refined, pairs_duplicate, "
                  "pairs_contaminated, pairs_in_dataset, fate, ...")
    console.print(table)
