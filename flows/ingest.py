"""Flow `ingest`: crawl files -> `documents`, one Prefect task per input file (incremental).

A file is a crawl segment: one already ingested (same path and size) is skipped, so a scheduled
run over a growing folder, glob or `warc.paths` listing only reads the new files.
"""
import os
from typing import Optional

from prefect import flow, task
from prefect.futures import as_completed
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
from pydantic import Field

from flows.runtime import ProgressArtifact, pipeline_run, progress, run_logger, stage
from flows.settings import CrawlSource
from tasks.ingest import (CODE_VERSION, STAGE, IngestParams, already_ingested, expand_inputs, file_size,
                          ingest_file)
from warehouse import Warehouse

# Below this much input, starting worker processes costs more than it saves.
PROCESS_POOL_MIN_BYTES = 64 * 2**20


@task(name="ingest-file", retries=1, retry_delay_seconds=2)
def ingest_file_task(data_dir: str, path: str, params: IngestParams) -> dict:
    return ingest_file(Warehouse(data_dir), path, params)


def _runner(todo: list[str], workers: int | None):
    """HTML parsing holds the GIL, so big inputs are spread over processes, not threads."""
    if workers is None:
        big = len(todo) > 1 and sum(file_size(p) for p in todo) >= PROCESS_POOL_MIN_BYTES
        workers = min(os.cpu_count() or 1, len(todo)) if big else 1
    return ProcessPoolTaskRunner(max_workers=workers) if workers > 1 else ThreadPoolTaskRunner(max_workers=1)


@flow(name="ingest")
def ingest_flow(
    source: CrawlSource = Field(CrawlSource(), description="The crawl files to read"),
    data_dir: Optional[str] = Field(None, description="Warehouse directory (default ./webinstruct-data)"),
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
    with pipeline_run(wh, "ingest", {"source": source.model_dump()}, run_id) as rid:
        with stage(wh, run_id=rid, name=STAGE, fingerprint=fp, outputs=["documents", "crawl_files"],
                   params={"shard_size": source.shard_size, "min_chars": params.min_chars,
                           "main_content": params.main_content},
                   upstream=[], code_version=CODE_VERSION) as sr:
            if todo:
                bar = ProgressArtifact(f"ingest: {len(todo)} file(s)", len(todo)) if len(todo) > 1 else None
                with _runner(todo, source.workers) as runner:
                    futures = [runner.submit(ingest_file_task, {"data_dir": str(wh.root), "path": p, "params": params})
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
