"""Bench: which embedded model should extract pairs on a machine without a GPU.

    .venv/bin/python bench/llm_models.py [--pages 10] [--models A,B] [--chunk-chars 1500] [--show]

Every embedded model (webinstruct/embedded_models.py) runs our extraction stage
(`tasks.extract.extract_pages`: cleaning, chunk choice, prompt, grounding checks) over the same
real Q&A pages: the positives of the shipped labelled set (data/eval), taken round-robin over
their sites. Each model runs in its own process (the server lives in-process, so peak RSS is the
model's), llama.cpp on every core, two slots, temperature 0, no response cache. Printed per model:
  pages+    pages with at least one grounded pair (status ok)
  pairs     ok pairs, and pairs per page
  json      share of chunks whose reply validated (salvaged truncations count as valid)
  rejected  pairs the checks rejected (not on the page, a few-shot copy, a repeat)
  s/page    wall seconds per page, RSS the process's peak
`--show` prints every ok pair, to judge correctness by eye (the README's table records that).
Nothing is asserted: speed depends on the machine; the ratios between models are the result.
"""
from __future__ import annotations

import argparse
import os
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from webinstruct.embedded_models import MODELS  # noqa: E402


def pages(n: int) -> pl.DataFrame:
    """`n` labelled positives, round-robin over their domains (url order within a domain)."""
    from tasks.labelled_pages import load_labelled
    from warehouse import content_hash

    df, _ = load_labelled(None, None)
    pos = df.filter(pl.col("label") == 1).sort("domain", "url")
    pos = pos.with_columns(_k=pl.int_range(pl.len()).over("domain")).sort("_k", "domain").head(n)
    return pos.with_columns(doc_id=pl.col("url").map_elements(content_hash, return_dtype=pl.String))


def run_one(model: str, n_pages: int, chunk_chars: int, max_tokens: int, show: bool) -> dict:
    from tasks import extract as ex
    from tasks.llm_client import LLMClient
    from tasks.page_clean import CleanParams
    from warehouse import Warehouse
    from webinstruct.llm_server import EmbeddedServer

    docs = pages(n_pages)
    params = ex.ExtractParams(clean=CleanParams(chunk_chars=chunk_chars, max_chunks=1))
    with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(n_parallel=2, model_name=model) as srv:
        settings = srv.settings.model_copy(update={"max_tokens": max_tokens, "timeout_s": 1800, "use_cache": False})
        t0 = time.perf_counter()
        rows, results = ex.extract_pages(LLMClient(settings, Warehouse(tmp)), settings, params,
                                         docs.select("doc_id", "url", "title", "text"), fp="bench", shard="bench")
        seconds = time.perf_counter() - t0
    ok = rows.filter(pl.col("status") == "ok")
    if show:
        urls = dict(docs.select("doc_id", "url").iter_rows())
        for r in ok.iter_rows(named=True):
            print(f"\n[{model}] {urls[r['doc_id']]}\n  Q: {r['question'][:300]}\n  A: {r['answer'][:300]}",
                  file=sys.stderr)
    return dict(model=model, pages=docs.height, pages_with_pairs=ok["doc_id"].n_unique(), pairs=ok.height,
                chunks=len(results), json_valid=sum(r.ok for r in results) / max(1, len(results)),
                rejected=int((rows["status"] == "rejected").sum()), seconds=seconds,
                rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=10)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--chunk-chars", type=int, default=1500)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--show", action="store_true")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child mode: measure one model, print JSON
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one, a.pages, a.chunk_chars, a.max_tokens, a.show)))
        return
    out = []
    for model in a.models.split(","):
        cmd = [sys.executable, __file__, "--one", model, "--pages", str(a.pages), "--chunk-chars",
               str(a.chunk_chars), "--max-tokens", str(a.max_tokens)] + (["--show"] if a.show else [])
        res = subprocess.run(cmd, capture_output=not a.show, stdout=subprocess.PIPE, text=True)
        if res.returncode:
            print(f"{model}: failed ({res.returncode}) {(res.stderr or '')[-500:]}")
            continue
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(f"\n{a.pages} labelled Q&A pages, chunk {a.chunk_chars} chars, 1 chunk per page, {os.cpu_count()} threads, 2 slots\n")
    print("| model | license | pages+ | pairs (per page) | json | rejected | s/page | RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in out:
        print(f"| {r['model']} | {MODELS[r['model']].license} | {r['pages_with_pairs']}/{r['pages']} | "
              f"{r['pairs']} ({r['pairs'] / r['pages']:.2f}) | {r['json_valid']:.0%} | {r['rejected']} | "
              f"{r['seconds'] / r['pages']:.1f} | {r['rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
