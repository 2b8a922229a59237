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
from pathlib import Path

from warc_pages import read_back, write_warc

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "sample" / "crawl" / "forum_pages.warc.gz"
LICENSE_DIR = HERE / "sample" / "licenses"

SAMPLE_NAME = "webinstruct/data/sample/crawl/forum_pages.warc.gz"


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


def write_sample(pages: list[dict], out: Path) -> None:
    write_warc(pages, out, SAMPLE_NAME, "data/build_sample.py",
               f"webinstruct bundled sample: {len(pages)} real forum / Q&A pages "
               "saved by opendatalab/magic-html (benchmark/data/forum) and fhgr/harvest "
               "(corpus/goldDocuments), both Apache-2.0. Third-party web content, "
               "for tests and demos only. Dates are fixed, not crawl dates.")


def verify(out: Path, expected: int) -> int:
    """Read back with FastWARC; returns the number of pages with main text."""
    n_info, urls, empty = read_back(out)
    if n_info != 1 or len(urls) != expected:
        raise SystemExit(f"read back {n_info} warcinfo / {len(urls)} responses, expected 1 / {expected}")
    for url in empty:
        print(f"  no main text: {url}")
    return len(urls) - len(empty)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="shared data directory (holds html/)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--no-verify", action="store_true")
    args = ap.parse_args(argv)

    pages, skipped = load_pages(args.source)
    for s in skipped:
        print(f"skipped {s}")
    write_sample(pages, args.out)

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
