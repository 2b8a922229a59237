"""Flow `ingest`: crawl files -> `documents`, one Prefect task per input file (incremental)."""
from __future__ import annotations

from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

from flows.runtime import pipeline_run, progress
from tasks.ingest import CODE_VERSION, STAGE, IngestParams, already_ingested, expand_inputs, ingest_file
from warehouse import Warehouse
from warehouse.catalog import write_catalog


@task(name="ingest-file", retries=1, retry_delay_seconds=2)
def ingest_file_task(data_dir: str, path: str, params: IngestParams) -> dict:
    row = ingest_file(Warehouse(data_dir), path, params, on_docs=lambda n: progress("documents", n))
    progress("files", 1)
    return row


@flow(name="ingest", task_runner=ThreadPoolTaskRunner(max_workers=2))
def ingest_flow(paths: list[str], data_dir: str | None = None, shard_size: int = 2000,
                run_id: str | None = None) -> dict:
    """Ingest WARC/WET files (paths, folders, globs or fsspec URLs); files already done are skipped."""
    wh = Warehouse(data_dir)
    params = IngestParams(shard_size=shard_size)
    fp = params.fingerprint()
    files = expand_inputs(paths)
    todo = [f for f in files if not already_ingested(wh, fp, f)]
    progress("files", 0, len(todo))
    with pipeline_run(wh, "ingest", {"paths": paths}, run_id) as rid, wh.stage_run(
        run_id=rid, stage=STAGE, fingerprint=fp, outputs=["documents", "crawl_files"],
        params={"shard_size": shard_size, "min_chars": params.min_chars, "main_content": params.main_content},
        upstream=[], code_version=CODE_VERSION,
    ) as sr:
        rows = [f.result() for f in ingest_file_task.map(str(wh.root), todo, params)] if todo else []
        sr.add(shards_total=len(files), shards_done=len(todo), shards_skipped=len(files) - len(todo),
               rows_in=sum(r["records_read"] for r in rows), rows_out=sum(r["docs_kept"] for r in rows))
    write_catalog(wh)
    return {
        "fingerprint": fp, "files_seen": len(files), "files_ingested": len(todo),
        "files_skipped": len(files) - len(todo), "docs_kept": sum(r["docs_kept"] for r in rows),
        "errors": [(r["path"], r["error"]) for r in rows if r["status"] == "error"],
    }
