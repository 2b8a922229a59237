"""`webinstruct report`: one self-contained HTML page showing the state of a warehouse.

No JavaScript, no external resource: inline CSS and inline SVG charts (webinstruct/svg.py), so
the file opens offline and can be mailed or archived. Each section reads the warehouse on its
own and says "no data yet" when its table is empty or missing; a section that fails shows its
error instead of taking the whole report down.
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any, Callable

import polars as pl

from webinstruct import svg
from warehouse import Warehouse, now_utc

BINS = 20
TOP_DOMAINS = 25
MAX_REASONS = 30
LABEL_COLORS = {"educational": "#2e7d32", "other": "#8d8d8d", "unlabelled": "#c9c9c9", "failed": "#c62828"}
STATUS_COLORS = {"ok": "#2e7d32", "no_pairs": "#9e9e9e", "rejected": "#ef8f00", "failed": "#c62828"}
BLUE, TEAL = "#4a78b5", "#80b1d3"
STATUS_TABLES = {"qa_extracted": "extract", "qa_refined": "refine"}  # versions with ok/failed counts
STAGE_ORDER = ["ingest", "recall_train", "recall_score", "domains", "extract", "refine", "dedup", "decontaminate",
               "export"]

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1180px;padding:0 20px 40px;color:#222}
header{border-bottom:2px solid #4a78b5;margin-bottom:8px} h1{margin:16px 0 4px}
h2{margin-top:30px;border-bottom:1px solid #ddd;padding-bottom:3px} h3{margin:14px 0 4px;font-size:14px}
nav a{margin-right:12px} .muted{color:#666} .nodata{color:#888;font-style:italic}
.error{color:#c62828} .charts{display:flex;flex-wrap:wrap;gap:24px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f5f8} td.n{text-align:right;font-variant-numeric:tabular-nums}
td.reason{max-width:520px} .current{color:#2e7d32;font-weight:600}
.legend span{display:inline-block;margin-right:14px} .legend i{display:inline-block;width:11px;height:11px;
margin-right:4px;vertical-align:-1px} code{font-size:12px} details summary{cursor:pointer;color:#4a78b5}
.alarm{border:1px solid #ef8f00;border-left:6px solid #ef8f00;background:#fff4e0;padding:8px 12px;margin:10px 0}
"""


class Raw(str):
    """Markup that is already escaped (a chart, a link); everything else is escaped by `table`."""


@dataclass
class Ctx:
    wh: Warehouse
    stage_runs: pl.DataFrame
    _current: dict[str, list[str]] = field(default_factory=dict)

    def current(self, table: str) -> list[str]:
        if table not in self._current:
            self._current[table] = self.wh.current_fingerprints(table, self.stage_runs)
        return self._current[table]


# ---- small HTML helpers ----------------------------------------------------------------------

def num(x: Any, digits: int = 2) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "—"


def when(ts: datetime | None) -> str:
    return "—" if ts is None else ts.strftime("%Y-%m-%d %H:%M:%S UTC")


def table(headers: list[str], rows: list[list[Any]], numeric: set[int] = frozenset(),
          classes: dict[int, str] | None = None) -> str:
    def cell(i: int, v: Any) -> str:
        cls = "n" if i in numeric else (classes or {}).get(i, "")
        text = v if isinstance(v, Raw) else escape(num(v) if not isinstance(v, str) else v)
        return f'<td class="{cls}">{text}</td>' if cls else f"<td>{text}</td>"

    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def legend(colors: dict[str, str]) -> str:
    return '<p class="legend">' + "".join(
        f'<span><i style="background:{c}"></i>{escape(k)}</span>' for k, c in colors.items()) + "</p>"


def nodata(what: str = "") -> str:
    return f'<p class="nodata">no data yet{escape(what)}</p>'


def short(fp: str | None) -> Raw:
    """A version id as code; fingerprints are short (16 hex), so shown whole: two versions never look alike."""
    return Raw("—") if not fp else Raw(f"<code>{escape(fp)}</code>")


# ---- sections --------------------------------------------------------------------------------

