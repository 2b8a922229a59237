"""Stage `recall_score`: every ingested document's score under one recall model.

One call per `documents` shard; the output shard has the input shard's id, so a finished
shard is skipped on a rerun and new ingested shards are the only work. Texts stream through
in row slices (memory stays flat with shard size): a helper thread reads and normalizes each
slice with the same polars expression training used, while this thread scores the previous
slices with vectorised fastText calls. Every score is kept (not only the recalled documents),
so thresholds can be compared in SQL. Pages outside the model's languages (and empty ones) are
not predicted: they score 0 and are never kept.

Why it is shaped this way (bench/recall.py, 2 cores): fastText holds the GIL for a whole
predict call, and reading + normalizing costs ~1/3 of predicting. The helper therefore needs
the GIL only once per slice (one polars `collect` does Parquet read and normalization without
it), the predict calls are short so that moment comes soon, and the first slice is small so
scoring starts after ~10 ms instead of after a whole batch.
"""
from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from tasks.recall_train import load_model, model_file, predict_pos, scope_expr
from tasks.text_norm import normalize_expr
from warehouse import Warehouse, fingerprint

STAGE = "recall_score"
CODE_VERSION = "1"
FIRST_ROWS = 64  # the first slice: the only wait nothing overlaps with
SLICE_ROWS = 512  # slices double from FIRST_ROWS up to this: bounds memory (x QUEUE_SLICES + 1)
QUEUE_SLICES = 2  # normalized slices the helper may run ahead by
PREDICT_ROWS = 128  # rows per fastText call (~40 ms): the helper waits at most one call for the GIL


@dataclass(frozen=True)
class ScoringModel:
    """What a scoring task needs to know about a `recall_models` row (small, so Prefect can pass it)."""
    fingerprint: str
    round: int
    model_path: str
    threshold: float
    max_chars: int
    languages: tuple[str, ...] | None = None

    @classmethod
    def from_row(cls, row: dict) -> "ScoringModel":
        params = json.loads(row["params"])
        langs = params.get("languages")
        return cls(fingerprint=row["fingerprint"], round=int(row["round"]), model_path=row["model_path"],
                   threshold=float(row["threshold"]), max_chars=int(params["max_chars"]),
                   languages=tuple(langs) if langs else None)


def scores_fingerprint(model_fp: str, doc_fps: list[str]) -> str:
    return fingerprint(STAGE, params={}, code_version=CODE_VERSION, upstream=[model_fp, *doc_fps])


def _slices(n: int):
    """(offset, length) of each slice of n rows: small first, then doubling up to SLICE_ROWS."""
    off, size = 0, FIRST_ROWS
    while off < n:
        yield off, min(size, n - off)
        off, size = off + size, min(2 * size, SLICE_ROWS)


def _produce(path: Path, n: int, m: ScoringModel, out: queue.Queue, stop: threading.Event) -> None:
    """Helper thread: put each normalized slice (doc_id, text, scope) on `out`, then None (or the error).

    One `collect` per slice reads just those rows and normalizes them in polars' threads with
    the GIL released, so this thread needs the GIL once per slice, not per step."""
    try:
        lf = pl.scan_parquet(str(path)).select("doc_id", normalize_expr("text", m.max_chars),
                                          scope_expr(m.languages).alias("scope"))
        for off, size in _slices(n):
            if stop.is_set():
                return
            out.put(lf.slice(off, size).collect())
        out.put(None)
    except BaseException as exc:  # handed to the scoring thread, which raises it
        out.put(exc)


def _scores(model, path: Path, n: int, m: ScoringModel) -> tuple[pl.Series, np.ndarray]:
    """(doc ids, P(positive), 0 out of scope) of a documents shard of n rows, in file order."""
    scores = np.zeros(n, dtype=np.float32)  # filled in place: no per-slice arrays to concatenate
    ids: list[pl.Series] = []
    slices: queue.Queue = queue.Queue(maxsize=QUEUE_SLICES)
    stop = threading.Event()
    helper = threading.Thread(target=_produce, args=(path, n, m, slices, stop), daemon=True,
                              name=f"recall-normalize-{path.stem}")
    helper.start()
    done = 0
    try:
        while (df := slices.get()) is not None:
            if isinstance(df, BaseException):
                raise df
            ids.append(df["doc_id"])
            scope = df["scope"].to_numpy()
            where = np.flatnonzero(scope) + done
            texts = df["text"].to_list() if scope.all() else df.filter("scope")["text"].to_list()
            # Short calls: fastText keeps the GIL for a whole call and the helper needs it between slices.
            for i in range(0, len(texts), PREDICT_ROWS):
                scores[where[i:i + PREDICT_ROWS]] = predict_pos(model, texts[i:i + PREDICT_ROWS])
            done += df.height
    finally:
        stop.set()  # on an error here: let a helper blocked on a full queue finish
        while helper.is_alive():
            try:
                slices.get(timeout=0.05)
            except queue.Empty:
                pass
        helper.join()
    if done != n:
        raise RuntimeError(f"{path}: scored {done} rows of {n}")
    return (pl.concat(ids) if ids else pl.Series("doc_id", [], dtype=pl.String)), scores


def score_shard(wh: Warehouse, m: ScoringModel, doc_fp: str, shard: str, out_fp: str) -> dict:
    """Score one documents shard into `recall_scores` (skipped when already there)."""
    if wh.has_shard("recall_scores", out_fp, shard):
        n = wh.shard_rows("recall_scores", out_fp, shard)
        return {"shard": shard, "rows": n, "kept": None, "skipped": True}
    model = load_model(model_file(wh, m.model_path))
    path = wh.shard_path("documents", doc_fp, shard)
    with path.open("rb") as f:  # the footer only; local or in object storage
        meta = pq.ParquetFile(f)
        columns, n = meta.schema_arrow.names, meta.metadata.num_rows
    if m.languages and "language" not in columns:
        raise ValueError(f"documents shard {path} has no language column (ingested by an older version): "
                         "ingest again, or run recall with languages empty")
    ids, scores = _scores(model, path, n, m)
    out = pl.DataFrame({"doc_id": ids, "score": pl.Series("score", scores, dtype=pl.Float32)})
    out = out.with_columns(model_fingerprint=pl.lit(m.fingerprint), round=pl.lit(m.round),
                           kept=pl.col("score") >= m.threshold)
    wh.write_shard("recall_scores", out_fp, shard, out)
    return {"shard": shard, "rows": out.height, "kept": int(out["kept"].sum()), "skipped": False}
