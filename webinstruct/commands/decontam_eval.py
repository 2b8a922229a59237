"""`webinstruct eval-decontam`: decontamination measured on the calibration set (data/eval/decontam)."""
from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.console import Console

from tasks.semantic_decontam import THRESHOLD

console = Console(stderr=True, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command(name="eval-decontam")(eval_decontam)


def eval_decontam(
    per_kind: Annotated[Optional[int], typer.Option(
        help="Probes and controls per kind at most (an even spread) [default: all, ~20k texts, minutes]")] = None,
    threshold: Annotated[float, typer.Option(help="Cosine threshold to grade")] = THRESHOLD,
    max_fp: Annotated[float, typer.Option(help="Control flag rate the calibrated threshold may reach")] = 0.005,
    stop_ngrams: Annotated[bool, typer.Option("--stop-ngrams/--no-stop-ngrams", help="Grade with stop n-grams")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table and calibration as JSON")] = False,
    markdown: Annotated[Optional[str], typer.Option(help="Also write the results as Markdown to this file")] = None,
) -> None:
    """Recall on rephrased / perturbed / verbatim benchmark items and flag rate on real non-benchmark problems,
    for the n-gram rule and the embedding check, and the threshold the controls allow."""
    from tasks.decontam_eval import calibrate, score, summarize
    from tasks.decontaminate import DecontamParams
    from tasks.labelled_pages import load_labelled
    from webinstruct import ui
    from webinstruct.cli import warehouse

    wh = warehouse()
    params = DecontamParams(stop_corpus=None if stop_ngrams else ())
    with console.status("embedding the calibration set (about 45 texts/s per 2 cores)"):
        scored = score(params, per_kind=per_kind, pages=load_labelled()[0], cache_dir=wh.local / "embeddings")
    table = summarize(scored, threshold)
    cal = calibrate(scored, max_fp)
    if markdown:
        from pathlib import Path

        from tasks.decontam_eval import markdown_report
        Path(markdown).write_text(markdown_report(table, cal, threshold, per_kind), encoding="utf-8")
    if as_json:
        print(json.dumps({"threshold": threshold, "rows": table.to_dicts(), "calibration": cal}, indent=1))
        return
    out = Console(soft_wrap=True)
    ui.print_frame(out, table.with_columns(table["rate"].round(4)), title=f"decontamination at cosine >= {threshold}")
    out.print(f"calibrated threshold for <= {max_fp:.1%} flagged controls: {cal['threshold']} "
              f"(controls {cal['fp']:.2%}, rephrased caught {cal['rephrased_recall']:.1%}); chosen on one half of "
              "the controls and graded on the other: "
              + "; ".join(f"{f['threshold']} -> {f['held_out_fp']:.2%} flagged, {f['rephrased_recall']:.1%} caught"
                          for f in cal["folds"]))
