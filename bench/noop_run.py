"""Bench: a pipeline run with nothing new, against a real Prefect server, vs Prefect's own floor.

    .venv/bin/python bench/noop_run.py [--repeats 3]

Starts a Prefect server on loopback and the embedded LLM server, runs the whole pipeline once
over two small bundled crawl files (so every stage has a version and nothing is pending), then
times, interleaved, `--repeats` times each:
  ours   pipeline_flow again over the same folder: every stage finds nothing to do
  floor  a bare, empty Prefect flow run (what any run costs on this server)
and prints the best seconds of each and their ratio. The issue's target for `ours`: <= 5 s.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FILES = ["dolma_warc_sample-0000.warc.gz", "resiliparse_warcfile.warc.gz"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-noop-"))
    os.environ.update(PREFECT_HOME=str(tmp / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                      PREFECT_LOGGING_LEVEL="WARNING")
    from webinstruct.prefect_server import PrefectServer

    with PrefectServer() as server:
        os.environ["PREFECT_API_URL"] = server.api_url
        from prefect import flow

        from flows.pipeline import pipeline_flow
        from flows.settings import CrawlSource, ExtractSettings
        from webinstruct.llm_server import EmbeddedServer

        @flow(name="empty-pipeline")
        def floor() -> None:
            return None

        crawl = tmp / "crawl"
        crawl.mkdir()
        for name in FILES:
            shutil.copy(ROOT / "data" / "sample" / "crawl" / name, crawl / name)
        with EmbeddedServer(n_parallel=2, n_ctx_per_slot=4096, threads=1, model_name="SmolLM2-135M-Instruct") as llm_server:
            llm = llm_server.settings.model_copy(update={"max_tokens": 64, "repair_retry": False})
            kwargs = dict(source=CrawlSource(paths=[str(crawl)]), data_dir=str(tmp / "wh"), llm=llm,
                          extract=ExtractSettings(chunk_chars=500, overlap_chars=100, max_chunks=1))
            t = time.perf_counter()
            pipeline_flow(**kwargs)
            print(f"first run (everything new): {time.perf_counter() - t:.1f} s")
            best = {"ours": float("inf"), "floor": float("inf")}
            for _ in range(args.repeats):
                for name, fn in (("ours", lambda: pipeline_flow(**kwargs)), ("floor", floor)):
                    t = time.perf_counter()
                    fn()
                    best[name] = min(best[name], time.perf_counter() - t)
    print(f"nothing new, best of {args.repeats}: ours {best['ours']:.2f} s, empty Prefect flow "
          f"{best['floor']:.2f} s, ratio {best['ours'] / best['floor']:.2f}x (target: ours <= 5 s)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