def section_funnel(ctx: Ctx) -> str:
    from tasks.export import funnel

    rows = funnel(ctx.wh).to_dicts()
    if not any(r["rows"] for r in rows):
        return nodata(" (nothing ingested)")
    first = rows[0]["rows"]
    bars = [svg.bar(r["stage"], r["rows"], BLUE, note=f"{r['rows']:,} ({pct(r['rows'], first)})") for r in rows]
    body = [[r["stage"], r["rows"], pct(r["rows"], first), pct(r["rows"], rows[i - 1]["rows"]) if i else "—"]
            for i, r in enumerate(rows)]
    return (svg.hbars(bars, title="Funnel: rows per stage", label_width=120)
            + table(["stage", "rows", "of documents", "of previous step"], body, numeric={1, 2, 3})
            + '<p class="muted">recalled = documents kept by the highest recall round; extracted and refined = '
              'pairs with status ok; deduped = refined pairs not dropped as duplicates; clean = dataset rows.</p>')


def section_recall(ctx: Ctx) -> str:
    wh = ctx.wh
    # Bins span the scores a model gave (on a small crawl they sit within hundredths of 0.5);
    # pages it did not score (other languages, empty) are counted apart, not piled up at 0.
    scored = pl.col("score") > 0
    span = pl.when(scored).then(pl.col("score"))
    lo, hi = span.min().over("model_fingerprint"), span.max().over("model_fingerprint")
    width = pl.when(hi > lo).then(hi - lo).otherwise(1.0)
    hist = (wh.scan("recall_scores").filter(pl.col("score").is_not_null())
            .with_columns(lo=lo.fill_null(0.0), hi=pl.when(hi > lo).then(hi).otherwise(lo + 1.0).fill_null(1.0),
                          bin=pl.when(scored).then(((pl.col("score") - lo) / width * BINS).floor().clip(0, BINS - 1))
                          .otherwise(-1).cast(pl.Int32))
            .group_by("round", "model_fingerprint", "bin").agg(n=pl.len(), kept=pl.col("kept").sum(),
                                                               lo=pl.col("lo").first(), hi=pl.col("hi").first())
            .collect())
    models = wh.scan("recall_models").collect().sort("round", "trained_at")
    if hist.is_empty() and models.is_empty():
        return nodata()
    out = []
    if hist.is_empty():
        out.append(nodata(" (no recall scores)"))
    charts = []
    for (rnd, mfp), g in hist.sort("round", "model_fingerprint").group_by(
            "round", "model_fingerprint", maintain_order=True):
        counts = [0] * BINS
        for b, n in zip(g["bin"], g["n"]):
            if b >= 0:
                counts[b] = n
        unscored = int(g.filter(pl.col("bin") < 0)["n"].sum())
        m = models.filter(pl.col("fingerprint") == mfp)
        m = m if m.height else models.filter(pl.col("round") == rnd)
        thr = m["threshold"][-1] if m.height else None
        total, kept = sum(counts) + unscored, int(g["kept"].sum())
        caption = f"round {rnd} · {total:,} documents · {kept:,} kept · {unscored:,} not scored (out of scope)"
        chart = svg.histogram(counts, title=f"Recall scores, round {rnd} (model {mfp})", unit="documents",
                              lo=float(g["lo"][0]), hi=float(g["hi"][0]), marker=thr,
                              marker_label=f"threshold {thr:.4f}" if thr is not None else "")
        charts.append(f"<figure>{chart}<figcaption>{escape(caption)} · model {short(mfp)}</figcaption></figure>")
    out.append('<div class="charts">' + "".join(charts) + "</div>")
    if models.is_empty():
        return "".join(out) + nodata(" (no recall models)")
    rows = [[r["round"], short(r["fingerprint"]), r["n_pos"], r["n_neg"], r.get("eval_roc_auc"), r.get("eval_pr_auc"),
             r.get("eval_f1"), r["f1"], f"{num(r['threshold'])} ({r['threshold_source'] or '?'})", when(r["trained_at"])]
            for r in models.iter_rows(named=True)]
    out.append("<h3>Recall models</h3>" + table(
        ["round", "model", "positives", "negatives", "labelled pages ROC-AUC", "PR-AUC", "F1", "seed hold-out F1",
         "threshold", "trained"], rows, numeric={2, 3, 4, 5, 6, 7})
        + '<p class="muted">Labelled pages: real pages labelled by hand (data/eval, never trained on), scored '
          'when the model was trained. The seed hold-out only says whether a seed differs from a page.</p>')
    return "".join(out)


