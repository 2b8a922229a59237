"""The report's "Top domains" section (webinstruct/report.py): the top domains of the newest
round, labels per round, and a warning box for each round whose labeller looks degenerate."""
from __future__ import annotations

from html import escape

import polars as pl

from tasks.domains import labeller_alarm
from webinstruct import svg
from webinstruct.report import BLUE, LABEL_COLORS, TOP_DOMAINS, Ctx, legend, nodata, table


def alarms(d: pl.DataFrame) -> dict[int, str]:
    """Round -> the labeller alarm over that round's latest labels (the check the flow makes)."""
    if not {"label_source", "reason"} <= set(d.columns):
        return {}
    out = {r: labeller_alarm(g) for (r,), g in d.sort("round").group_by("round", maintain_order=True)}
    return {r: a for r, a in out.items() if a}


def alarm_box(rnd: int, alarm: str) -> str:
    return (f'<div class="alarm" role="alert"><strong>Warning: the domain labels of round {rnd} look '
            f"degenerate.</strong> {escape(alarm)}</div>")


def section_domains(ctx: Ctx) -> str:
    d = ctx.wh.scan("domains").collect()
    if d.is_empty():
        return nodata()
    if "labelled_at" in d.columns:  # rows accumulate run by run: a domain's newest row is its label
        d = d.sort("labelled_at", nulls_last=False).unique(["round", "domain"], keep="last", maintain_order=True)
    rnd = d["round"].max()
    counts = d.group_by("round", "label").len().sort("round", "label")
    summary = "; ".join(
        f"round {r}: " + ", ".join(f"{n:,} {lab}" for lab, n in zip(g["label"], g["len"]))
        for (r,), g in counts.group_by("round", maintain_order=True))
    top = (d.filter(pl.col("round") == rnd)
           .sort(["docs_recalled", "mean_score", "domain"], descending=[True, True, False], nulls_last=True)
           .head(TOP_DOMAINS))
    bars = [svg.bar(r["domain"], r["docs_recalled"] or 0, LABEL_COLORS.get(r["label"], BLUE),
                    title=f"{r['domain']}: {r['docs_recalled']} recalled of {r['docs_seen']} seen, {r['label']}",
                    note=f"{r['docs_recalled'] or 0:,} / {r['docs_seen'] or 0:,} · {r['label']}")
            for r in top.iter_rows(named=True)]
    rows = [[r["domain"], r["docs_seen"], r["docs_recalled"], r["mean_score"], r["label"], r["label_source"],
             r["reason"] or ""] for r in top.iter_rows(named=True)]
    return ("".join(alarm_box(r, a) for r, a in alarms(d).items())
            + f'<p class="muted">Top {top.height} domains of round {rnd} by recalled documents '
              f"(recalled / seen). Labels per round: {escape(summary)}.</p>" + legend(LABEL_COLORS)
            + svg.hbars(bars, title=f"Top domains by recalled documents, round {rnd}", note_width=190)
            + table(["domain", "seen", "recalled", "mean score", "label", "source", "reason"], rows,
                    numeric={1, 2, 3}, classes={6: "reason"}))
