"""Stream page records out of WARC and WET files (gzip or plain, local or fsspec URLs).

Yields one `PageRecord` per HTML response (WARC) or text conversion (WET) record and counts
everything else. Neither fastwarc nor warcio raises on a file cut short: they yield the last
record with fewer bytes than its Content-Length. We compare the two (exact on every intact
record of the sample files, and free, unlike hashing each record for its block digest); a
short record is still yielded, flagged `truncated`, so the text read before the fault is kept.
fastwarc also stops without a word when a gzip file ends inside a member header, so after the
last record we check that the file ends where that record does. Where reading fails (garbage,
corrupt gzip, a record cut short mid-file) the fault is recorded and reading resumes at the
next record start found after it: one bad record does not cost the rest of the file.
"""
from __future__ import annotations

import contextlib
import re
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Iterator

import fsspec
from fastwarc.warc import ArchiveIterator, WarcRecordType

CRAWL_IN_NAME = re.compile(r"CC-MAIN-\d{4}-\d{2}")
CONTENT_TYPE_LINE = re.compile(r"(?im)^content-type:\s*([^\r\n]+)")
HTML_TYPES = ("text/html", "application/xhtml+xml")
# the records `records_read` counts (the others are skipped, but read: the last one tells where the file ends)
COUNTED_TYPES = WarcRecordType.warcinfo | WarcRecordType.response | WarcRecordType.conversion
GZIP_MAGIC = b"\x1f\x8b\x08"
SCAN_BLOCK = 1 << 20


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
    faults: list[str] = field(default_factory=list)  # what went wrong reading the file, in order
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


def _charset(rec, content_type: str) -> str | None:
    if rec.http_charset:
        return rec.http_charset
    _, _, rest = content_type.partition("charset=")
    return rest.split(";")[0].strip().strip('"') or None


def iter_pages(stream: IO[bytes], stats: ReadStats, source_name: str = "") -> Iterator[PageRecord]:
    """The pages of a seekable stream; never raises on bad bytes: each fault lands in `stats.faults`."""
    match = CRAWL_IN_NAME.search(source_name)
    stats.crawl = match.group(0) if match else None
    start = stream.tell()
    head = stream.read(512)
    if not head:
        stats.faults.append("empty file (0 bytes)")
        return
    gz = head.startswith(GZIP_MAGIC[:2])
    pos: int | None = start
    while pos is not None:
        last = None  # start of the last record read in this pass
        try:
            stream.seek(pos)
            for rec in ArchiveIterator(stream, parse_http=False):
                last = rec.stream_pos
                page, whole = _read_record(rec, stats)
                if page is not None:
                    yield page
                if not whole:
                    break  # what follows a short record is not trusted: find the next record start
            else:
                fault = _gzip_tail_fault(stream, last) if gz and last is not None else None
                if fault is None:
                    if last is None and pos == start:
                        stats.faults.append(f"no WARC records in the file ({_first_bytes(head, gz)})")
                    return
                stats.faults.append(fault)
        except Exception as exc:  # noqa: BLE001 - fastwarc raises OSError (and TypeError) on bad bytes
            stats.faults.append(_read_fault(exc, gz, pos, last, head, first=pos == start and last is None))
        pos = _next_record_start(stream, (pos if last is None else last) + 1, gz)
        if pos is not None:
            stats.faults[-1] += f"; reading resumed at the next record, byte {pos}"


def _read_record(rec, stats: ReadStats) -> tuple[PageRecord | None, bool]:
    """(the page of one record or None, whether the record was whole)."""
    rtype = rec.record_type
    if not rec.headers.get("Content-Length"):
        stats.faults.append(f"record at byte {rec.stream_pos} has no Content-Length: the file ends inside "
                            "its header, or it is not a WARC record")
        return None, False
    if not rtype & COUNTED_TYPES:
        return None, _consume(rec, stats)
    stats.records_read += 1
    if rtype == WarcRecordType.warcinfo:
        info = rec.reader.read()
        stats.crawl = _warcinfo_crawl(info) or stats.crawl
        if len(info) < rec.content_length:
            stats.faults.append(_short(rec, len(info)))
            return None, False
        return None, True
    stats.responses += 1
    if rtype == WarcRecordType.conversion:
        content_type, charset, plain = "text/plain", "utf-8", True
        doc_id = rec.headers.get("WARC-Refers-To") or rec.record_id
    else:
        with contextlib.suppress(Exception):  # fastwarc fails on an empty block (TypeError): no HTTP page there
            rec.parse_http()
        content_type = _content_type(rec)
        if not content_type.startswith(HTML_TYPES):
            stats.skipped_non_html += 1
            return None, _consume(rec, stats)
        charset, plain, doc_id = _charset(rec, content_type), False, rec.record_id
    body = rec.reader.read()
    truncated = len(body) < rec.content_length  # content_length: bytes after the HTTP headers
    if truncated:
        stats.truncated_records += 1
        stats.faults.append(_short(rec, len(body)))
    return PageRecord(
        doc_id=doc_id,
        url=_clean_uri(rec.headers.get("WARC-Target-URI")),
        fetched_at=rec.record_date,
        content_type=content_type.split(";")[0].strip(),
        charset=charset,
        body=body,
        is_plain_text=plain,
        offset=rec.stream_pos,
        truncated=truncated,
    ), not truncated


