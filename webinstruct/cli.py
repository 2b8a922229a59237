"""`webinstruct` command line: run stages, inspect the warehouse with SQL, serve the LLM."""
from __future__ import annotations

import json
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import polars as pl
import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from webinstruct import ui
from webinstruct.options import UserError


class State:
    data_dir: str | None = None
    verbose: bool = False
    runner = None  # flows.runners.RunnerSettings, from --runner


state = State()
console = Console(stderr=True, soft_wrap=True)  # paths and ids are never cut into lines


# ---- errors: every command's end here ------------------------------------------------------------
class ReportingGroup(TyperGroup):
    """Any error of any command (those in webinstruct/commands/ too) becomes `error:` + `hint:`,
    one unwrapped line each so paths stay whole; -v adds the traceback. Usage errors get the same
    two lines, not typer's box (it wraps at the terminal width)."""

    def make_context(self, *args, **kwargs):
        with _reported(None):
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _reported(ctx):
            return super().invoke(ctx)


@contextmanager
def _reported(ctx) -> Iterator[None]:
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # noqa: BLE001 - the one place errors are reported
        if type(exc).__name__ == "NoArgsIsHelpError":  # `webinstruct` alone: typer prints the help
            raise
        command = ctx.command.get_command(ctx, ctx.invoked_subcommand) if ctx and ctx.invoked_subcommand else None
        what, hint, code = explain(exc, command)
        if state.verbose and not isinstance(exc, typer.TyperException):
            traceback.print_exception(exc, file=sys.stderr)
        console.print(Text.assemble(("error: ", "bold red"), what))
        if hint:
            console.print(Text.assemble(("hint: ", "bold"), hint))
        raise typer.Exit(code) from None


def _loaded(exc: BaseException, module: str, name: str) -> bool:
    """isinstance against a class of a module only if it is loaded (a raised one is): no import cost."""
    mod = sys.modules.get(module)
    return mod is not None and isinstance(exc, getattr(mod, name))


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def explain(exc: Exception, command=None) -> tuple[str, str, int]:
    """(what went wrong, what to do, exit code): 2 for the command line, 1 for the environment."""
    help_hint = f"see `webinstruct {command.name} --help`" if command is not None else "see `webinstruct --help`"
    if isinstance(exc, UserError):
        return exc.what, exc.hint, exc.code
    if isinstance(exc, typer.TyperException):  # click's usage errors: bad option, missing argument
        path = getattr(getattr(exc, "ctx", None), "command_path", None)
        return _one_line(exc.format_message()), f"see `{path} --help`" if path else help_hint, exc.exit_code
    if _loaded(exc, "tasks.llm_client", "ServerUnavailable"):
        what, _, todo = str(exc).partition(". Start one with ")
        if todo:
            return what, f"start one with {todo}", 1
        serving = command is not None and command.name == "serve"  # its own server failed to start
        return what, help_hint if serving else "start one with `webinstruct serve`, or pass --base-url URL --model NAME", 1
    if _loaded(exc, "pydantic", "ValidationError"):
        return _invalid_settings(exc, command), help_hint, 2
    if isinstance(exc, FileNotFoundError):
        return (f"{exc.strerror}: {exc.filename}" if exc.filename else _one_line(exc)), "check the path", 2
    if isinstance(exc, OSError):
        return (f"{exc.strerror}: {exc.filename}" if exc.filename else _one_line(exc)), \
            "check the path, its permissions and the free disk space", 1
    if isinstance(exc, ValueError):
        return _one_line(exc), help_hint, 2
    return f"{type(exc).__name__}: {_one_line(exc)}", "unexpected; run again with -v for the traceback", 1


def _invalid_settings(exc, command) -> str:
    """Pydantic's errors named by the option that set the field (--threshold, not dedup_threshold)."""
    params = [p for p in (command.params if command is not None else []) if p.opts and p.opts[0].startswith("--")]
    parts = []
    for err in exc.errors():
        field = next((str(x) for x in reversed(err["loc"]) if isinstance(x, str)), "")
        opt = next((max(p.opts, key=len) for p in params
                    if field in (p.name, f"{p.name}s") or field.endswith(f"_{p.name}")), field)
        got = f" (got {err['input']!r})" if field and not isinstance(err.get("input"), dict) else ""
        parts.append(f"{opt}: {err['msg']}{got}" if opt else err["msg"])
    return "; ".join(parts)


app = typer.Typer(cls=ReportingGroup, add_completion=False, no_args_is_help=True,
                  help="Harvest instruction data (question -> worked answer) from web crawls.")

DataDir = Annotated[Optional[str], typer.Option(
    "--data-dir", envvar="WEBINSTRUCT_DATA",
    help="Warehouse: a directory or an fsspec URL (s3://bucket/prefix) [default: ./webinstruct-data]")]
Runner = Annotated[str, typer.Option("--runner", envvar="WEBINSTRUCT_RUNNER",
                                     help="Where shard tasks run: local | dask | ray")]
RunnerAddress = Annotated[Optional[str], typer.Option(
    "--runner-address", envvar="WEBINSTRUCT_RUNNER_ADDRESS",
    help="Cluster address (tcp://host:8786, ray://host:10001); empty = a local cluster for the run")]