def section_quality(ctx: Ctx) -> str:
    evals = ctx.wh.manifest("quality_evals")
    if evals.is_empty():
        return nodata(" (run `webinstruct eval`)")
    evals = evals.sort("evaluated_at", descending=True).head(20)
    rows = [[when(r["evaluated_at"]), r["eval_set"], r["stage"], r["round"] or "—", short(r["version"]), r["pages"],
             r["roc_auc"], r["pr_auc"], r["precision"], r["recall"], r["f1"], r["f1_cv"], r["pages_with_pairs"],
             r["pairs_per_page"]] for r in evals.iter_rows(named=True)]
    return table(["evaluated", "set", "stage", "round", "version", "pages", "ROC-AUC", "PR-AUC", "precision",
                  "recall", "F1", "F1 (cv)", "pages with pairs", "pairs/page"], rows,
                 numeric=set(range(5, 14))) + '<p class="muted">The newest 20 rows of <code>quality_evals</code>.</p>'


def section_domains(ctx: Ctx) -> str:
    from webinstruct.report_domains import section_domains as domains  # it imports this module's helpers

    return domains(ctx)


def short_reason(col: str = "error") -> pl.Expr:
    """The kind of an error: its text before the first ':' or '(', numbers and ids blanked, 60 chars."""
    return (pl.col(col).fill_null("").str.replace(r"(?s)[:(].*$", "").str.replace_all(r"\S*\d\S*", "#")
            .str.strip_chars().str.slice(0, 60))


def section_extraction(ctx: Ctx) -> str:
    g = (ctx.wh.scan("qa_extracted").with_columns(reason=short_reason())
         .group_by("status", "reason").agg(n=pl.len(), docs=pl.col("doc_id").n_unique()).collect())
    if g.is_empty():
        return nodata()
    order = {s: i for i, s in enumerate(STATUS_COLORS)}
    g = g.with_columns(o=pl.col("status").replace_strict(order, default=len(order))).sort(
        ["o", "n"], descending=[False, True]).head(MAX_REASONS)
    total = int(g["n"].sum())
    bars = [svg.bar(f"{r['status']}: {r['reason']}" if r["reason"] else r["status"], r["n"],
                    STATUS_COLORS.get(r["status"], BLUE), note=f"{r['n']:,} ({pct(r['n'], total)})")
            for r in g.iter_rows(named=True)]
    rows = [[r["status"], r["reason"] or "—", r["n"], r["docs"]] for r in g.iter_rows(named=True)]
    return ('<p class="muted">Rows of the current qa_extracted versions (one per pair, or per chunk that gave '
            "none), by status and the kind of error.</p>" + legend(STATUS_COLORS)
            + svg.hbars(bars, title="Extraction rows by status and reason", label_width=300, note_width=110)
            + table(["status", "reason", "rows", "documents"], rows, numeric={2, 3}))


def section_llm(ctx: Ctx) -> str:
    wh = ctx.wh
    # The call log of every version: it is a cost record, not data a newer run replaces.
    frames = [wh.scan("llm_calls", fp) for fp in wh.versions("llm_calls")]
    if not frames:
        return nodata()
    fresh = ~pl.col("cached").fill_null(False)
    per = (pl.concat(frames, how="diagonal_relaxed").group_by("stage", "model").agg(
        calls=pl.len(), cached=pl.col("cached").fill_null(False).sum(), not_ok=(pl.col("status") != "ok").sum(),
        prompt=pl.col("prompt_tokens").sum(), completion=pl.col("completion_tokens").sum(),
        p50=pl.col("latency_s").filter(fresh).quantile(0.5), p95=pl.col("latency_s").filter(fresh).quantile(0.95),
    ).sort("stage", "model").collect())
    if per.is_empty():
        return nodata()
    rows = [[r["stage"], r["model"] or "—", r["calls"], pct(r["cached"], r["calls"]), r["not_ok"], r["prompt"],
             r["completion"], num(r["p50"]), num(r["p95"])] for r in per.iter_rows(named=True)]
    by_model = per.group_by("model").agg(pl.col("prompt").sum(), pl.col("completion").sum()).sort("model")
    bars = [svg.Bar(m or "—", (svg.Segment(p or 0, BLUE, f"{m}: {p or 0:,} prompt tokens"),
                               svg.Segment(c or 0, TEAL, f"{m}: {c or 0:,} completion tokens")),
                    f"{(p or 0) + (c or 0):,}")
            for m, p, c in by_model.iter_rows()]
    return ('<p class="muted">Every logged call of every version; latency percentiles (seconds) count only calls '
            "that were not served from the cache.</p>"
            + table(["stage", "model", "calls", "cached", "not ok", "tokens in", "tokens out", "p50 latency",
                     "p95 latency"], rows, numeric={2, 3, 4, 5, 6, 7, 8})
            + "<h3>Tokens per model</h3>" + legend({"prompt (in)": BLUE, "completion (out)": TEAL})
            + svg.hbars(bars, title="LLM tokens per model (prompt + completion)"))


