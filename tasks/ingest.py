"""Stage `ingest`: one crawl file -> `documents` shards + one `crawl_files` row.

A file is identified by its path and size (crawl segments are immutable). Its documents are
written as shards of `shard_size` rows while the file streams, so memory stays flat with file
size; the `crawl_files` row is written last and is the commit point: a file without it is
ingested again on the next run (its shards have deterministic names and are overwritten).
A file that cannot be opened or read to the end is recorded with status `error` and its error
text; every document read before the fault is kept (a cut-short record is kept, flagged
`truncated`, because its text up to the cut is real page text).
"""
from __future__ import annotations

import glob
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import fsspec
import polars as pl

from tasks.html_text import html_to_text, language, registered_domain
from tasks.warc_reader import PageRecord, ReadStats, iter_pages, open_input
from warehouse import Warehouse, content_hash, fingerprint, now_utc

STAGE = "ingest"
CODE_VERSION = "2"  # 2: documents.language
WARC_SUFFIXES = (".warc", ".warc.gz", ".wet", ".wet.gz", ".warc.wet.gz", ".arc.gz")


@dataclass(frozen=True)
class IngestParams:
    shard_size: int = 2000
    min_chars: int = 1  # documents with less main text than this are skipped as empty
    main_content: bool = True

    def fingerprint(self) -> str:
        # shard_size only changes how rows are cut into files, not the rows: not part of it.
        return fingerprint(STAGE, params={"min_chars": self.min_chars, "main_content": self.main_content},
                           code_version=CODE_VERSION)


CC_BASE_URL = "https://data.commoncrawl.org/"
LISTING_SUFFIXES = (".paths", ".paths.gz")


def read_listing(listing: str, base: str = CC_BASE_URL) -> list[str]:
    """A Common Crawl `warc.paths(.gz)` listing: one path per line, relative to `base` (a URL or folder)."""
    with fsspec.open(listing.removeprefix("file://"), "rt", compression="infer") as f:
        lines = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    join = (lambda rel: base.rstrip("/") + "/" + rel) if "://" in base else (lambda rel: str(Path(base) / rel))
    return [ln if "://" in ln or ln.startswith("/") else join(ln) for ln in lines]


def expand_inputs(paths: list[str], listing_base: str = CC_BASE_URL) -> list[str]:
    """Files, folders (recursively, WARC/WET names only), globs and `*.paths(.gz)` listings, local or fsspec URLs."""
    found: list[str] = []
    for p in paths:
        if p.endswith(LISTING_SUFFIXES):
            found += expand_inputs(read_listing(p, listing_base))
            continue
        if "://" in p and not p.startswith("file://"):
            fs, _, matches = fsspec.get_fs_token_paths(p)
            for m in matches:
                files = [f for f in fs.find(m) if f.endswith(WARC_SUFFIXES)] if fs.isdir(m) else [m]
                found += [fs.unstrip_protocol(f) for f in sorted(files)]
            continue
        local = p.removeprefix("file://")
        if os.path.isdir(local):
            # An empty folder is no error here: a scheduled run watching it has nothing new yet. The
            # CLI reports an explicit input that names no file (webinstruct.options.check_inputs).
            found += sorted(str(f.resolve()) for f in Path(local).rglob("*") if f.name.endswith(WARC_SUFFIXES))
        elif any(ch in local for ch in "*?["):
            found += sorted(str(Path(f).resolve()) for f in glob.glob(local, recursive=True))
        elif os.path.exists(local):
            found.append(str(Path(local).resolve()))
        else:
            raise FileNotFoundError(f"input not found: {p}")
    return list(dict.fromkeys(found))


def file_key(path: str) -> str:
    return content_hash(path)


def file_size(path: str) -> int:
    if "://" in path and not path.startswith("file://"):
        return int(fsspec.open(path).fs.size(path))
    return os.path.getsize(path.removeprefix("file://"))


def already_ingested(wh: Warehouse, fp: str, path: str) -> bool:
    shard = wh.shard_path("crawl_files", fp, file_key(path))
    if not shard.exists():
        return False
    return pl.read_parquet(str(shard), columns=["size_bytes"])["size_bytes"][0] == file_size(path)


