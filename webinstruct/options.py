"""What every LLM-using command shares: its server options and the server session around a flow.

Kept light (typer only at import): command modules import it when the CLI starts.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Annotated, Iterator, Optional

import typer
from rich.console import Console

BaseUrlOption = Annotated[Optional[list[str]], typer.Option(
    "--base-url", envvar="WEBINSTRUCT_LLM_BASE_URL",
    help="OpenAI-compatible server(s), e.g. http://gpu1:8000/v1; repeat for replicas [default: the "
         "embedded server at http://127.0.0.1:8088/v1, started if down]")]
ModelOption = Annotated[Optional[str], typer.Option("--model", envvar="WEBINSTRUCT_LLM_MODEL",
                                                    help="Served model name [default: Qwen2.5-Coder-1.5B-Instruct, embedded]")]
ConcurrencyOption = Annotated[Optional[int], typer.Option("--concurrency", help="LLM requests in flight in total")]


@contextmanager
def llm_session(console: Console, base_url: list[str] | None, model: str | None, concurrency: int | None,
                **overrides) -> Iterator:
    """Settings for a server that answers (the embedded one started if needed), with progress bars;
    a missing server ends the command with what to start, not a traceback."""
    from tasks.llm_client import ServerUnavailable
    from webinstruct import ui
    from webinstruct.llm_server import ensure_server, settings_from_cli

    settings = settings_from_cli(base_url, model, concurrency, **overrides)
    try:
        with ensure_server(settings) as live, ui.progress_bars(console):
            yield live
    except ServerUnavailable as exc:
        console.print(f"[red]no LLM server:[/] {exc}")
        raise typer.Exit(1)
