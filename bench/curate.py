"""Benchmark the curate stages on real questions (one run, printed).

dedup: our stage end to end (normalize, tokens, shingles, rensa MinHash, LSH band group-by,
verification, clusters, representatives; and through the warehouse: read shards, write outputs)
vs datasketch MinHash + MinHashLSH on the same texts and shingles (the peer), and the bare rensa
signature loop. decontamination: pairs/s (question and answer) against every shipped benchmark.

    .venv/bin/python bench/curate.py [--pairs 100000] [--peer 10000]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402

from tasks import decontaminate as decon  # noqa: E402
from tasks.dedup import DedupParams, dedup_batch, dedup_frame, sketch  # noqa: E402
from warehouse import Warehouse  # noqa: E402


def real_pairs() -> pl.DataFrame:
    seeds = ROOT / "data" / "seeds"
    gsm = pl.read_ndjson(seeds / "gsm8k_train.jsonl").select("question", "answer")
    aqua = pl.concat([pl.read_ndjson(seeds / f).select("question", pl.col("rationale").alias("answer"))
                      for f in ("aqua_rat_dev.json", "aqua_rat_test.json")])
    svamp = pl.DataFrame(json.loads((seeds / "svamp.json").read_text())).select(
        (pl.col("Body") + " " + pl.col("Question")).alias("question"),
        (pl.col("Equation") + " = " + pl.col("Answer").cast(pl.String)).alias("answer"))
    return pl.concat([gsm, aqua, svamp])


def grow(base: pl.DataFrame, n: int, seed: int = 0) -> pl.DataFrame:
    """n pairs: the real ones first; then 85% new questions spliced from the first half of one real
    question and the second half of another (distinct texts of realistic length and vocabulary),
    and 15% copies of a real question with one word changed (near duplicates)."""
    rng = random.Random(seed)
    qs, ans = base["question"].to_list(), base["answer"].to_list()
    out_q, out_a = [], []
    for i in range(n):
        j = i % len(qs)
        q, a = qs[j], ans[j]
        if i >= len(qs):
            w = q.split(" ")
            if rng.random() < 0.85:
                other = qs[rng.randrange(len(qs))].split(" ")
                w = w[: len(w) // 2] + other[len(other) // 2:]
            else:
                w[rng.randrange(len(w))] = rng.choice(["apple", "seven", "Tom", "blue"])
            q = " ".join(w)
        out_q.append(q)
        out_a.append(a)
    return pl.DataFrame({"refined_id": [f"r{i:08d}" for i in range(n)], "question": out_q, "answer": out_a})


CPU = {"last": 0.0}


def timed(fn, *args):
    """Wall seconds; CPU seconds of this process go to CPU["last"] (per-core rate on a busy host)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    CPU["last"] = time.process_time() - c
    return out, time.perf_counter() - t


def per_cpu(n: int) -> str:
    return f"[{n / max(CPU['last'], 1e-9):,.0f} /CPU-s]"


