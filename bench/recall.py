"""Bench: recall scoring throughput of our `recall_score` stage vs bare fastText over the same texts.

    .venv/bin/python bench/recall.py [--docs 4000] [--shard-size 2000] [--repeats 5] [--results DIR]

Builds a throwaway warehouse whose `documents` are the first `--docs` documents of the bench
corpus (bench/corpus.py: real pages replicated with variations, ingested by our stage once and
cached), trains a round-1 model on it, then times, in one run:
  stage   score_shard over every shard, one after another: Parquet read, normalization,
          predict, Parquet write
  stage2  the same with two shards at a time, as the flow runs it (2 task threads)
  bare    `model.predict(text)` in a Python loop over the texts, already normalized in memory
  batch   one `model.predict(list_of_texts)` call over the same normalized texts
each `--repeats` times, interleaved (stage, stage2, bare, batch, stage, ...), and prints the
median docs/s of each and the median of the per-repeat ratios stage/bare and stage2/bare
(target >= 0.9x), with the spread. A ratio is taken within one repeat, so a slow spell on a
shared machine hits both sides of it; the median, not the best, is what a run usually gets.
Nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_results_arg, row as result_row, write_results  # noqa: E402
from corpus import CACHE, warc_files  # noqa: E402
from tasks.ingest import IngestParams, ingest_file  # noqa: E402
from tasks.recall_score import ScoringModel, score_shard, scores_fingerprint  # noqa: E402
from tasks.recall_train import TrainParams, load_model, model_file, train_round  # noqa: E402
from tasks.text_norm import normalize_texts  # noqa: E402
from warehouse import Warehouse  # noqa: E402


def corpus_documents(docs: int) -> pl.DataFrame:
    """The first `docs` documents of the bench corpus as our ingest stage stores them (cached)."""
    cache = CACHE / f"documents-{docs}.parquet"
    if not cache.exists():
        with tempfile.TemporaryDirectory(prefix="bench-recall-ingest-") as tmp:
            wh, params = Warehouse(Path(tmp)), IngestParams()
            for path in warc_files(docs):
                ingest_file(wh, str(path), params)
            wh.scan("documents", params.fingerprint()).drop("fingerprint").collect().write_parquet(cache)
    return pl.read_parquet(cache)


def build(root: Path, docs: int, shard_size: int) -> tuple[Warehouse, str]:
    wh = Warehouse(root)
    fp = IngestParams().fingerprint()
    big = corpus_documents(docs)
    for i, start in enumerate(range(0, big.height, shard_size)):
        wh.write_shard("documents", fp, f"bench-{i:05d}", big.slice(start, shard_size))
    return wh, fp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=4000, help="documents of the bench corpus to score")
    ap.add_argument("--shard-size", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    add_results_arg(ap)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-recall-") as tmp:
        wh, doc_fp = build(Path(tmp) / "wh", args.docs, args.shard_size)
        # Every language in scope: the stage predicts every text, as the bare loop does (with the
        # default English scope it would skip a third of these pages and look faster than it is).
        row = train_round(wh, 1, TrainParams(languages=None, threshold=0.5), [doc_fp], None)
        model_row = ScoringModel.from_row(row)
        model = load_model(model_file(wh, model_row.model_path))
        shards = wh.shard_ids("documents", doc_fp)
        texts_raw = wh.scan("documents", doc_fp).select("text").collect()["text"]
        n = texts_raw.len()
        texts = normalize_texts(texts_raw, model_row.max_chars)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        print(f"machine: {cores} usable cores (os.cpu_count {os.cpu_count()}), polars threads "
              f"{pl.thread_pool_size()}; {args.repeats} interleaved repeats")
        print(f"{n} documents in {len(shards)} shards, mean {texts_raw.str.len_chars().mean():.0f} chars "
              f"(first {model_row.max_chars} scored); model dim {model.get_dimension()}")

        def stage(rep: int, workers: int) -> None:
            out = scores_fingerprint(f"{model_row.fingerprint}-{workers}-{rep}", [doc_fp])
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(lambda s: score_shard(wh, model_row, doc_fp, s, out), shards))

        def bare() -> None:
            for text in texts:
                model.predict(text, k=1)

        runs = {"stage": lambda r: stage(r, 1), "stage2": lambda r: stage(r, 2), "bare": lambda r: bare(),
                "batch": lambda r: model.predict(texts, k=1)}
        secs: dict[str, list[float]] = {k: [] for k in runs}
        for rep in range(args.repeats):  # interleaved: a shared machine's slow spells hit every variant
            for k, fn in runs.items():
                t = time.perf_counter()
                fn(rep)
                secs[k].append(time.perf_counter() - t)

        for k, v in secs.items():
            rates = sorted(n / s for s in v)
            print(f"{k:>6}: {n / statistics.median(v):10.0f} docs/s median  (min {rates[0]:.0f}, max {rates[-1]:.0f})")

        def per_repeat(a: str, b: str) -> list[float]:  # docs/s of a over docs/s of b, per repeat
            return sorted(sb / sa for sa, sb in zip(secs[a], secs[b]))

        def ratio(a: str, b: str) -> str:
            r = per_repeat(a, b)
            return f"{statistics.median(r):.2f}x (per repeat {' '.join(f'{x:.2f}' for x in r)})"

        print(f"median ratio stage/bare loop:  {ratio('stage', 'bare')}  target >= 0.9x")
        print(f"median ratio stage2/bare loop: {ratio('stage2', 'bare')}  (2 shard workers, as the flow runs)")
        print(f"median ratio stage/one batched call: {ratio('stage', 'batch')}")
        rate = {k: n / statistics.median(v) for k, v in secs.items()}
        rows = [result_row("documents scored/s, one shard at a time", rate["stage"], "bare fastText predict loop",
                    rate["bare"], "docs/s", ">= 0.9x", ratio=statistics.median(per_repeat("stage", "bare"))),
                result_row("documents scored/s, two shard workers (as the flow runs)", rate["stage2"],
                    "bare fastText predict loop", rate["bare"], "docs/s",
                    ratio=statistics.median(per_repeat("stage2", "bare"))),
                result_row("documents scored/s, one shard at a time", rate["stage"], "one batched fastText predict call",
                    rate["batch"], "docs/s", ratio=statistics.median(per_repeat("stage", "batch")))]
        notes = [f"{n} documents of the bench corpus (ingested by our stage) in {len(shards)} shards, mean "
                 f"{texts_raw.str.len_chars().mean():.0f} chars (first {model_row.max_chars} scored); round-1 "
                 f"model trained on them, dim {model.get_dimension()}",
                 "ours: Parquet read, normalization, predict, Parquet write per shard; bare: model.predict(text) "
                 "over the already-normalized texts in memory",
                 f"{args.repeats} interleaved repeats; ratio = median of the per-repeat ratios "
                 f"(stage/bare per repeat: {' '.join(f'{x:.2f}' for x in per_repeat('stage', 'bare'))})"]
        write_results(args.results, "recall", "Recall scoring: fastText over documents", rows, notes)


if __name__ == "__main__":
    main()
