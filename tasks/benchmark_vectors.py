"""Sentence vectors of benchmark items, cached by text, and the nearest-item search over them.

Embedding a benchmark takes minutes on 2 cores (~45 items/s), so vectors are looked up by a hash
of (model, text) in two places before anything is encoded:
  * the file shipped with the bundled benchmarks (data/benchmarks/embeddings/<model>.npz, built by
    data/benchmarks/build_embeddings.py; int8 with a per-row scale: cosines move by < 0.002);
  * the machine's state folder (<state>/embeddings/<model>/*.npz), where items of a user's own
    benchmark files land the first time they are used.
Search is exact (one matrix product) up to `ann_min_items` items; above that an HNSW index (usearch)
answers, built once per process and settings.
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from tasks.sentence_encoder import MODEL_NAME, SentenceEncoder

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "data" / "benchmarks" / "embeddings"


def text_keys(texts: list[str], model: str = MODEL_NAME) -> list[str]:
    return [hashlib.sha1(f"{model}\0{t}".encode()).hexdigest()[:20] for t in texts]


def quantize(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = np.maximum(np.abs(vectors).max(1), 1e-12) / 127.0
    return np.round(vectors / scale[:, None]).astype(np.int8), scale.astype(np.float32)


def dequantize(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    v = q.astype(np.float32) * scale[:, None]
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def save_npz(path: Path, keys: list[str], vectors: np.ndarray) -> None:
    q, scale = quantize(vectors)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, keys=np.array(keys), q=q, scale=scale)
    os.replace(tmp, path)  # a reader sees the whole file or none


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        vecs = dequantize(z["q"], z["scale"])
        return dict(zip(z["keys"].tolist(), vecs))


def cached_vectors(texts: list[str], encoder: SentenceEncoder, cache_dir: Path | None) -> np.ndarray:
    """Vectors for `texts`: from the shipped file and the cache, the rest encoded (and cached)."""
    keys = text_keys(texts, encoder.name)
    known: dict[str, np.ndarray] = {}
    folders = [SHIPPED_DIR] + ([cache_dir] if cache_dir else [])
    for folder in folders:
        for f in sorted(folder.glob(f"{encoder.name}*.npz")) if folder.exists() else []:
            known.update(_load_npz(f))
    missing = sorted({k: t for k, t in zip(keys, texts) if k not in known}.items())
    if missing:
        vecs = encoder.encode([t for _, t in missing])
        known.update(zip([k for k, _ in missing], vecs))
        if cache_dir:
            digest = hashlib.sha1("".join(k for k, _ in missing).encode()).hexdigest()[:16]
            save_npz(cache_dir / f"{encoder.name}-{digest}.npz", [k for k, _ in missing], vecs)
    out = np.zeros((len(texts), encoder.dim), np.float32)
    for i, k in enumerate(keys):
        out[i] = known[k]
    return out


@dataclass
class BenchmarkVectors:
    """Items (benchmark, item_id, text) with one unit vector each, and their nearest-item search."""
    items: pl.DataFrame
    vectors: np.ndarray  # (items, dim) float32, L2-normalised
    ann_min_items: int = 200_000

    def __post_init__(self):
        self._ann = None
        self._lock = threading.Lock()

    @property
    def uses_ann(self) -> bool:
        return len(self.items) >= self.ann_min_items

    def nearest(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(similarity, item row) of each query's nearest item; row -1 when there are no items."""
        if len(queries) == 0 or len(self.items) == 0:
            return np.full(len(queries), -1.0, np.float32), np.full(len(queries), -1, np.int64)
        if not self.uses_ann:
            best = np.zeros(len(queries), np.float32)
            arg = np.zeros(len(queries), np.int64)
            for s in range(0, len(queries), 512):  # bounded memory: 512 x items similarities at a time
                sims = queries[s:s + 512] @ self.vectors.T
                arg[s:s + 512] = sims.argmax(1)
                best[s:s + 512] = sims[np.arange(len(sims)), arg[s:s + 512]]
            return best, arg
        index = self._index()
        found = index.search(queries, 1)
        keys = np.asarray(found.keys, np.int64).reshape(len(queries), -1)[:, 0]
        sims = (queries * self.vectors[keys]).sum(1)  # exact cosine of the item found
        return sims.astype(np.float32), keys

    def _index(self):
        with self._lock:
            if self._ann is None:
                from usearch.index import Index

                index = Index(ndim=self.vectors.shape[1], metric="cos", dtype="f32", connectivity=32,
                              expansion_add=128, expansion_search=128)
                index.add(np.arange(len(self.vectors)), self.vectors, threads=os.cpu_count() or 1)
                self._ann = index
            return self._ann