METHOD_COLORS = {"ngram": "#c62828", "embedding": "#6a1b9a", "llm_judge": "#ef8f00"}


def section_contamination(ctx: Ctx) -> str:
    c = ctx.wh.scan("qa_contamination").with_columns(
        pl.col("method").fill_null("ngram"), pl.col("flagged").fill_null(True))  # rows written before methods
    g = (c.filter(pl.col("flagged")).group_by("benchmark").agg(
        pairs=pl.col("id").filter(pl.col("level") == "pair").n_unique(),
        pages=pl.col("id").filter(pl.col("level") == "document").n_unique(),
        items=pl.col("benchmark_item").n_unique(),
        **{m: pl.col("id").filter((pl.col("method") == m) & (pl.col("level") == "pair")).n_unique()
           for m in METHOD_COLORS}).sort(["pairs", "benchmark"], descending=[True, False]).collect())
    near = c.filter(pl.col("method") == "embedding").select(
        checked=pl.len(), below=(~pl.col("flagged")).sum()).collect().row(0, named=True)
    if g.is_empty():
        return nodata(" (or nothing matched a benchmark)")
    bars = [svg.Bar(r["benchmark"], tuple(svg.Segment(r[m], color, f"{r['benchmark']}: {r[m]:,} pairs by {m}")
                                          for m, color in METHOD_COLORS.items())
                    + (svg.Segment(r["pages"], "#8d6e63", f"{r['benchmark']}: {r['pages']:,} pages"),),
                    f"{r['pairs']:,} pairs · {r['pages']:,} pages") for r in g.iter_rows(named=True)]
    rows = [[r["benchmark"], r["pairs"], r["ngram"], r["embedding"], r["llm_judge"], r["pages"], r["items"]]
            for r in g.iter_rows(named=True)]
    note = (f'<p class="muted">Pairs counted under each method that flagged them (the n-gram rule runs first; '
            f"the embedding check sees only what it left). {near['below'] or 0:,} pair field(s) were near a "
            f"benchmark item but under the threshold (or cleared by the judge).</p>") if near["checked"] else ""
    return (legend({"n-gram": METHOD_COLORS["ngram"], "embedding": METHOD_COLORS["embedding"],
                    "LLM judge": METHOD_COLORS["llm_judge"], "pages": "#8d6e63"})
            + svg.hbars(bars, title="Contamination per benchmark and method", label_width=140, note_width=170)
            + table(["benchmark", "pairs", "by n-gram", "by embedding", "by LLM judge", "pages", "benchmark items"],
                    rows, numeric={1, 2, 3, 4, 5, 6}) + note)


def _fmt_value(v: Any, n: int = 70) -> str:
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= n else s[: n - 1] + "…"


def _settings(params: dict, keys: list[str]) -> Raw:
    shown = "<br>".join(f"<code>{escape(k)}</code> = {escape(_fmt_value(params.get(k)))}" for k in keys)
    hidden = set(params) - set(keys) or any(_fmt_value(params.get(k)) != _fmt_value(params.get(k), 10**9)
                                            for k in keys)  # something not shown, or shown cut short
    full = escape(json.dumps(params, indent=1, sort_keys=True, default=str))
    return Raw((shown or '<span class="muted">no parameters</span>')
               + (f"<details><summary>all parameters</summary><pre>{full}</pre></details>" if hidden else ""))


def _params(text: str | None) -> dict:
    try:
        value = json.loads(text) if text else {}
    except ValueError:  # hand-written manifest rows: show the text rather than fail the section
        return {"params": text}
    return value if isinstance(value, dict) else {"params": value}


def _status_counts(wh: Warehouse, table_name: str, fp: str) -> str:
    c = wh.scan(table_name, fp).group_by("status").len().sort("status").collect()
    return " · ".join(f"{s} {n:,}" for s, n in c.iter_rows()) or "—"