def _short(rec, present: int) -> str:
    return (f"record at byte {rec.stream_pos} is cut short: {present} of {rec.content_length} "
            f"payload bytes present (WARC Content-Length {rec.headers.get('Content-Length')})")


def _consume(rec, stats: ReadStats) -> bool:
    """Skip a record's bytes; False (and a fault) when fewer are there than it claims."""
    n = rec.consume()
    if n < rec.content_length:
        stats.faults.append(_short(rec, n))
        return False
    return True


def _read_fault(exc: Exception, gz: bool, pos: int, last: int | None, head: bytes, first: bool) -> str:
    why = f"{type(exc).__name__}: {exc}"
    corrupt_gzip = gz and "gzip" in str(exc).lower()
    if first:
        if corrupt_gzip:
            return f"not gzip / truncated gzip: the gzip data is corrupt from the start ({why})"
        return f"not a WARC file: it does not start with a WARC record ({why}; {_first_bytes(head, gz)})"
    where = f"after the record at byte {last}" if last is not None else f"at byte {pos}"
    kind = "corrupt gzip data" if corrupt_gzip else "data that is not a WARC record"
    return f"{kind} {where} ({why})"


def _first_bytes(head: bytes, gz: bool) -> str:
    if gz:
        try:
            return f"gzip holding {zlib.decompressobj(31).decompress(head, 24)!r}"
        except zlib.error:
            pass
    return f"it starts with {head[:24]!r}"


def _gzip_tail_fault(stream: IO[bytes], last: int) -> str | None:
    """Why a gzip file does not end where its last record (starting at byte `last`) does; None when it does.

    (A plain file cut inside a header gives a record without Content-Length, or an error, instead.)
    """
    stream.seek(last)
    data = stream.read(SCAN_BLOCK)
    if not data.startswith(GZIP_MAGIC):
        return None  # records are not gzipped one by one (the whole file is one member): nothing to check
    offset = last
    try:
        while data:
            member = zlib.decompressobj(31)
            while not member.eof:
                if not data:
                    return f"the file ends inside the gzip member at byte {offset} (truncated gzip)"
                member.decompress(data, SCAN_BLOCK)  # output not needed; bounded memory
                data = member.unconsumed_tail or (b"" if member.eof else stream.read(SCAN_BLOCK))
            data = member.unused_data + (b"" if member.unused_data else stream.read(SCAN_BLOCK))
            offset = stream.tell() - len(data)
    except zlib.error as exc:
        return f"corrupt gzip data at the end of the file, from byte {offset} (truncated gzip? {exc})"
    return None


def _next_record_start(stream: IO[bytes], start: int, gz: bool) -> int | None:
    """The first byte at or after `start` where a WARC record begins (a gzip member holding one), or None."""
    magic = GZIP_MAGIC if gz else b"WARC/1."
    base, carry = start, b""
    while True:
        try:
            stream.seek(base + len(carry))
            chunk = stream.read(SCAN_BLOCK)
        except Exception:  # noqa: BLE001 - a stream that cannot seek cannot be resynced
            return None
        if not chunk:
            return None
        buf = carry + chunk
        i = buf.find(magic)
        while i >= 0:
            found = base + i
            if _record_at(stream, found, gz):
                return found
            i = buf.find(magic, i + 1)
        carry = buf[-(len(magic) - 1):]
        base += len(buf) - len(carry)


def _record_at(stream: IO[bytes], offset: int, gz: bool) -> bool:
    stream.seek(offset)
    data = stream.read(65536)
    if gz:
        try:
            data = zlib.decompressobj(31).decompress(data, 16)
        except zlib.error:
            return False
    return re.match(rb"WARC/1\.\d\r?\n", data) is not None
