"""Curate stages on the bench pairs corpus, against peers, in one run.

dedup: our stage in memory (normalize, tokens, shingles, rensa MinHash, LSH banding, verification,
clusters, representatives) on all `--pairs` pairs, `--repeats` times, median; the same on the
`--peer` pairs of a smaller corpus of the same recipe vs
  * datasketch MinHash + MinHashLSH (same normalized word 3-gram shingles, given to it for free),
  * datatrove 0.10.1's four MinHash steps run in this process (signature -> buckets -> cluster ->
    filter, files on a temp disk, as its executor chains them) with its default configuration (word
    5-grams, 112 hashes in 14 bands of 8: it removes every band match unverified, so it needs strict
    bands; our generous 32 bands of 2 would merge most of this corpus) and its default English
    tokenizer (spaCy's rule-based blank "en": nothing downloaded).
Rates are pairs per CPU-second of this process (its worker threads included): a per-core figure
that a busy shared machine disturbs less than wall time. Target: >= 50k pairs/s/core.

decontamination: our stage (DeepSeekMath rule, question and answer, all bundled benchmarks) vs
datatrove's `NGramsDecontFilter` over the same questions and answers with 10-grams of the same
benchmark texts. datatrove's indexer step needs lighteval (and its hub downloads) at run time, so
its index files are written here with datatrove's own text normalization, tokenizer, n-grams and
hash function, in its file format; the filter step is datatrove's, unchanged. Index building is
not timed on either side.

    .venv/bin/python bench/curate.py [--pairs 60000] [--peer 10000] [--repeats 3] [--results DIR]
"""
from __future__ import annotations

import argparse
import os
from collections import Counter
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import polars as pl  # noqa: E402

from common import Timer, add_results_arg, row, write_results  # noqa: E402
from corpus import pairs as corpus_pairs  # noqa: E402
from tasks import decontaminate as decon  # noqa: E402
from tasks.dedup import DedupParams, dedup_frame  # noqa: E402

TARGET = ">= 50k pairs/s/core"


def _quiet_datatrove() -> None:
    """datatrove logs every step and bucket (loguru sink added at import); its progress bars stay."""
    from datatrove.utils.logging import logger

    logger.remove()


def datasketch_dedup(texts: pl.Series, p: DedupParams) -> tuple[int, float]:
    """(dropped, CPU seconds) of datasketch MinHash+LSH, shingles precomputed (not timed)."""
    from datasketch import MinHash, MinHashLSH

    from tasks.benchmarks import tokens

    toks = tokens(texts).to_list()  # our normalization and word 3-gram shingles
    shingles = [[" ".join(t[i:i + 3]).encode() for i in range(max(1, len(t) - 2))] for t in toks]
    with Timer() as t:
        lsh = MinHashLSH(threshold=p.threshold, num_perm=p.num_perm)
        dropped = 0
        for i, sh in enumerate(shingles):
            m = MinHash(num_perm=p.num_perm, seed=p.seed)
            m.update_batch(sh)
            if lsh.query(m):
                dropped += 1
            else:
                lsh.insert(str(i), m)
    return dropped, t.cpu


def datatrove_dedup(texts: list[str], tmp: Path) -> tuple[int, float]:
    """(dropped, CPU seconds) of datatrove's MinHash steps, one task each, in this process."""
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)

    cfg = MinhashConfig()  # its defaults: word 5-grams, 14 bands of 8 hashes (no verification step)
    docs = lambda: (Document(text=t, id=str(i)) for i, t in enumerate(texts))  # noqa: E731
    sigs, buckets, remove = tmp / "sigs", tmp / "buckets", tmp / "remove"
    with Timer() as t:
        MinhashDedupSignature(output_folder=str(sigs), config=cfg).run(docs(), rank=0, world_size=1)
        for b in range(cfg.num_buckets):
            MinhashDedupBuckets(input_folder=str(sigs), output_folder=str(buckets), config=cfg).run(
                None, rank=b, world_size=cfg.num_buckets)
        MinhashDedupCluster(input_folder=str(buckets), output_folder=str(remove), config=cfg).run(None, 0, 1)
        kept = sum(1 for _ in MinhashDedupFilter(input_folder=str(remove)).run(docs(), rank=0, world_size=1))
    return len(texts) - kept, t.cpu