def section_versions(ctx: Ctx) -> str:
    wh, sr = ctx.wh, ctx.stage_runs
    groups: dict[str, list[dict]] = {}
    if not sr.is_empty():
        agg = (sr.sort("started_at").group_by("stage", "fingerprint", maintain_order=True).agg(
            runs=pl.len(), rows_out=pl.col("rows_out").sum(), last_run=pl.col("finished_at").max(),
            started=pl.col("started_at").max(), status=pl.col("status").last(), params=pl.col("params").last(),
            output=pl.col("outputs").last().list.first()))
        for r in agg.iter_rows(named=True):
            groups.setdefault(r["stage"], []).append(r)
    for tbl, stage in STATUS_TABLES.items():  # versions written without a recorded stage run
        known = {r["fingerprint"] for r in groups.get(stage, [])}
        for fp in wh.versions(tbl):
            if fp not in known:
                groups.setdefault(stage, []).append(dict(
                    fingerprint=fp, runs=0, rows_out=None, last_run=None, started=None,
                    status="no stage run recorded", params=None, output=tbl))
    if not groups:
        return nodata()
    out = ['<p class="muted">One row per stage version (fingerprint). Settings that differ between versions of '
           "a stage come first; current = read by the table's view.</p>"]
    for stage in sorted(groups, key=lambda s: (STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER), s)):
        versions = groups[stage]
        params = [_params(v["params"]) for v in versions]
        keys = sorted(set().union(*params))
        differ = [k for k in keys if len({_fmt_value(p.get(k), 10_000) for p in params}) > 1]
        shown = differ if len(versions) > 1 else keys
        counted = any(v["output"] in STATUS_TABLES for v in versions)  # only those tables have a status column
        rows = []
        for v, p in zip(versions, params):
            tbl = v["output"]
            cur = tbl is not None and v["fingerprint"] in ctx.current(tbl)
            row = [short(v["fingerprint"]), Raw('<span class="current">current</span>') if cur else "",
                   _settings(p, shown), v["runs"], v["rows_out"], v["status"] or "—",
                   when(v["last_run"] or v["started"])]
            if counted:
                row.append(_status_counts(wh, tbl, v["fingerprint"]) if tbl in STATUS_TABLES else "—")
            rows.append(row)
        note = f" ({len(versions)} versions)" if len(versions) > 1 else ""
        headers = ["version", "current", "distinguishing settings", "runs", "rows out", "last status", "last run"]
        out.append(f"<h3>{escape(stage)}{escape(note)}</h3>"
                   + table(headers + ["rows by status"] * counted, rows, numeric={3, 4}))
    return "".join(out)


SECTIONS: list[tuple[str, str, Callable[[Ctx], str]]] = [
    ("funnel", "Funnel", section_funnel),
    ("recall", "Recall scores", section_recall),
    ("quality", "Quality on labelled pages", section_quality),
    ("domains", "Top domains", section_domains),
    ("extraction", "Extraction status", section_extraction),
    ("llm", "LLM tokens and latency", section_llm),
    ("contamination", "Contamination", section_contamination),
    ("versions", "Versions", section_versions),
]


def build_report(wh: Warehouse) -> str:
    ctx = Ctx(wh, wh.manifest("stage_runs"))
    parts = []
    for anchor, heading, fn in SECTIONS:
        try:
            body = fn(ctx)
        except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others
            body = (f'<p class="error">could not build this section: {escape(type(exc).__name__)}: '
                    f"{escape(str(exc))}</p>")
        parts.append(f'<section id="{anchor}"><h2>{escape(heading)}</h2>{body}</section>')
    nav = "".join(f'<a href="#{a}">{escape(h)}</a>' for a, h, _ in SECTIONS)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>webinstruct report: {escape(str(wh.root))}</title><style>{CSS}</style></head><body>"
            f"<header><h1>webinstruct report</h1><p>warehouse <code>{escape(str(wh.root))}</code> · generated "
            f"{escape(when(now_utc()))}</p><nav>{nav}</nav></header>" + "".join(parts) + "</body></html>\n")


def write_report(wh: Warehouse, out_path: str | os.PathLike) -> Path:
    """Build the report and publish it atomically (temp file beside it, then rename)."""
    out = Path(out_path).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    text = build_report(wh)
    tmp = out.parent / f".tmp-{uuid.uuid4().hex}-{out.name}"
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
