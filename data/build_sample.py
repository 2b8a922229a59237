#!/usr/bin/env python
"""Build data/sample/crawl/forum_pages.warc.gz from real saved web pages.

Usage:
    .venv/bin/python data/build_sample.py /work/shared/data

The argument is the shared source directory (only the output is committed; the
project never reads the source directory at run time). Inputs:

* ``html/magic-html-forum/*.html`` with URLs from ``html/magic-html-forum/base.json``
  (opendatalab/magic-html, benchmark/data/forum, Apache-2.0)
* ``html/harvest/*.json`` with their ``url`` and ``html`` fields
  (fhgr/harvest, corpus/goldDocuments, Apache-2.0)

Output: one WARC/1.0 file, every record gzipped separately: a leading
``warcinfo`` record, then one ``response`` record per page (HTTP/1.1 200 header
block, ``Content-Type: text/html; charset=utf-8``), sorted by URL. Dates, record
ids (uuid5 of the URL) and order are fixed, so a rebuild is byte-identical.
The two upstream LICENSE files are copied to ``data/sample/licenses/``.

After writing, the file is read back with FastWARC (all block digests must
verify) and Resiliparse main-content extraction is run on every page.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import uuid
from io import BytesIO
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "sample" / "crawl" / "forum_pages.warc.gz"
LICENSE_DIR = HERE / "sample" / "licenses"

WARC_DATE = "2024-06-01T00:00:00Z"
HTTP_DATE = "Sat, 01 Jun 2024 00:00:00 GMT"
SAMPLE_NAME = "webinstruct/data/sample/crawl/forum_pages.warc.gz"


def record_id(key: str) -> str:
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, key)}>"


def load_pages(src: Path) -> tuple[list[dict], list[str]]:
    """Return (pages, skipped); each page is {url, html (bytes), source}."""
    pages: list[dict] = []
    skipped: list[str] = []

    magic = src / "html" / "magic-html-forum"
    base = json.loads((magic / "base.json").read_text(encoding="utf-8"))
    for path in sorted(magic.glob("*.html")):
        key = path.stem
        url = (base.get(key) or {}).get("url", "").strip()
        html = path.read_bytes()
        if not url:
            skipped.append(f"{path.name}: no URL in base.json")
            continue
        if not html.strip():
            skipped.append(f"{path.name}: empty HTML")
            continue
        # the saved files are UTF-8; re-encode so the declared charset is true
        html = html.decode("utf-8", errors="replace").encode("utf-8")
        pages.append({"url": url, "html": html, "source": "magic-html-forum/" + path.name})

    harvest = src / "html" / "harvest"
    for path in sorted(harvest.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        url = (doc.get("url") or "").strip()
        html = doc.get("html") or ""
        if not url:
            skipped.append(f"harvest/{path.name}: no url")
            continue
        if not html.strip():
            skipped.append(f"harvest/{path.name}: empty html")
            continue
        pages.append({"url": url, "html": html.encode("utf-8"), "source": "harvest/" + path.name})

    # sorted, one record per URL (first source wins on a duplicate URL)
    seen: set[str] = set()
    unique = []
    for page in sorted(pages, key=lambda p: (p["url"], p["source"])):
        if page["url"] in seen:
            skipped.append(f"{page['source']}: duplicate URL {page['url']}")
            continue
        seen.add(page["url"])
        unique.append(page)
    return unique, skipped


def write_warc(pages: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as fh:
        writer = WARCWriter(fh, gzip=True, warc_version="1.0")

        info = (
            "software: webinstruct data/build_sample.py (warcio)\r\n"
            "format: WARC File Format 1.0\r\n"
            f"description: webinstruct bundled sample: {len(pages)} real forum / Q&A pages "
            "saved by opendatalab/magic-html (benchmark/data/forum) and fhgr/harvest "
            "(corpus/goldDocuments), both Apache-2.0. Third-party web content, "
            "for tests and demos only. Dates are fixed, not crawl dates.\r\n"
            f"isPartOf: {SAMPLE_NAME}\r\n"
        ).encode("utf-8")
        warcinfo_headers = StatusAndHeaders(
            "",
            [
                ("WARC-Type", "warcinfo"),
                ("WARC-Record-ID", record_id(SAMPLE_NAME)),
                ("WARC-Filename", out.name),
                ("WARC-Date", WARC_DATE),
            ],
            protocol="WARC/1.0",
        )
        rec = writer.create_warc_record(
            "", "warcinfo", payload=BytesIO(info), length=len(info),
            warc_headers=warcinfo_headers,
        )
        writer.write_record(rec)

        for page in pages:
            body: bytes = page["html"]
            http_headers = StatusAndHeaders(
                "200 OK",
                [
                    ("Date", HTTP_DATE),
                    ("Content-Type", "text/html; charset=utf-8"),
                    ("Content-Length", str(len(body))),
                    ("Connection", "close"),
                ],
                protocol="HTTP/1.1",
            )
            rec = writer.create_warc_record(
                page["url"],
                "response",
                payload=BytesIO(body),
                length=len(body),
                warc_headers_dict={
                    "WARC-Type": "response",
                    "WARC-Record-ID": record_id(page["url"]),
                    "WARC-Target-URI": page["url"],
                    "WARC-Date": WARC_DATE,
                    "WARC-Warcinfo-ID": record_id(SAMPLE_NAME),
                },
                http_headers=http_headers,
            )
            writer.write_record(rec)
    tmp.replace(out)


def verify(out: Path, expected: int) -> int:
    """Read back with FastWARC; returns the number of pages with main text."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from resiliparse.extract.html2text import extract_plain_text

    n_info = n_resp = n_text = 0
    empty: list[str] = []
    # parse_http=False: FastWARC can only verify the block digest before the
    # HTTP header block has been consumed, so parse it after verifying.
    for rec in ArchiveIterator(open(out, "rb"), parse_http=False):
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
        n_resp += 1
        body = rec.reader.read()
        text = extract_plain_text(body.decode("utf-8"), main_content=True)
        if text.strip():
            n_text += 1
        else:
            empty.append(rec.headers.get("WARC-Target-URI"))
    if n_info != 1 or n_resp != expected:
        raise SystemExit(f"read back {n_info} warcinfo / {n_resp} responses, expected 1 / {expected}")
    for url in empty:
        print(f"  no main text: {url}")
    return n_text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="shared data directory (holds html/)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--no-verify", action="store_true")
    args = ap.parse_args(argv)

    pages, skipped = load_pages(args.source)
    for s in skipped:
        print(f"skipped {s}")
    write_warc(pages, args.out)

    LICENSE_DIR.mkdir(parents=True, exist_ok=True)
    for sub in ("magic-html-forum", "harvest"):
        lic = args.source / "html" / sub / "LICENSE"
        if lic.exists():
            shutil.copyfile(lic, LICENSE_DIR / f"{sub}.LICENSE")

    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, {len(pages)} pages, sha256 {digest})")
    if not args.no_verify:
        n_text = verify(args.out, len(pages))
        print(f"verified: all digests ok, {n_text}/{len(pages)} pages with non-empty main text")
    return 0


if __name__ == "__main__":
    sys.exit(main())
