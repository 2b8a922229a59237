"""Stage `recall_score`: every ingested document's score under one recall model.

One call per `documents` shard; the output shard has the input shard's id, so a finished
shard is skipped on a rerun and new ingested shards are the only work. Texts stream through
in slices (memory stays flat with shard size), are normalized by the same polars expression
training used, one slice ahead in a helper thread, and are scored with vectorised fastText calls.
Every score is kept (not only the recalled documents), so thresholds can be compared in SQL.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from tasks.recall_train import load_model, model_file, predict_pos
from tasks.text_norm import normalize_expr
from warehouse import Warehouse, fingerprint

STAGE = "recall_score"
CODE_VERSION = "1"
READ_ROWS = 8192  # rows read from Parquet at a time
BATCH_ROWS = 512  # rows normalized at a time, by a helper thread one batch ahead of fastText
FIRST_ROWS = 64
PREDICT_ROWS = 256  # rows per fastText call: between calls the helper thread gets the GIL


@dataclass(frozen=True)
class ScoringModel:
    """What a scoring task needs to know about a `recall_models` row (small, so Prefect can pass it)."""
    fingerprint: str
    round: int
    model_path: str
    threshold: float
    max_chars: int

    @classmethod
    def from_row(cls, row: dict) -> "ScoringModel":
        return cls(fingerprint=row["fingerprint"], round=int(row["round"]), model_path=row["model_path"],
                   threshold=float(row["threshold"]), max_chars=int(json.loads(row["params"])["max_chars"]))


def scores_fingerprint(model_fp: str, doc_fps: list[str]) -> str:
    return fingerprint(STAGE, params={}, code_version=CODE_VERSION, upstream=[model_fp, *doc_fps])


def _normalized_batches(path, max_chars: int) -> Iterator[tuple[pl.Series, list[str]]]:
    """(doc ids, normalized texts) per slice of a documents shard.

    Lazy `collect`s read and normalize in polars' own threads without holding the GIL, so they
    overlap with fastText (which holds the GIL while it predicts). Record batches bound memory."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=READ_ROWS, columns=["doc_id", "text"]):
        lf = pl.from_arrow(batch).lazy().select("doc_id", normalize_expr("text", max_chars))
        start, size = 0, FIRST_ROWS  # a small first slice: the only one nothing overlaps with
        while start < batch.num_rows:
            df = lf.slice(start, size).collect()
            yield df["doc_id"], df["text"].to_list()
            start, size = start + size, BATCH_ROWS


def score_shard(wh: Warehouse, m: ScoringModel, doc_fp: str, shard: str, out_fp: str) -> dict:
    """Score one documents shard into `recall_scores` (skipped when already there)."""
    if wh.has_shard("recall_scores", out_fp, shard):
        n = pq.ParquetFile(wh.shard_path("recall_scores", out_fp, shard)).metadata.num_rows
        return {"shard": shard, "rows": n, "kept": None, "skipped": True}
    model = load_model(model_file(wh, m.model_path))
    batches = _normalized_batches(wh.shard_path("documents", doc_fp, shard), m.max_chars)
    parts = []
    # Normalize the next batch (polars, GIL released) while fastText predicts this one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(next, batches, None)
        while (item := pending.result()) is not None:
            pending = pool.submit(next, batches, None)
            ids, texts = item
            # fastText holds the GIL while it predicts: short calls let the prefetch thread start.
            scores = np.concatenate([predict_pos(model, texts[i:i + PREDICT_ROWS])
                                     for i in range(0, len(texts), PREDICT_ROWS)] or [np.zeros(0, np.float32)])
            parts.append(pl.DataFrame({"doc_id": ids, "score": scores}))
    out = (pl.concat(parts) if parts else pl.DataFrame(schema={"doc_id": pl.String, "score": pl.Float32}))
    out = out.with_columns(model_fingerprint=pl.lit(m.fingerprint), round=pl.lit(m.round),
                           kept=pl.col("score") >= m.threshold)
    wh.write_shard("recall_scores", out_fp, shard, out)
    return {"shard": shard, "rows": out.height, "kept": int(out["kept"].sum()), "skipped": False}
