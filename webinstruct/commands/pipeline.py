"""`webinstruct run` (the whole DAG), `demo` (on the bundled sample), `schedule`, `ui`."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.panel import Panel

from webinstruct.options import BaseUrlOption, ModelOption, llm_session

SAMPLE_CRAWL = Path(__file__).resolve().parents[2] / "data" / "sample" / "crawl"

RefineModel = Annotated[Optional[list[str]], typer.Option(
    "--refine-model", help="Refiner model(s), one version each; default: the extraction model")]


def _run_pipeline(console: Console, paths: list[str], base_url, model, refine_model, limit_docs,
                  export_dir: Path, **options) -> dict:
    from webinstruct import cli

    root = cli.prefect_ready()
    from flows.pipeline import pipeline_flow

    with llm_session(console, base_url, model, None, **options.pop("llm", {})) as live:
        return pipeline_flow(paths=paths, data_dir=str(root), llm=live, refine_models=refine_model,
                             limit_docs=limit_docs, export_dir=str(export_dir), **options)


def _print_outcome(console: Console, export_dir: Path, seconds: float) -> None:
    from tasks.export import funnel
    from webinstruct import cli, ui

    wh = cli.warehouse()
    rows = funnel(wh)
    ui.print_frame(console, rows, title=f"funnel (finished in {seconds:.0f} s)")
    if dict(rows.iter_rows()).get("extracted") == 0:
        console.print("[yellow]No pair survived extraction.[/] A 135M model mostly invents questions, which the "
                      "grounding check rejects (see qa_extracted.status/error). For real pairs, serve a real "
                      "model: webinstruct serve --engine vllm --model ..., then --base-url.")
    data = os.path.relpath(wh.root)
    console.print(Panel.fit(
        "\n".join([
            f"[bold]dataset[/]     {os.path.relpath(export_dir)}/  (card: {os.path.relpath(export_dir)}/README.md)",
            '[bold]SQL[/]         webinstruct sql "select question, answer, url from dataset limit 5"',
            '              webinstruct sql "select fate, count(*) from doc_lineage group by 1"',
            '              webinstruct sql "select status, error, question from qa_extracted"',
            "              webinstruct tables      (every table; <name>_all holds every version)",
            f"[bold]DuckDB[/]      duckdb -readonly {data}/catalog.duckdb",
            "[bold]status[/]      webinstruct status",
            "[bold]Prefect UI[/]  webinstruct ui   -> http://127.0.0.1:4200 (every flow and task run)",
        ]),
        title="where to look next",
    ))


def register(app: typer.Typer) -> None:
    @app.command()
    def run(paths: Annotated[list[str], typer.Argument(help="WARC/WET files, folders, globs or fsspec URLs")],
            base_url: BaseUrlOption = None, model: ModelOption = None, refine_model: RefineModel = None,
            limit_docs: Annotated[Optional[int], typer.Option(help="Extract from at most N recalled docs")] = None,
            export_dir: Annotated[Optional[Path], typer.Option(help="Where to write the dataset")] = None) -> None:
        """Run the whole pipeline: ingest -> recall -> extract -> refine -> dedup -> decontaminate -> export."""
        from webinstruct import cli

        console = Console(stderr=True)
        export_dir = export_dir or cli.warehouse().root / "export"
        start = time.perf_counter()
        _run_pipeline(console, paths, base_url, model, refine_model, limit_docs, export_dir)
        _print_outcome(Console(), export_dir, time.perf_counter() - start)

    @app.command()
    def demo(limit_docs: Annotated[int, typer.Option(help="Recalled pages sent to the LLM")] = 6) -> None:
        """The whole pipeline on the bundled real sample, with the embedded LLM server."""
        from webinstruct import cli

        console = Console(stderr=True)
        export_dir = cli.warehouse().root / "export"
        console.print(f"[bold]webinstruct demo[/]: {SAMPLE_CRAWL} -> {cli.warehouse().root}\n"
                      "[dim]real Common Crawl excerpts + 205 real forum/Q&A pages; the embedded "
                      "SmolLM2-135M server stands in for a vLLM host (plumbing, not quality)[/]")
        start = time.perf_counter()
        # Sized for 2 CPU cores and a 135M model (~90 prompt / ~25 generated tokens/s): short
        # chunks, short replies, a few domains per round; a GPU host runs the defaults.
        _run_pipeline(console, [str(SAMPLE_CRAWL)], None, None, None, limit_docs, export_dir,
                      min_domain_docs=1, max_llm_domains=6, chunk_chars=1500, max_chunks=1,
                      llm={"max_tokens": 320, "max_concurrency": 2})
        _print_outcome(Console(), export_dir, time.perf_counter() - start)

    @app.command()
    def schedule(paths: Annotated[list[str], typer.Argument(help="Crawl folder(s)/URL(s) to watch")],
                 cron: Annotated[str, typer.Option(help="Cron schedule")] = "0 3 * * *",
                 name: Annotated[str, typer.Option(help="Deployment name")] = "webinstruct-scheduled",
                 base_url: BaseUrlOption = None, model: ModelOption = None) -> None:
        """Serve the pipeline as a scheduled Prefect deployment (needs a Prefect server: `webinstruct ui`)."""
        from webinstruct import cli

        root = cli.prefect_ready()
        from flows.pipeline import pipeline_flow
        from webinstruct.llm_server import settings_from_cli

        settings = settings_from_cli(base_url, model, None)
        pipeline_flow.serve(name=name, cron=cron, parameters={
            "paths": paths, "data_dir": str(root), "llm": settings.model_dump()})

    @app.command()
    def ui() -> None:
        """Start the Prefect server + UI on the warehouse's Prefect home (past runs included)."""
        from webinstruct import cli

        cli.prefect_ready()
        env = {**os.environ, "PREFECT_UI_ENABLED": "true"}
        raise typer.Exit(subprocess.call([str(Path(sys.executable).parent / "prefect"), "server", "start"], env=env))
