"""`webinstruct mine`: extract Q-A pairs from recalled pages and refine them with LLMs."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.command()(mine)


def mine(
    base_url: Annotated[Optional[list[str]], typer.Option(
        help="OpenAI-compatible server, repeatable (replicas) (default: the embedded SmolLM2, started when down)")] = None,
    model: Annotated[Optional[str], typer.Option(help="Extraction model name as the server knows it")] = None,
    refine_model: Annotated[Optional[list[str]], typer.Option(
        help="Refiner model, repeatable: each gives its own qa_refined version (default: --model)")] = None,
    concurrency: Annotated[Optional[int], typer.Option(help="Requests in flight per stage")] = None,
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
    from tasks.llm_client import ServerUnavailable
    from webinstruct import ui
    from webinstruct.llm_server import ensure_server, settings_from_cli

    settings = settings_from_cli(base_url, model, concurrency, max_tokens=max_tokens)
    refiners = [settings.model_copy(update={"model": m}) for m in refine_model] if refine_model else None
    try:
        with ensure_server(settings) as live, ui.progress_bars(console):
            summary = mine_flow(data_dir=str(root), recall_fingerprint=recall_fingerprint, limit_docs=limit_docs,
                                extract_llm=live, refine_llms=refiners, chunk_chars=chunk_chars,
                                max_chunks=max_chunks, refine=refine)
    except ServerUnavailable as exc:
        console.print(f"[red]no LLM server:[/] {exc}")
        raise typer.Exit(1)
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
