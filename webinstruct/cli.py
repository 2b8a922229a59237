"""`webinstruct` command line: run stages, inspect the warehouse with SQL, serve the LLM."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import polars as pl
import typer
from rich.console import Console

from webinstruct import ui

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Harvest instruction data (question -> worked answer) from web crawls.")
console = Console(stderr=True, soft_wrap=True)  # paths and ids are never cut into lines

DataDir = Annotated[Optional[Path], typer.Option(
    "--data-dir", envvar="WEBINSTRUCT_DATA", help="Warehouse directory [default: ./webinstruct-data]")]


class State:
    data_dir: Path | None = None
    verbose: bool = False


state = State()


@app.callback()
def main(data_dir: DataDir = None,
         verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs")] = False) -> None:
    state.data_dir = data_dir
    state.verbose = verbose


def warehouse():
    from warehouse import Warehouse

    return Warehouse(state.data_dir)


def prefect_ready() -> Path:
    """Configure Prefect for this data dir; flows are imported only after this."""
    from flows.runtime import configure_prefect

    return configure_prefect(state.data_dir, quiet=not state.verbose)


@app.command()
def ingest(paths: Annotated[list[str], typer.Argument(
               help="WARC/WET files, folders, globs, fsspec URLs or Common Crawl warc.paths(.gz) listings")],
           shard_size: Annotated[int, typer.Option(help="Documents per shard")] = 2000,
           workers: Annotated[Optional[int], typer.Option(help="Processes (default: all cores for big inputs)")] = None) -> None:
    """Ingest crawl files into `documents` (files already ingested are skipped)."""
    root = prefect_ready()
    from flows.ingest import ingest_flow
    from flows.settings import CrawlSource

    from tasks.ingest import expand_inputs

    try:
        expand_inputs(paths)  # a missing input is reported before any flow run starts
        with ui.progress_bars(console):
            summary = ingest_flow(source=CrawlSource(paths=paths, shard_size=shard_size, workers=workers),
                                  data_dir=str(root))
    except (FileNotFoundError, ValueError) as exc:  # a user's mistake: one line, not a traceback
        console.print(f"[red]ingest failed:[/] {exc}")
        raise typer.Exit(2)
    ui.print_ingest_summary(console, summary)


@app.command()
def sql(query: Annotated[str, typer.Argument(help="A read-only SQL query (SELECT, WITH, DESCRIBE, SHOW, EXPLAIN)")],
        format: Annotated[str, typer.Option("--format", "-f", help="table | csv | json")] = "table",
        max_rows: Annotated[int, typer.Option(help="Rows shown in table format")] = 50) -> None:
    """Query any table with DuckDB, read-only; safe while a run is going."""
    from warehouse.catalog import ReadOnlyViolation, query as run_query

    try:
        df = run_query(warehouse(), query)
    except ReadOnlyViolation as exc:
        console.print(f"[red]refused:[/] {exc}")
        raise typer.Exit(2)
    except Exception as exc:  # noqa: BLE001 - DuckDB errors are user errors here
        console.print(f"[red]query failed:[/] {exc}")
        raise typer.Exit(1)
    if format == "csv":
        # CSV has no nested values: lists and structs are written as JSON text
        nested = [c for c, t in df.schema.items() if t.is_nested()]
        df = df.with_columns(pl.Series(c, [json.dumps(v, default=str) for v in df[c].to_list()], pl.String)
                             for c in nested)
        sys.stdout.write(df.write_csv())
    elif format == "json":
        sys.stdout.write(json.dumps(df.to_dicts(), default=str, ensure_ascii=False, indent=1) + "\n")
    elif format == "table":
        ui.print_frame(Console(soft_wrap=True), df, max_rows=max_rows)
    else:
        console.print(f"[red]unknown format {format!r}[/] (table, csv, json)")
        raise typer.Exit(2)


@app.command()
def status() -> None:
    """Per-table row counts and versions, crawl segments done and pending per stage, the latest stage runs."""
    ui.print_status(Console(soft_wrap=True), warehouse())


@app.command()
def versions(stage: Annotated[Optional[str], typer.Argument(help="Only this stage (e.g. refine)")] = None) -> None:
    """Every version each stage wrote, named by its settings (compare them with SQL on `versions`)."""
    from warehouse.catalog import query as run_query

    where = "" if stage is None else " WHERE stage = '" + stage.replace("'", "''") + "'"
    df = run_query(warehouse(), "SELECT stage, version, current, settings, runs, rows_written, last_run "
                                f"FROM versions{where} ORDER BY stage, last_run")
    ui.print_frame(Console(soft_wrap=True), df, max_rows=200, title="versions")


@app.command()
def tables() -> None:
    """Every table and view you can query, with its description."""
    ui.print_tables(Console())


def _register_optional_commands() -> None:
    """Stage groups add their commands in webinstruct/commands/<group>.py (`register(app)`)."""
    import importlib
    import pkgutil

    from webinstruct import commands

    for mod in sorted(m.name for m in pkgutil.iter_modules(commands.__path__)):
        importlib.import_module(f"webinstruct.commands.{mod}").register(app)


_register_optional_commands()