def _checksum(path: str) -> str:
    with open_input(path) as fh:
        return "sha256:" + hashlib.file_digest(fh, "sha256").hexdigest()


def page_row(page: PageRecord, params: IngestParams, crawl: str | None, source: str) -> dict | None:
    """The `documents` row of one page (None when its main text is shorter than `min_chars`)."""
    if page.is_plain_text:
        title, text = "", page.body.decode("utf-8", "replace").strip()
    else:
        title, text = html_to_text(page.body, page.charset, main_content=params.main_content)
    if len(text) < params.min_chars:
        return None
    return dict(
        doc_id=page.doc_id, url=page.url, domain=registered_domain(page.url) if page.url else None,
        crawl=crawl, fetched_at=page.fetched_at, content_type=page.content_type, charset=page.charset,
        title=title, text=text, n_chars=len(text), language=language(text), truncated=page.truncated, source_file=source,
        record_offset=page.offset,
    )


def ingest_path(data_dir: str, path: str, params: IngestParams) -> dict:
    """`ingest_file` into the warehouse at `data_dir`: what a parsing worker process runs (it
    imports this module, not Prefect's)."""
    return ingest_file(Warehouse(data_dir), path, params)


def ingest_file(wh: Warehouse, path: str, params: IngestParams,
                on_docs: Callable[[int], None] | None = None) -> dict:
    """Ingest one file into the `documents` version of `params`; returns its crawl_files row."""
    fp = params.fingerprint()
    key = file_key(path)
    started = time.perf_counter()
    stats = ReadStats()
    rows: list[dict] = []
    n_shards = docs_kept = skipped_empty = 0
    error = None

    def flush() -> None:
        nonlocal n_shards, rows
        if rows:
            wh.write_shard("documents", fp, f"{key}-{n_shards:05d}", pl.DataFrame(rows, infer_schema_length=None))
            n_shards += 1
            if on_docs:
                on_docs(len(rows))
            rows = []

    # Shards of an earlier, interrupted attempt are replaced; remove any beyond this attempt's count.
    stale = {s for s in wh.shard_ids("documents", fp) if s.startswith(key)}
    size = checksum = None
    try:
        size = file_size(path)
        checksum = _checksum(path)
        with open_input(path) as stream:
            for page in iter_pages(stream, stats, source_name=path):
                try:
                    row = page_row(page, params, stats.crawl, path)
                except Exception as exc:  # noqa: BLE001 - one page that cannot be converted must not cost the file
                    stats.faults.append(f"page at byte {page.offset} could not be converted "
                                        f"({type(exc).__name__}: {exc})")
                    continue
                if row is None:
                    skipped_empty += 1
                    continue
                rows.append(row)
                docs_kept += 1
                if len(rows) >= params.shard_size:
                    flush()
        flush()
    except Exception as exc:  # noqa: BLE001 - a bad file is recorded, never fatal to the run
        flush()
        error = f"{type(exc).__name__}: {exc}"
    if stats.faults and not error:
        more = len(stats.faults) - 1
        error = stats.faults[0] + (f" (and {more} more fault{'s' * (more > 1)}: {stats.faults[-1]})" if more else "")
    for shard in stale - {f"{key}-{i:05d}" for i in range(n_shards)}:
        wh.shard_path("documents", fp, shard).unlink(missing_ok=True)

    record = dict(
        path=path, file_key=key, size_bytes=size, checksum=checksum, crawl=stats.crawl,
        records_read=stats.records_read, responses=stats.responses, docs_kept=docs_kept,
        skipped_non_html=stats.skipped_non_html, skipped_empty=skipped_empty,
        truncated_records=stats.truncated_records, n_shards=n_shards,
        status="error" if error else "ok", error=error, ingested_at=now_utc(),
        seconds=round(time.perf_counter() - started, 4),
    )
    wh.write_shard("crawl_files", fp, key, pl.DataFrame([record], schema=wh.spec("crawl_files").schema))
    return record
