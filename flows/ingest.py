"""Flow `ingest`: crawl files -> `documents`, one Prefect task per input file (incremental).

A file is a crawl segment: one already ingested (same path and size) is skipped, so a scheduled
run over a growing folder, glob or `warc.paths` listing only reads the new files.
"""
import multiprocessing
import os
import uuid
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from typing import Optional

from prefect import flow, task
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from flows.runners import RunnerSettings, active_runner
from flows.runtime import ProgressArtifact, pipeline_run, progress, run_logger, stage
from flows.settings import CrawlSource
from tasks.ingest import (CODE_VERSION, STAGE, IngestParams, already_ingested, expand_inputs, file_size,
                          ingest_path)
from warehouse import Warehouse

# Below this much input, starting worker processes costs more than it saves.
PROCESS_POOL_MIN_BYTES = 64 * 2**20


_pools: dict[str, ProcessPoolExecutor] = {}  # the parsing processes of running ingest flows, by key


@task(name="ingest-file", retries=1, retry_delay_seconds=2)
def ingest_file_task(data_dir: str, path: str, params: IngestParams, pool: Optional[str] = None) -> dict:
    if pool in _pools:
        return _pools[pool].submit(ingest_path, data_dir, path, params).result()
    return ingest_path(data_dir, path, params)


class _ParsingPool:
    """Each file's Prefect task runs in a thread of the flow and parses in a plain worker process.

    Not Prefect's ProcessPoolTaskRunner: its workers run the task engine and, under the ephemeral
    API (no PREFECT_API_URL), each starts an API server of its own: ~480 MB and seconds per worker
    with its server (bench/memory.py), and the run's task runs land in the workers' servers."""

    def __init__(self, workers: int):
        self.workers, self.key = workers, uuid.uuid4().hex

    def __enter__(self):
        _pools[self.key] = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        self.threads = ThreadPoolTaskRunner(max_workers=self.workers).__enter__()
        return self

    def __exit__(self, *exc):
        try:
            self.threads.__exit__(*exc)
        finally:
            _pools.pop(self.key).shutdown(cancel_futures=True)

    def submit(self, task, parameters: dict):
        return self.threads.submit(task, {**parameters, "pool": self.key})


def _runner(todo: list[str], workers: int | None):
    """HTML parsing holds the GIL, so big inputs are spread over processes, not threads."""
    if workers is None:
        big = len(todo) > 1 and sum(file_size(p) for p in todo) >= PROCESS_POOL_MIN_BYTES
        workers = min(os.cpu_count() or 1, len(todo)) if big else 1
    return _ParsingPool(workers) if workers > 1 else ThreadPoolTaskRunner(max_workers=1)


@flow(name="ingest")
def ingest_flow(
    source: CrawlSource = Field(CrawlSource(), description="The crawl files to read"),
    data_dir: Optional[str] = Field(None, description="Warehouse directory (default ./webinstruct-data)"),
    runner: Optional[RunnerSettings] = Field(None, description=(
        "Where shard tasks run: local threads (empty), or a Dask/Ray cluster (kind, address)")),
    run_id: Optional[str] = Field(None, description="Set by the pipeline flow; leave empty"),
) -> dict:
    """Ingest WARC/WET files (paths, folders, globs, fsspec URLs, warc.paths listings); files already done are skipped."""
    wh = Warehouse(data_dir)
    params = IngestParams(shard_size=source.shard_size)
    fp = params.fingerprint()
    files = expand_inputs(source.paths, source.listing_base)
    todo = [f for f in files if not already_ingested(wh, fp, f)]
    progress("files", 0, len(todo))
    rows: list[dict] = []
    with pipeline_run(wh, "ingest", {"source": source.model_dump()}, run_id, runner) as rid:
        with stage(wh, run_id=rid, name=STAGE, fingerprint=fp, outputs=["documents", "crawl_files"],
                   params={"shard_size": source.shard_size, "min_chars": params.min_chars,
                           "main_content": params.main_content},
                   upstream=[], code_version=CODE_VERSION) as sr:
            if todo:
                bar = ProgressArtifact(f"ingest: {len(todo)} file(s)", len(todo)) if len(todo) > 1 else None
                cluster = active_runner()  # a Dask/Ray cluster the run entered, else a pool of our own
                with nullcontext(cluster) if cluster else _runner(todo, source.workers) as pool:
                    futures = [pool.submit(ingest_file_task, {"data_dir": str(wh.root), "path": p, "params": params})
                               for p in todo]
                    for done in as_completed(futures):
                        rows.append(done.result())
                        progress("files", 1)
                        progress("documents", rows[-1]["docs_kept"])
                        if bar:
                            bar.advance()
            progress("documents", 0, sum(r["docs_kept"] for r in rows))  # the count is known now: the bar stops
            sr.add(shards_total=len(files), shards_done=len(todo), shards_skipped=len(files) - len(todo),
                   rows_in=sum(r["records_read"] for r in rows), rows_out=sum(r["docs_kept"] for r in rows))
            errors = [(r["path"], r["error"]) for r in rows if r["status"] == "error"]
            if rows:
                sr.reasons = {"files ok": len(rows) - len(errors), "files with errors": len(errors)}
            for path, error in errors:
                run_logger().warning("%s: %s", path, error)
    return {
        "fingerprint": fp, "files_seen": len(files), "files_ingested": len(todo),
        "files_skipped": len(files) - len(todo), "docs_kept": sum(r["docs_kept"] for r in rows),
        "errors": errors,
    }
