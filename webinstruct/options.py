"""What commands share: the user-error type, the crawl-input check, the LLM server options and the
server session around a flow.

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
ConcurrencyOption = Annotated[Optional[int], typer.Option("--concurrency", help="LLM requests in flight per server (base URL)")]


class UserError(Exception):
    """A mistake the user can fix: the CLI prints `error: what` and `hint: hint` (no traceback) and
    exits with `code` (2: the command line, 1: the environment)."""

    def __init__(self, what: str, hint: str = "", code: int = 2):
        super().__init__(what)
        self.what, self.hint, self.code = what, hint, code


def check_inputs(paths: list[str]) -> None:
    """Every crawl input names at least one file: a typo or an empty folder is reported before any
    server or flow run starts."""
    from tasks.ingest import WARC_SUFFIXES, expand_inputs

    for p in paths:
        try:
            found = expand_inputs([p])
        except FileNotFoundError as exc:
            raise UserError(str(exc), "check the path; inputs are WARC/WET files, folders, globs, "
                                      "fsspec URLs or warc.paths listings") from exc
        if not found:
            raise UserError(f"no crawl files in {p}",
                            f"a folder is searched for names ending in {', '.join(WARC_SUFFIXES)}")


@contextmanager
def llm_session(console: Console, base_url: list[str] | None, model: str | None, concurrency: int | None,
                **overrides) -> Iterator:
    """Settings for a server that answers (the embedded one started if needed), with progress bars.
    A missing server raises ServerUnavailable: the CLI's error handler names it and what to start."""
    from webinstruct import ui
    from webinstruct.llm_server import ensure_server, settings_from_cli

    settings = settings_from_cli(base_url, model, concurrency, **overrides)
    with ensure_server(settings) as live, ui.progress_bars(console):
        yield live
