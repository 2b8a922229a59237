"""`webinstruct mine`: extract Q-A pairs from recalled pages and refine them with LLMs."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

from webinstruct.options import BaseUrlOption, ConcurrencyOption, ModelOption, llm_session

console = Console(stderr=True, soft_wrap=True)  # ids and paths are never cut into lines


def register(app: typer.Typer) -> None:
    app.command()(mine)


def mine(
    base_url: BaseUrlOption = None,
    model: ModelOption = None,
    refine_model: Annotated[Optional[list[str]], typer.Option(
        help="Refiner model, repeatable: each gives its own qa_refined version (default: --model)")] = None,
    concurrency: ConcurrencyOption = None,
    max_tokens: Annotated[Optional[int], typer.Option(help="Reply token limit per request")] = None,
    max_docs: Annotated[Optional[int], typer.Option(
        help="Pages to extract this run, highest recall score first; the rest stay pending")] = None,
    prompt: Annotated[str, typer.Option(help="Extraction prompt: a name under prompts/ or a path")] = "extract",
    recall_fingerprint: Annotated[Optional[str], typer.Option(
        help="recall_scores version to read (default: the newest round; all documents if none)")] = None,
    chunk_chars: Annotated[int, typer.Option(help="Characters per page chunk sent to the LLM")] = 4000,
    max_chunks: Annotated[int, typer.Option(help="Chunks per page at most")] = 6,
    refine: Annotated[bool, typer.Option("--refine/--no-refine", help="Run the refine stage")] = True,
    retry_failed: Annotated[bool, typer.Option(
        "--retry-failed", help="Send again only the chunks (and refinements) whose last attempt failed (dead "
                               "server, broken reply); no new pages. The new attempt supersedes the failed row")] = False,
) -> None:
    """Extract question-answer pairs from recalled pages, then refine them (reruns are free)."""
    from webinstruct.cli import prefect_ready

    root = prefect_ready()
    from flows.extract import extract_flow
    from flows.refine import refine_flow
    from flows.settings import ExtractSettings

    settings = ExtractSettings(prompt=prompt, max_docs=max_docs, chunk_chars=chunk_chars, max_chunks=max_chunks,
                               recall_version=recall_fingerprint)
    last = None
    if retry_failed:  # the failed items belong to the versions last run, whatever the defaults here
        from flows.runtime import last_settings
        from tasks.llm_client import LLMSettings
        from warehouse import Warehouse

        wh = Warehouse(root)
        settings = last_settings(wh, "extract", ExtractSettings)
        last = (last_settings(wh, "extract_llm", LLMSettings), last_settings(wh, "refiners", LLMSettings, []))
        model = model or last[0].model
    with llm_session(console, base_url, model, concurrency, max_tokens=max_tokens) as live:
        if last:  # sampling settings are part of the version: keep the failed version's
            live = live.model_copy(update={"temperature": last[0].temperature, "max_tokens": last[0].max_tokens})
        summary = extract_flow(data_dir=str(root), llm=live, extract=settings, retry_failed=retry_failed)
        if refine:
            refiners = ([live.model_copy(update={"model": m}) for m in refine_model] if refine_model
                        else (last and last[1]) or [live])
            summary["refine"] = refine_flow(data_dir=str(root), refiners=refiners, retry_failed=retry_failed)["refine"]
    print_summary(summary)


def print_summary(summary: dict) -> None:
    if summary.get("warning"):
        console.print(f"[yellow]warning:[/] {summary['warning']}")
    x = summary
    if x.get("retry_failed"):
        n = x["retried_chunks"]
        console.print(f"[green]retry[/] extract version {x['fingerprint']}: "
                      + (f"{n} failed chunk(s) sent again" if n else "no failed chunk to send again"))
    console.print(
        f"[green]extract[/] version {x['fingerprint']} ({x['model']}): {x['docs']} "
        f"{'page(s) retried' if x.get('retry_failed') else 'new page(s)'}, "
        f"{x['pairs']} pair(s); {x['no_pairs']} chunk(s) without pairs, {x['rejected']} rejected, "
        f"{x['failed']} failed; {x['calls']} LLM call(s), {x['cached']} from cache; "
        f"{x['pending_after']} recalled page(s) still pending")
    for r in summary.get("refine", []):
        console.print(
            f"[green]refine[/]  version {r['fingerprint']} ({r['model']}, T={r['temperature']}): {r['ok']} refined, "
            f"{r['failed']} failed; {r['calls']} LLM call(s), {r['cached']} from cache")
    console.print("inspect: webinstruct sql \"SELECT status, count(*) FROM qa_extracted GROUP BY ALL\"")