RunnerWorkers = Annotated[Optional[int], typer.Option(
    "--runner-workers", envvar="WEBINSTRUCT_RUNNER_WORKERS", help="Worker processes of a local cluster [default: cores]")]


@app.callback()
def main(data_dir: DataDir = None,
         verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs and tracebacks")] = False,
         runner: Runner = "local", runner_address: RunnerAddress = None, runner_workers: RunnerWorkers = None) -> None:
    from flows.runners import RunnerSettings

    state.data_dir = data_dir
    state.verbose = verbose
    if runner not in ("local", "dask", "ray"):
        raise UserError(f"--runner: unknown runner {runner!r}", "use --runner local, dask or ray")
    state.runner = RunnerSettings(kind=runner, address=runner_address, workers=runner_workers)


def warehouse():
    from warehouse import Warehouse

    return Warehouse(state.data_dir)


def prefect_ready(serving: bool = False) -> Path:
    """Configure Prefect for this data dir; flows are imported only after this."""
    from flows.runtime import configure_prefect

    from flows.runners import set_default

    root = configure_prefect(state.data_dir, quiet=not state.verbose)
    set_default(state.runner)
    if not (state.verbose or serving):
        _hide_run_failures()
    return root


def _hide_run_failures() -> None:
    """A failed flow re-raises its exception, which the error handler reports in two lines; Prefect's
    own report of it (ERROR with a traceback) stays off the terminal, still reaching a Prefect server.
    Long-running `deploy`/`ui` keep it: nothing else would show a served run's failure there."""
    import logging

    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()  # later setups (importing prefect) are incremental: they keep the filter

    def keep(record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.name in ("prefect.flow_runs", "prefect.task_runs"))

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.addFilter(keep)


@app.command()
def ingest(paths: Annotated[list[str], typer.Argument(
               help="WARC/WET files, folders, globs, fsspec URLs or Common Crawl warc.paths(.gz) listings")],
           shard_size: Annotated[int, typer.Option(help="Documents per shard")] = 2000,
           workers: Annotated[Optional[int], typer.Option(help="Processes (default: all cores for big inputs)")] = None) -> None:
    """Ingest crawl files into `documents` (files already ingested are skipped)."""
    from flows.settings import CrawlSource  # no Prefect import: mistakes are reported before it
    from webinstruct.options import check_inputs

    source = CrawlSource(paths=paths, shard_size=shard_size, workers=workers)
    check_inputs(paths)
    root = prefect_ready()
    from flows.ingest import ingest_flow

    with ui.progress_bars(console):
        summary = ingest_flow(source=source, data_dir=str(root))
    ui.print_ingest_summary(console, summary)


@app.command()
def sql(query: Annotated[str, typer.Argument(help="A read-only SQL query (SELECT, WITH, DESCRIBE, SHOW, EXPLAIN)")],
        format: Annotated[str, typer.Option("--format", "-f", help="table | csv | json")] = "table",
        max_rows: Annotated[int, typer.Option(help="Rows shown in table format")] = 50) -> None:
    """Query any table with DuckDB, read-only; safe while a run is going."""
    if format not in ("table", "csv", "json"):
        raise UserError(f"unknown format {format!r}", "use --format table, csv or json")
    df = _read_only_query(query)
    if format == "csv":
        # CSV has no nested values: lists and structs are written as JSON text
        nested = [c for c, t in df.schema.items() if t.is_nested()]
        df = df.with_columns(pl.Series(c, [json.dumps(v, default=str) for v in df[c].to_list()], pl.String)
                             for c in nested)
        sys.stdout.write(df.write_csv())
    elif format == "json":
        sys.stdout.write(json.dumps(df.to_dicts(), default=str, ensure_ascii=False, indent=1) + "\n")
    else:
        ui.print_frame(Console(soft_wrap=True), df, max_rows=max_rows)


def _read_only_query(sql_text: str) -> pl.DataFrame:
    """The query's result; a refused statement or DuckDB's error becomes a user error with what to do."""
    import duckdb

    from warehouse.catalog import ReadOnlyViolation, query as run_query

    tables = "`webinstruct tables` lists every table and view with its columns"
    try:
        return run_query(warehouse(), sql_text)
    except ReadOnlyViolation as exc:
        raise UserError(str(exc), "query with SELECT (or WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN); "
                                  "`webinstruct export` writes the dataset out") from exc
    except duckdb.PermissionException as exc:
        raise UserError(_one_line(exc), f"`webinstruct sql` reads only this warehouse's tables; {tables}") from exc
    except duckdb.ParserException as exc:
        raise UserError(str(exc).splitlines()[0], "check the SQL near the quoted word") from exc
    except duckdb.Error as exc:  # unknown table or column, bad types: DuckDB's first line says which
        lines = [ln for ln in str(exc).splitlines() if ln.strip()]
        more = [ln for ln in lines[1:] if ln.startswith("Did you mean")]
        raise UserError(" ".join(lines[:1] + more), tables) from exc


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
