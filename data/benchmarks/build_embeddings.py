"""Precompute the sentence vectors of the bundled benchmarks (run by hand; output committed).

    .venv/bin/python data/benchmarks/build_embeddings.py

Writes data/benchmarks/embeddings/<model>.npz: every item of every bundled benchmark that the
semantic check uses (all but BBH), keyed by a hash of (model, text), int8 with a per-row scale.
Without this file the first semantic decontamination on a machine embeds ~10k items (minutes on
2 cores); with it, only a user's own benchmark files are embedded (and cached in the state folder).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tasks.benchmark_vectors import SHIPPED_DIR, save_npz, text_keys  # noqa: E402
from tasks.benchmarks import load_benchmarks, resolve_sources  # noqa: E402
from tasks.semantic_decontam import SemanticParams  # noqa: E402
from tasks.sentence_encoder import get_encoder  # noqa: E402


def main() -> None:
    items = load_benchmarks(resolve_sources(None))
    items = items.filter(~items["benchmark"].is_in(list(SemanticParams().exclude)))
    texts = list(dict.fromkeys(items["text"].to_list()))
    enc = get_encoder()
    t0 = time.perf_counter()
    vecs = enc.encode(texts)
    save_npz(SHIPPED_DIR / f"{enc.name}.npz", text_keys(texts, enc.name), vecs)
    print(f"{len(texts)} items in {time.perf_counter() - t0:.0f} s -> {SHIPPED_DIR / (enc.name + '.npz')}")


if __name__ == "__main__":
    main()
