"""`webinstruct run` (the whole DAG), `demo` (on the bundled sample), `deploy` (Prefect deployments), `ui`."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from tasks.llm_settings import DEFAULT_MODEL
from webinstruct.options import BaseUrlOption, ModelOption, UserError, check_inputs, llm_session

SAMPLE_CRAWL = Path(__file__).resolve().parents[2] / "data" / "sample" / "crawl"

RefineModel = Annotated[Optional[list[str]], typer.Option(
    "--refine-model", help="Refiner model(s), one version each; default: the extraction model")]


def _run_pipeline(console: Console, paths: list[str], base_url, model, refine_model, max_docs,
                  export_dir: Path, recall: dict | None = None, domains: dict | None = None,
                  extract: dict | None = None, llm: dict | None = None) -> dict:
    from flows.settings import CrawlSource, DomainSettings, ExportSettings, ExtractSettings, RecallSettings
    from webinstruct import cli

    # Inputs, settings and the server are checked before Prefect loads (it takes seconds).
    settings = dict(source=CrawlSource(paths=paths), recall=RecallSettings(**(recall or {})),
                    domains=DomainSettings(**(domains or {})),
                    extract=ExtractSettings(max_docs=max_docs, **(extract or {})),
                    export=ExportSettings(dir=str(export_dir)))
    check_inputs(paths)
    with llm_session(console, base_url, model, None, **(llm or {})) as live:
        root = cli.prefect_ready()
        from flows.pipeline import pipeline_flow

        refiners = [live.model_copy(update={"model": m}) for m in refine_model] if refine_model else None
        return pipeline_flow(data_dir=str(root), llm=live, refiners=refiners, **settings)


def _print_outcome(console: Console, export_dir: Path, seconds: float) -> None:
    from tasks.export import funnel
    from webinstruct import cli, ui

    wh = cli.warehouse()
    rows = funnel(wh)
    ui.print_frame(console, rows, title=f"funnel (finished in {seconds:.0f} s)")
    if dict(rows.iter_rows()).get("extracted") == 0:
        console.print("[yellow]No pair survived extraction.[/] See why in qa_extracted.status/error (pages not "
                      "sent, no pairs, pairs not found on the page). A small CPU model finds few pairs; for "
                      "more, serve a bigger model: webinstruct serve --engine vllm --model ..., then --base-url.")
    from warehouse.catalog import query

    failed = query(wh, "select (select count(*) from qa_extracted where status = 'failed') as x, "
                       "(select count(*) from qa_refined where status = 'failed') as r").row(0, named=True)
    if failed["x"] or failed["r"]:
        console.print(f"[yellow]{failed['x']} chunk(s) and {failed['r']} refinement(s) failed[/] (server errors or "
                      "broken replies; reasons in their `error`): webinstruct mine --retry-failed sends only those again")
    _print_recall_quality(console, wh)
    data = wh.local  # the warehouse folder; for one in object storage, its local state folder
    from webinstruct.report import write_report

    report = write_report(wh, data / "report.html")  # the run's state as one offline page
    console.print("[bold]where to look next[/]")
    for line in [
            f"[bold]dataset[/]     {export_dir}/  (card: README.md inside)",
            '[bold]SQL[/]         webinstruct sql "select question, answer, url from dataset limit 5"',
            '            webinstruct sql "select fate, count(*) from doc_lineage group by 1"',
            '            webinstruct sql "select status, error, question from qa_extracted"',
            "            webinstruct tables      (every table; <name>_all holds every version)",
            f"[bold]DuckDB[/]      duckdb -readonly {data}/catalog.duckdb",
            "[bold]quality[/]     webinstruct eval       (recall on labelled real pages -> quality_evals; --extract: yield)",
            "[bold]status[/]      webinstruct status     (segments done and pending per stage and version)",
            "[bold]versions[/]    webinstruct versions   (every version and the settings that made it)",
            f"[bold]report[/]      {report}  (funnel, scores, domains, LLM use, versions; rebuild: webinstruct report OUT.html)",
            "[bold]Prefect UI[/]  webinstruct ui   -> http://127.0.0.1:4200 (runs, artifacts, reruns from the form)",
    ]:
        console.print("  " + line)


def _print_recall_quality(console: Console, wh) -> None:
    """Each current recall round measured on the shipped labelled pages (recall_models' eval columns)."""
    import polars as pl

    models = wh.scan("recall_models").collect()
    if models.is_empty() or "eval_roc_auc" not in models.columns:
        return
    for r in models.sort("round").filter(pl.col("eval_roc_auc").is_not_null()).iter_rows(named=True):
        console.print(f"recall round {r['round']} on {r['eval_pages']} labelled real pages: ROC-AUC "
                      f"{r['eval_roc_auc']:.3f}, PR-AUC {r['eval_pr_auc']:.3f}, F1 {r['eval_f1']:.2f} at threshold "
                      f"{r['threshold']:.4f} ({r['threshold_source']})")


def register(app: typer.Typer) -> None:
    @app.command()
    def run(paths: Annotated[list[str], typer.Argument(help="WARC/WET files, folders, globs, fsspec URLs or warc.paths listings")],
            base_url: BaseUrlOption = None, model: ModelOption = None, refine_model: RefineModel = None,
            max_docs: Annotated[Optional[int], typer.Option(
                help="Pages to extract this run, highest recall score first; the rest stay pending")] = None,
            retrain: Annotated[str, typer.Option(help="Recall model: if_missing | always | never")] = "if_missing",
            export_dir: Annotated[Optional[Path], typer.Option(help="Where to write the dataset")] = None) -> None:
        """Carry new crawl files through every stage: ingest -> recall -> extract -> refine -> curate -> export."""
        from webinstruct import cli

        console = Console(stderr=True, soft_wrap=True)
        export_dir = export_dir or cli.warehouse().root / "export"
        start = time.perf_counter()
        _run_pipeline(console, paths, base_url, model, refine_model, max_docs, export_dir, recall={"retrain": retrain})
        _print_outcome(Console(soft_wrap=True), export_dir, time.perf_counter() - start)

    @app.command()
    def demo(max_docs: Annotated[int, typer.Option(help="Recalled pages sent to the LLM")] = 12) -> None:
        """The whole pipeline on the bundled real sample, with the embedded LLM server."""
        from webinstruct import cli

        console = Console(stderr=True, soft_wrap=True)
        export_dir = cli.warehouse().root / "export"
        console.print(f"[bold]webinstruct demo[/]: {SAMPLE_CRAWL} -> {cli.warehouse().root}\n"
                      f"[dim]real Common Crawl excerpts + 205 real forum/Q&A pages; the embedded "
                      f"{DEFAULT_MODEL} (llama.cpp on CPU) stands in for a vLLM host[/]")
        start = time.perf_counter()
        # Sized for 2 CPU cores and a 1.5B model (~35 prompt / ~10 generated tokens/s): one chunk
        # per page, chosen where its questions are, a few domains per round; a GPU host runs the defaults.
        _run_pipeline(console, [str(SAMPLE_CRAWL)], None, None, None, max_docs, export_dir,
                      domains={"min_domain_docs": 1, "max_llm_domains": 3},
                      extract={"chunk_chars": 1500, "max_chunks": 1},
                      llm={"max_tokens": 384, "max_concurrency": 2})
        _print_outcome(Console(soft_wrap=True), export_dir, time.perf_counter() - start)

    @app.command()
    def deploy(watch: Annotated[Optional[list[str]], typer.Argument(
                   help="Crawl folder(s), globs, fsspec URLs or warc.paths listings the pipeline deployment reads")] = None,
               cron: Annotated[Optional[str], typer.Option(help="Schedule of the pipeline deployment, e.g. '0 3 * * *'")] = None,
               listing_base: Annotated[Optional[str], typer.Option(
                   help="Where the relative paths of a warc.paths listing live [default: data.commoncrawl.org]")] = None,
               name: Annotated[Optional[str], typer.Option(help="Deployment name [default: the warehouse folder name]")] = None,
               base_url: BaseUrlOption = None, model: ModelOption = None) -> None:
        """Register a deployment per stage (ingest, recall, extract, refine, curate) and one for the
        pipeline on a Prefect server (PREFECT_API_URL, or `webinstruct ui`), and run what they are asked."""
        from webinstruct import cli

        _configure_serving()
        root = cli.prefect_ready(serving=True)
        _serve(root, watch, cron, listing_base, name, base_url, model)

    @app.command()
    def ui(port: Annotated[int, typer.Option(help="Port of the Prefect server")] = 4200,
           watch: Annotated[Optional[list[str]], typer.Argument(help="Crawl folder(s) for the pipeline deployment")] = None,
           cron: Annotated[Optional[str], typer.Option(help="Schedule of the pipeline deployment")] = None,
           base_url: BaseUrlOption = None, model: ModelOption = None) -> None:
        """Start a Prefect server + UI on 127.0.0.1 (this warehouse's runs) and serve its deployments."""
        from webinstruct import cli

        _configure_serving()
        root = cli.prefect_ready(serving=True)
        from webinstruct.prefect_server import PrefectServer

        console = Console(stderr=True, soft_wrap=True)
        with PrefectServer(port=port) as server:
            console.print(f"[bold]Prefect UI[/] {server.ui_url}   (Ctrl-C stops the server and the deployments)")
            os.environ["PREFECT_API_URL"] = server.api_url
            _serve(root, watch, cron, None, None, base_url, model)


def _configure_serving() -> None:
    """Served runs log to the server (their pages show logs) at INFO."""
    os.environ["PREFECT_LOGGING_TO_API_ENABLED"] = "true"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")


def _serve(root: Path, watch, cron, listing_base, name, base_url, model) -> None:
    from flows.deploy import build_deployments, serve_deployments
    from webinstruct.llm_server import ensure_server, settings_from_cli

    console = Console(stderr=True, soft_wrap=True)
    if not os.environ.get("PREFECT_API_URL"):
        raise UserError("no Prefect server to register the deployments with",
                        "set PREFECT_API_URL, or run `webinstruct ui` (it starts one)")
    settings = settings_from_cli(base_url, model, None)
    # The embedded LLM server lives as long as the deployments are served (when it is the default and down).
    with ensure_server(settings) as live:
        deployments = build_deployments(root, llm=live, watch=watch, cron=cron, listing_base=listing_base, name=name)
        for d in deployments:
            console.print(f"deployment [bold]{d.flow_name}/{d.name}[/]" + (f"  cron {cron}" if cron and d.flow_name == "webinstruct" else ""))
        serve_deployments(deployments)
