"""Labelled page sets: real pages with a hand label (educational Q&A or not), for measuring recall.

A set is a labels file plus the WARC files that hold its pages:
  - TSV/CSV (header row) or JSON lines, one row per page: `url`, `label`, optional `kind`, and
    optional `warc` (the WARC file holding that page, relative to the labels file);
  - labels: `edu_qa` / `positive` / `1` / `yes` / `true` are positives, `other` / `negative` /
    `0` / `no` / `false` negatives;
  - WARC files: each row's `warc`, else the files given with the set, else every WARC beside it.
The shipped set (`data/eval/`) is never used for training; see its README for the label rules.
Pages go through the same reader and HTML-to-text path as ingestion, so a labelled page scores
exactly as it would in the crawl.
"""
from __future__ import annotations

import csv
import io
import json
from functools import lru_cache
from pathlib import Path

import polars as pl

from tasks.ingest import IngestParams, page_row
from tasks.warc_reader import ReadStats, iter_pages, open_input
from warehouse import content_hash

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "data" / "eval"
SHIPPED_LABELS = SHIPPED_DIR / "labels.tsv"
_POS = {"edu_qa", "positive", "pos", "1", "yes", "y", "true", "educational"}
_NEG = {"other", "negative", "neg", "0", "no", "n", "false"}
SCHEMA = {"url": pl.String, "label": pl.Int8, "kind": pl.String, "domain": pl.String, "language": pl.String,
          "title": pl.String, "text": pl.String}


class LabelledSetError(ValueError):
    pass


def _label(value, where: str) -> int:
    v = str(value).strip().lower()
    if v in _POS:
        return 1
    if v in _NEG:
        return 0
    raise LabelledSetError(f"{where}: label {value!r} is neither edu_qa/positive/1 nor other/negative/0")


def _read_rows(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise LabelledSetError(f"{path}: not JSON lines ({exc})") from None
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab", ".txt") else ","
    return list(csv.DictReader(io.StringIO(text), delimiter=delimiter))


def read_labels(path: Path) -> pl.DataFrame:
    """The label rows of a labels file (url, label, kind, warc), checked."""
    if not path.exists():
        raise LabelledSetError(f"labelled set not found: {path}")
    rows = _read_rows(path)
    if not rows or "url" not in rows[0] or "label" not in rows[0]:
        raise LabelledSetError(f"{path}: needs the columns url and label (TSV/CSV with a header, or JSON lines)")
    out = [{"url": str(r["url"]).strip(), "label": _label(r["label"], f"{path}: {r['url']}"),
            "kind": (r.get("kind") or None), "warc": (r.get("warc") or None)} for r in rows]
    df = pl.DataFrame(out, schema={"url": pl.String, "label": pl.Int8, "kind": pl.String, "warc": pl.String})
    dup = df.filter(pl.col("url").is_duplicated())["url"].unique().to_list()
    if dup:
        raise LabelledSetError(f"{path}: {len(dup)} URL(s) labelled twice, e.g. {dup[0]}")
    return df


def _warc_files(path: Path, labels: pl.DataFrame, warcs: list[str] | None) -> list[Path]:
    named = [path.parent / w for w in labels["warc"].drop_nulls().unique().sort().to_list()]
    files = named + [Path(w).expanduser() for w in warcs or []]
    if not files:
        files = sorted(f for f in path.parent.iterdir() if ".warc" in f.name)
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise LabelledSetError(f"WARC file(s) of the labelled set not found: {', '.join(missing)}")
    if not files:
        raise LabelledSetError(f"{path}: no WARC file given and none beside it")
    return files


@lru_cache(maxsize=4)
def _load(labels_path: str, warcs: tuple[str, ...], stamp: tuple) -> tuple[pl.DataFrame, str]:
    path = Path(labels_path)
    labels = read_labels(path)
    files = _warc_files(path, labels, list(warcs))
    params, wanted, pages = IngestParams(), set(labels["url"].to_list()), {}
    for f in files:
        stats = ReadStats()
        with open_input(str(f)) as stream:
            for page in iter_pages(stream, stats, source_name=str(f)):
                if page.url in wanted and page.url not in pages:
                    row = page_row(page, params, None, str(f))
                    pages[page.url] = row or {"title": "", "text": "", "domain": None, "language": "unknown"}
    missing = [u for u in labels["url"].to_list() if u not in pages]
    if missing:
        raise LabelledSetError(f"{len(missing)} labelled URL(s) are in none of the WARC files "
                               f"({', '.join(str(f) for f in files)}), e.g. {missing[0]}")
    rows = [{"url": u, "label": y, "kind": k, **{c: pages[u].get(c) for c in ("domain", "language", "title", "text")}}
            for u, y, k in labels.select("url", "label", "kind").iter_rows()]
    df = pl.DataFrame(rows, schema=SCHEMA)
    digest = content_hash(path.read_bytes() + b"".join(f.read_bytes() for f in files), 12)
    return df, digest


def load_labelled(labels: str | Path | None = None, warcs: list[str] | None = None) -> tuple[pl.DataFrame, str]:
    """(pages, set id): one row per labelled page with its text; the id names the set and its content."""
    path = Path(labels).expanduser().resolve() if labels else SHIPPED_LABELS
    stamp = (path.stat().st_mtime_ns,) if path.exists() else ()
    df, digest = _load(str(path), tuple(warcs or ()), stamp)
    name = "shipped" if path == SHIPPED_LABELS else path.name
    return df, f"{name}:{digest}"


def shipped_available() -> bool:
    return SHIPPED_LABELS.exists()