def bench_dedup(pairs: pl.DataFrame, sub: pl.DataFrame, repeats: int, tmp: Path) -> tuple[list[dict], list[str]]:
    p = DedupParams()
    n = pairs.height
    dedup_frame(pairs[:2000], p, [])  # warm up imports and caches
    cpu, wall = [], []
    for _ in range(repeats):
        with Timer() as t:
            dup, _ = dedup_frame(pairs, p, [])
        cpu.append(t.cpu)
        wall.append(t.wall)
    dropped = int((~dup["kept"]).sum())
    ours_full = n / statistics.median(cpu)
    print(f"dedup ours: {n} pairs, {ours_full:,.0f} pairs/CPU-s ({n / statistics.median(wall):,.0f} pairs/s wall), "
          f"dropped {dropped}  target {TARGET}")

    peer_n = sub.height
    ours_sub = []
    for _ in range(repeats):
        with Timer() as t:
            dup_s, _ = dedup_frame(sub, p, [])
        ours_sub.append(peer_n / t.cpu)
    ours_rate = statistics.median(ours_sub)
    ours_dropped = int((~dup_s["kept"]).sum())
    ds_dropped, ds_cpu = datasketch_dedup(sub["question"], p)
    _quiet_datatrove()
    dt_dropped, dt_cpu = datatrove_dedup(sub["question"].to_list(), tmp / "minhash")
    print(f"on {peer_n} pairs: ours {ours_rate:,.0f}/CPU-s (dropped {ours_dropped}), datasketch "
          f"{peer_n / ds_cpu:,.0f}/CPU-s (dropped {ds_dropped}), datatrove {peer_n / dt_cpu:,.0f}/CPU-s "
          f"(dropped {dt_dropped})")
    rows = [row(f"pairs deduplicated per CPU-second ({n:,} pairs)", ours_full, "target", 50_000,
                "pairs/CPU-s", TARGET),
            row(f"pairs deduplicated per CPU-second ({peer_n:,} pairs)", ours_rate,
                "datasketch 2.0.0 MinHash + MinHashLSH", peer_n / ds_cpu, "pairs/CPU-s"),
            row(f"pairs deduplicated per CPU-second ({peer_n:,} pairs)", ours_rate,
                "datatrove 0.10.1 MinHash signature/buckets/cluster/filter", peer_n / dt_cpu, "pairs/CPU-s")]
    notes = [f"dedup input: the bench pairs corpus (bench/corpus.py: {n:,} pairs from 8,981 real questions with "
             "splices, near and exact duplicates, numbers redrawn), deduplicated on the question; "
             f"ours {repeats} repeats, median",
             f"pairs dropped of the {peer_n:,} (a corpus of the same recipe): ours {ours_dropped} (candidates verified: estimated Jaccard >= "
             f"{p.threshold}), datasketch {ds_dropped} (LSH query only, threshold {p.threshold}), datatrove "
             f"{dt_dropped} (its defaults: 5-grams, 14 bands x 8 hashes; every band match removed, no verification; "
             "its normalization maps every digit to 0)",
             "datasketch is given our normalized shingles (its shingling is not timed); datatrove tokenizes with "
             "spaCy and writes its signature, bucket and cluster files to a temp folder, as it does at scale"]
    return rows, notes


def datatrove_decont_index(folder: Path, n: int) -> None:
    """datatrove's n-gram index files for the bundled benchmarks, built with its own primitives."""
    import numpy as np
    from datatrove.pipeline.decont.n_grams import NGramsDecontConfig
    from datatrove.utils.hashing import create_hash_func
    from datatrove.utils.text import ngrams, simplify_text
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    from tasks.benchmarks import load_benchmarks, resolve_sources

    cfg = NGramsDecontConfig(n_grams=n)
    tok, hash_func = load_word_tokenizer("eng"), create_hash_func(cfg.hash_config)
    folder.mkdir(parents=True, exist_ok=True)
    items = load_benchmarks(resolve_sources(None))
    for name, group in items.group_by("benchmark"):
        hashes = set()
        for text in group["text"]:
            words = tok.word_tokenize(simplify_text(text, cfg.norm_config))
            hashes.update(hash_func(" ".join(g)) for g in ngrams(words, n))
        np.array(sorted(hashes), dtype=cfg.hash_config.np_descr).tofile(folder / f"{name[0]}.index.hashes")


