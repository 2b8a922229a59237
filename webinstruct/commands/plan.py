"""`webinstruct plan`: GPU-hours, core-hours, wall time and pairs for a crawl, scaled from the
rates this warehouse measured (webinstruct/plan_rates.py) with a GPU profile (webinstruct/plan.py)."""
from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text


def register(app: typer.Typer) -> None:
    app.command()(plan)


def plan(
    gpu_profile: Annotated[str, typer.Option(
        help="TOML file of what one model replica serves (tokens/s), or a shipped one by name: "
             "h100-qwen72b.toml, cpu-qwen2.5-coder-1.5b.toml")],
    warc_files: Annotated[Optional[int], typer.Option(help="Crawl size in WARC files")] = None,
    documents: Annotated[Optional[int], typer.Option(help="Crawl size in documents (instead of --warc-files)")] = None,
    gpus: Annotated[Optional[int], typer.Option(help="GPUs for the LLM stages [default: one replica's]")] = None,
    cpu_cores: Annotated[int, typer.Option(help="CPU cores for ingest, recall and curate")] = 64,
    rate: Annotated[Optional[list[str]], typer.Option(
        help="Set a rate instead of measuring it, NAME=VALUE (repeatable), e.g. pairs_per_page=0.3")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON")] = False,
) -> None:
    """Estimate GPU-hours, wall time and pairs for a crawl from the rates measured in this warehouse."""
    from webinstruct.cli import warehouse
    from webinstruct.plan import estimate, load_profile, override
    from webinstruct.plan_rates import measure

    profile = load_profile(gpu_profile)
    rates = override(measure(warehouse()), rate or [])
    result = estimate(rates, profile, warc_files=warc_files, documents=documents,
                      gpus=profile.gpus_per_replica if gpus is None else gpus, cpu_cores=cpu_cores)
    if as_json:
        sys.stdout.write(json.dumps(result.as_dict(), indent=1) + "\n")
    else:
        print_plan(Console(soft_wrap=True), result)


def count(x: float) -> str:
    """Whole numbers to a million with separators, then three significant digits and a suffix."""
    if abs(x) < 1e6:
        return f"{x:,.0f}"
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:,.0f}"


def hours(h: float) -> str:
    return f"{h:,.1f}" if h >= 0.1 or h == 0 else f"{h:.3f}"


def duration(h: float) -> str:
    if h >= 48:
        return f"{h / 24:,.1f} d"
    if h >= 1:
        return f"{h:.1f} h"
    return f"{h * 60:.1f} min" if h * 60 >= 0.1 else f"{h * 3600:.1f} s"


def print_plan(console: Console, p) -> None:
    from webinstruct import ui
    from webinstruct.plan import RATES

    prof = p.profile
    device = "GPU" if prof.kind == "gpu" else "machine"
    size = (f"{count(p.warc_files)} WARC files = {count(p.documents)} documents" if p.warc_files is not None
            else f"{count(p.documents)} documents")
    table = Table(title=f"plan: {size}; {p.gpus} {device}s ({p.replicas} x {prof.model}), {p.cpu_cores} CPU cores")
    for col in ("stage", "items", "unit", "prompt tokens", "completion tokens", f"{device}-h", "core-h", "wall"):
        table.add_column(col, justify="left" if col in ("stage", "unit") else "right", no_wrap=True)
    for s in p.stages:
        llm = s.unit == "requests"
        table.add_row(s.stage, count(s.items), s.unit, count(s.prompt_tokens) if llm else "",
                      count(s.completion_tokens) if llm else "", hours(s.gpu_hours) if llm else "",
                      "" if llm else hours(s.core_hours), duration(s.wall_hours))
    table.add_section()
    table.add_row("total", "", "", count(sum(s.prompt_tokens for s in p.stages)),
                  count(sum(s.completion_tokens for s in p.stages)), hours(p.gpu_hours), hours(p.core_hours),
                  duration(p.wall_hours), style="bold")
    ui.print_table(console, table)
    console.print(Text.assemble(("expected pairs: ", "bold"), count(p.pairs), "  (",
                                " -> ".join(f"{k} {count(v)}" for k, v in p.funnel.items()), ")"))
    console.print(f"wall: stages one after another; LLM stages on {p.replicas} replica(s) of {prof.gpus_per_replica} "
                  f"{device}(s), CPU stages on {p.cpu_cores} cores", markup=False, highlight=False)

    rates = Table(title="measured rates used")
    for col in ("rate", "value", "observations", "measured on", "what it is"):
        rates.add_column(col, justify="right" if col in ("value", "observations") else "left", no_wrap=True)
    for r in p.rates:
        obs = "-" if r.source == "--rate" else f"{r.observations:,} {r.basis}"
        where = r.source + (f" ({r.model})" if r.model and r.source != "--rate" else "")
        value = f"{r.value:,.0f}" if r.value >= 1000 else f"{r.value:.4g}"
        rates.add_row(r.name, value, obs, where, RATES[r.name][0])
    ui.print_table(console, rates)
    console.print(f"profile {prof.name}: {prof.model} on {prof.device}; per replica at concurrency "
                  f"{prof.concurrency}: {prof.prefill_tokens_per_s:,.0f} prompt tok/s, "
                  f"{prof.generation_tokens_per_s:,.0f} generated tok/s; source: {prof.source}",
                  markup=False, highlight=False)
    for note in p.notes:
        console.print(Text.assemble(("note: ", "yellow"), note))