def bench_dedup(pairs: pl.DataFrame, peer_n: int) -> None:
    p = DedupParams()
    n = pairs.height
    (dup, _), dt = timed(dedup_frame, pairs, p, [])
    print(f"dedup (ours, in memory)       {n:>8} pairs  {dt:6.2f} s  {n / dt:>9,.0f} pairs/s  "
          f"{per_cpu(n)} dropped {int((~dup['kept']).sum())}")

    with tempfile.TemporaryDirectory() as d:
        wh = Warehouse(d)
        shards = []
        for i, part in enumerate(pairs.iter_slices(50_000)):
            part = part.with_columns(qa_id=pl.col("refined_id"), doc_id=pl.lit("d"), model=pl.lit("m"),
                                     prompt_fingerprint=pl.lit("p"), status=pl.lit("ok"), error=pl.lit(None, pl.String))
            wh.write_shard("qa_refined", "rfp", f"{i:03d}", part)
            shards.append(("rfp", f"{i:03d}"))
        half = len(shards) // 2 or 1
        _, dt = timed(lambda: (dedup_batch(wh, p, "out", shards[:half]),
                               dedup_batch(wh, p, "out", shards[half:])))  # 2nd segment vs 1st's index
        print(f"dedup (ours, warehouse, 2 segments)  {n:>8} pairs  {dt:6.2f} s  {n / dt:>9,.0f} pairs/s "
              f"{per_cpu(n)}")

    sub = pairs[:peer_n]
    texts = sub["question"]
    sk, dt_r = timed(sketch, texts, p)
    print(f"  of which sketch (normalize+tokens+shingles+rensa) on {peer_n}: {peer_n / dt_r:,.0f} texts/s "
          f"{per_cpu(peer_n)}")
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:
        print("datasketch not installed (pip install -e '.[bench]'): peer skipped")
        return
    from tasks.benchmarks import tokens

    toks = tokens(texts).to_list()  # same normalization, same word 3-gram shingles
    shingles = [{" ".join(t[i:i + 3]) for i in range(max(1, len(t) - 2))} for t in toks]

    def peer() -> int:
        lsh = MinHashLSH(threshold=p.threshold, num_perm=p.num_perm)
        dropped = 0
        for i, sh in enumerate(shingles):
            m = MinHash(num_perm=p.num_perm, seed=p.seed)
            m.update_batch([s.encode() for s in sh])
            if lsh.query(m):
                dropped += 1
            else:
                lsh.insert(str(i), m)
        return dropped

    dropped, dt_peer = timed(peer)
    cpu_peer = CPU["last"]
    print(f"dedup peer: datasketch MinHash+LSH {peer_n:>6} pairs  {dt_peer:6.2f} s  {peer_n / dt_peer:>9,.0f} pairs/s "
          f"{per_cpu(peer_n)} (dropped {dropped}; shingling not timed)")
    (dup_s, _), dt_ours = timed(dedup_frame, sub, p, [])
    print(f"dedup ours on the same {peer_n}:      {dt_ours:6.2f} s  {peer_n / dt_ours:>9,.0f} pairs/s "
          f"{per_cpu(peer_n)} (dropped {int((~dup_s['kept']).sum())})  "
          f"ours/datasketch: {dt_peer / dt_ours:.1f}x wall, {cpu_peer / CPU['last']:.1f}x CPU")


def bench_decon(pairs: pl.DataFrame) -> None:
    params = decon.DecontamParams()
    index, dt = timed(decon.get_index, params)
    print(f"decontamination index: {index.items} benchmark items, {index.ngrams.height} 10-grams, "
          f"{index.short.height} short items, built in {dt:.2f} s")
    found, dt = timed(decon.contaminated_pairs, index, pairs)
    chars = pairs["question"].str.len_chars().sum() + pairs["answer"].str.len_chars().sum()
    print(f"decontamination (question+answer, all benchmarks) {pairs.height:>8} pairs  {dt:6.2f} s  "
          f"{pairs.height / dt:>9,.0f} pairs/s {per_cpu(pairs.height)} ({chars / dt / 1e6:.1f} M chars/s; "
          f"flagged {found['id'].n_unique()})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=100_000)
    ap.add_argument("--peer", type=int, default=10_000)
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}, polars threads: {pl.thread_pool_size()}, load average "
          f"{os.getloadavg()[0]:.1f}; [n /CPU-s] = items per CPU-second of this process (per-core rate)")
    pairs = grow(real_pairs(), args.pairs)
    print(f"{pairs.height} pairs, mean question {pairs['question'].str.len_chars().mean():.0f} chars, "
          f"mean answer {pairs['answer'].str.len_chars().mean():.0f} chars")
    bench_dedup(pairs, args.peer)
    bench_decon(pairs)


if __name__ == "__main__":
    main()
