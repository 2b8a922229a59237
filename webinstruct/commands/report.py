"""`webinstruct report OUT.html`: a self-contained HTML page on the state of the warehouse."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    app.command()(report)


def report(out: Annotated[Path, typer.Argument(help="HTML file to write (replaced atomically)")]) -> None:
    """Write one offline HTML page: funnel, recall, domains, extraction, LLM cost, contamination, versions."""
    from webinstruct.cli import warehouse
    from webinstruct.report import write_report

    path = write_report(warehouse(), out)
    # soft_wrap: a long path stays on one line (copyable); markup off: '[' in a path is not a style
    Console(soft_wrap=True).print(str(path), markup=False, highlight=False)
