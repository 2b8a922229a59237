"""Write saved pages as a reproducible WARC and read it back: shared by the data build scripts.

Layout: WARC/1.0, every record gzipped separately, one leading ``warcinfo`` record, then one
``response`` per page in the given order, each with an ``HTTP/1.1 200 OK`` header block
(``Content-Type: text/html; charset=utf-8``). Dates are fixed and record ids are
uuid5(NAMESPACE_URL, url), so a rebuild is byte-identical. Used only to rebuild bundled data,
never at run time.
"""
from __future__ import annotations

import uuid
from io import BytesIO
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

WARC_DATE = "2024-06-01T00:00:00Z"
HTTP_DATE = "Sat, 01 Jun 2024 00:00:00 GMT"


def record_id(key: str) -> str:
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, key)}>"


def warcinfo(script: str, description: str, set_name: str) -> str:
    """The warcinfo text of a set built by `script` (lines end in CRLF)."""
    return (f"software: webinstruct {script} (warcio)\r\nformat: WARC File Format 1.0\r\n"
            f"description: {description}\r\nisPartOf: {set_name}\r\n")


def write_warc(pages: list[dict], out: Path, set_name: str, script: str, description: str) -> None:
    """pages: {url, html (UTF-8 bytes)}; the warcinfo record names `script` and `description`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    payload = warcinfo(script, description, set_name).encode("utf-8")
    with open(tmp, "wb") as fh:
        writer = WARCWriter(fh, gzip=True, warc_version="1.0")
        warcinfo_headers = StatusAndHeaders("", [
            ("WARC-Type", "warcinfo"), ("WARC-Record-ID", record_id(set_name)),
            ("WARC-Filename", out.name), ("WARC-Date", WARC_DATE)], protocol="WARC/1.0")
        writer.write_record(writer.create_warc_record(
            "", "warcinfo", payload=BytesIO(payload), length=len(payload), warc_headers=warcinfo_headers))
        for page in pages:
            body: bytes = page["html"]
            http_headers = StatusAndHeaders("200 OK", [
                ("Date", HTTP_DATE), ("Content-Type", "text/html; charset=utf-8"),
                ("Content-Length", str(len(body))), ("Connection", "close")], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(
                page["url"], "response", payload=BytesIO(body), length=len(body),
                warc_headers_dict={"WARC-Type": "response", "WARC-Record-ID": record_id(page["url"]),
                                   "WARC-Target-URI": page["url"], "WARC-Date": WARC_DATE,
                                   "WARC-Warcinfo-ID": record_id(set_name)},
                http_headers=http_headers))
    tmp.replace(out)


def read_back(out: Path) -> tuple[int, list[str], list[str]]:
    """(warcinfo records, response URLs, URLs without main text); every digest must verify."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from resiliparse.extract.html2text import extract_plain_text

    n_info, urls, empty = 0, [], []
    with open(out, "rb") as fh:
        # parse_http=False: FastWARC verifies a block digest only before the HTTP header block is read
        for rec in ArchiveIterator(fh, parse_http=False):
            if rec.record_type == WarcRecordType.warcinfo:
                n_info += 1
            if not rec.verify_block_digest():
                raise SystemExit(f"block digest mismatch: {rec.record_id}")
            if rec.record_type != WarcRecordType.response:
                continue
            rec.parse_http()
            if rec.http_headers.status_code != 200:
                raise SystemExit(f"bad HTTP status: {rec.record_id}")
            if not rec.verify_payload_digest():
                raise SystemExit(f"payload digest mismatch: {rec.record_id}")
            url = rec.headers.get("WARC-Target-URI")
            urls.append(url)
            if not extract_plain_text(rec.reader.read().decode("utf-8"), main_content=True).strip():
                empty.append(url)
    return n_info, urls, empty