def bench_decon(pairs: pl.DataFrame, sub: pl.DataFrame, tmp: Path) -> tuple[list[dict], list[str]]:
    params = decon.DecontamParams()
    index = decon.get_index(params)
    with Timer() as t:
        found = decon.contaminated_pairs(index, pairs)
    ours_full = pairs.height / t.cpu
    print(f"decontamination ours: {pairs.height} pairs, {ours_full:,.0f} pairs/CPU-s, flagged {found['id'].n_unique()}")
    peer_n = sub.height
    with Timer() as t:
        found_s = decon.contaminated_pairs(index, sub)
    ours_rate = peer_n / t.cpu

    from datatrove.data import Document
    from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter

    _quiet_datatrove()
    datatrove_decont_index(tmp / "decont", params.n)
    step = NGramsDecontFilter(index_folder=str(tmp / "decont"), config=NGramsDecontConfig(n_grams=params.n))
    step.load_index_hashes()  # index loading not timed (ours is built before timing too)
    docs = [Document(text=r[f], id=r["refined_id"]) for r in sub.iter_rows(named=True) for f in ("question", "answer")]
    with Timer() as t:
        kept = Counter(d.id for d in step.run(iter(docs)))
    dt_rate = peer_n / t.cpu
    dt_flagged = peer_n - sum(1 for c in kept.values() if c == 2)  # clean: question and answer both kept
    print(f"on {peer_n} pairs: ours {ours_rate:,.0f}/CPU-s (flagged {found_s['id'].n_unique()}), datatrove "
          f"{dt_rate:,.0f}/CPU-s (flagged {dt_flagged})")
    rows = [row(f"pairs checked per CPU-second, question and answer ({peer_n:,} pairs)", ours_rate,
                "datatrove 0.10.1 NGramsDecontFilter (10-grams)", dt_rate, "pairs/CPU-s")]
    notes = [f"decontamination: {index.items:,} benchmark items (GSM8K, MATH, MMLU-STEM, TheoremQA, BBH test sets), "
             f"{index.ngrams.height:,} 10-grams; ours also matches items of 3-9 tokens whole and re-checks every hit "
             f"on the spelled-out n-gram; pairs flagged of the {peer_n:,}: ours {found_s['id'].n_unique()}, "
             f"datatrove {dt_flagged}",
             f"ours on all {pairs.height:,} pairs: {ours_full:,.0f} pairs/CPU-s, {found['id'].n_unique()} flagged",
             "datatrove: NGramsDecontFilter unchanged, over one document per question and per answer; its index "
             "files written with its simplify_text, spaCy tokenizer, n-grams and xxhash (its NGramsDecontIndexer "
             "imports lighteval, which fetches tasks from the hub)"]
    return rows, notes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=60_000)
    ap.add_argument("--peer", type=int, default=10_000, help="pairs given to the peers (and to ours, for the ratio)")
    ap.add_argument("--repeats", type=int, default=3)
    add_results_arg(ap)
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}, polars threads: {pl.thread_pool_size()}, load average {os.getloadavg()[0]:.1f}")
    pairs = corpus_pairs(args.pairs)
    print(f"{pairs.height} pairs, mean question {pairs['question'].str.len_chars().mean():.0f} chars, "
          f"mean answer {pairs['answer'].str.len_chars().mean():.0f} chars")
    with tempfile.TemporaryDirectory(prefix="bench-curate-") as tmp:
        sub = corpus_pairs(args.peer)  # a smaller corpus of the same recipe (same share of duplicates)
        rows, notes = bench_dedup(pairs, sub, args.repeats, Path(tmp))
        write_results(args.results, "dedup", "Dedup: exact and near-duplicate pairs", rows, notes)
        rows, notes = bench_decon(pairs, sub, Path(tmp))
        write_results(args.results, "decontaminate", "Decontamination: benchmark n-gram overlap", rows, notes)


if __name__ == "__main__":
    main()
