"""Tables of the spine: ingestion outputs and the run manifest."""
import polars as pl

from warehouse.schemas.base import TableSpec

TS = pl.Datetime("us", "UTC")

CRAWL_FILES = TableSpec(
    name="crawl_files",
    doc="One row per input file per ingest version: what was read, what was kept, and any error.",
    key=("path",),
    schema={
        "path": pl.String,
        "file_key": pl.String,
        "size_bytes": pl.Int64,
        "checksum": pl.String,
        "crawl": pl.String,
        "records_read": pl.Int64,
        "responses": pl.Int64,
        "docs_kept": pl.Int64,
        "skipped_non_html": pl.Int64,
        "skipped_empty": pl.Int64,
        "truncated_records": pl.Int64,
        "n_shards": pl.Int32,
        "status": pl.String,  # ok | error
        "error": pl.String,
        "ingested_at": TS,
        "seconds": pl.Float64,
    },
)

DOCUMENTS = TableSpec(
    name="documents",
    doc="Ingested web pages with their main text; doc_id is the WARC-Record-ID.",
    key=("doc_id",),
    schema={
        "doc_id": pl.String,
        "url": pl.String,
        "domain": pl.String,
        "crawl": pl.String,
        "fetched_at": TS,
        "content_type": pl.String,
        "charset": pl.String,
        "title": pl.String,
        "text": pl.String,
        "n_chars": pl.Int32,
        "language": pl.String,  # ISO 639-1 code guessed from the main text (resiliparse), "unknown" if none
        "truncated": pl.Boolean,
        "source_file": pl.String,
        "record_offset": pl.Int64,
    },
)

RUNS = TableSpec(
    name="runs",
    doc="One row per pipeline invocation (a flow run or a CLI command).",
    manifest=True,
    key=("run_id",),
    schema={
        "run_id": pl.String,
        "flow": pl.String,
        "params": pl.String,
        "started_at": TS,
        "finished_at": TS,
        "status": pl.String,  # running | done | failed
        "error": pl.String,
    },
)

STAGE_RUNS = TableSpec(
    name="stage_runs",
    doc="One row per stage execution: its fingerprint, parameters, upstream versions and counters.",
    manifest=True,
    key=("stage_run_id",),
    schema={
        "stage_run_id": pl.String,
        "run_id": pl.String,
        "stage": pl.String,
        "fingerprint": pl.String,
        "outputs": pl.List(pl.String),
        "params": pl.String,
        "upstream": pl.List(pl.String),
        "code_version": pl.String,
        "started_at": TS,
        "finished_at": TS,
        "status": pl.String,  # running | done | failed
        "shards_total": pl.Int64,
        "shards_done": pl.Int64,
        "shards_skipped": pl.Int64,
        "rows_in": pl.Int64,
        "rows_out": pl.Int64,
        "error": pl.String,
    },
)

SPECS = [CRAWL_FILES, DOCUMENTS, RUNS, STAGE_RUNS]
