"""Stream page records out of WARC and WET files (gzip or plain, local or fsspec URLs).

Yields one `PageRecord` per HTML response (WARC) or text conversion (WET) record and counts
everything else. Neither fastwarc nor warcio raises on a file cut short: they yield the last
record with fewer bytes than its Content-Length. We compare the two (exact on every intact
record of the sample files, and free, unlike hashing each record for its block digest); a
short record is still yielded, flagged `truncated`, so the text read before the fault is kept.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Iterator

import fsspec
from fastwarc.warc import ArchiveIterator, WarcRecordType

CRAWL_IN_NAME = re.compile(r"CC-MAIN-\d{4}-\d{2}")
CONTENT_TYPE_LINE = re.compile(r"(?im)^content-type:\s*([^\r\n]+)")
HTML_TYPES = ("text/html", "application/xhtml+xml")


@dataclass
class PageRecord:
    doc_id: str
    url: str
    fetched_at: datetime | None
    content_type: str
    charset: str | None
    body: bytes
    is_plain_text: bool  # WET conversion: body is already text
    offset: int
    truncated: bool


@dataclass
class ReadStats:
    records_read: int = 0
    responses: int = 0
    skipped_non_html: int = 0
    truncated_records: int = 0
    crawl: str | None = None
    first_fault: str | None = None
    extra: dict = field(default_factory=dict)


def open_input(path: str) -> IO[bytes]:
    """Local paths open natively; anything with a scheme (s3://, gs://, http://) via fsspec."""
    if "://" in path and not path.startswith("file://"):
        return fsspec.open(path, "rb").open()
    return open(path.removeprefix("file://"), "rb")


def _clean_uri(uri: str | None) -> str:
    # Some writers (wget) wrap the target URI in <...>.
    return (uri or "").strip().removeprefix("<").removesuffix(">")


def _warcinfo_crawl(body: bytes) -> str | None:
    for line in body.decode("utf-8", "replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "ispartof" and value.strip():
            return value.strip()
    return None


def _content_type(rec) -> str:
    if rec.http_headers is None:
        return ""
    raw = rec.http_content_type
    if not raw:
        # ClueWeb-era records end header lines with a bare LF, so fastwarc folds the whole
        # header block into the status line; find the Content-Type in it.
        found = CONTENT_TYPE_LINE.search(rec.http_headers.status_line or "")
        raw = found.group(1) if found else ""
    return raw.lower().strip()
    return raw.lower().strip()


def _charset(rec, content_type: str) -> str | None:
    if rec.http_charset:
        return rec.http_charset
    _, _, rest = content_type.partition("charset=")
    return rest.split(";")[0].strip().strip('"') or None


def iter_pages(stream: IO[bytes], stats: ReadStats, source_name: str = "") -> Iterator[PageRecord]:
    match = CRAWL_IN_NAME.search(source_name)
    stats.crawl = match.group(0) if match else None
    wanted = WarcRecordType.warcinfo | WarcRecordType.response | WarcRecordType.conversion
    for rec in ArchiveIterator(stream, record_types=wanted, parse_http=True):
        stats.records_read += 1
        rtype = rec.record_type
        if rtype == WarcRecordType.warcinfo:
            stats.crawl = _warcinfo_crawl(rec.reader.read()) or stats.crawl
            continue
        stats.responses += 1
        if rtype == WarcRecordType.conversion:
            content_type, charset, plain = "text/plain", "utf-8", True
            doc_id = rec.headers.get("WARC-Refers-To") or rec.record_id
        else:
            content_type = _content_type(rec)
            if not content_type.startswith(HTML_TYPES):
                stats.skipped_non_html += 1
                rec.consume()
                continue
            charset, plain, doc_id = _charset(rec, content_type), False, rec.record_id
        body = rec.reader.read()
        truncated = len(body) < rec.content_length  # content_length: bytes after the HTTP headers
        if truncated:
            stats.truncated_records += 1
            stats.first_fault = stats.first_fault or (
                f"record at byte {rec.stream_pos} is cut short: {len(body)} of {rec.content_length} "
                f"payload bytes present (WARC Content-Length {rec.headers.get('Content-Length')})"
            )
        yield PageRecord(
            doc_id=doc_id,
            url=_clean_uri(rec.headers.get("WARC-Target-URI")),
            fetched_at=rec.record_date,
            content_type=content_type.split(";")[0].strip(),
            charset=charset,
            body=body,
            is_plain_text=plain,
            offset=rec.stream_pos,
            truncated=truncated,
        )
