#!/usr/bin/env python
"""Build data/eval/pages.warc.gz, the hand-labelled recall evaluation set.

Usage:
    .venv/bin/python data/eval/build_eval.py /path/to/evalsrc

The argument is a source folder holding ``manifest.tsv`` (columns ``url`` and
``file``, the file path relative to the folder) and the saved HTML pages it
names. The pages and labels are listed in ``data/eval/labels.tsv``; every URL
there must have a file in the manifest. The script runs only when the set is
rebuilt, never at run time. EVALUATION ONLY: these pages must never be used to
train a model.

Output layout (the same as data/build_sample.py uses for the sample): one
WARC/1.0 file, every record gzipped separately, a leading ``warcinfo`` record,
then one ``response`` record per page sorted by URL, each with an
``HTTP/1.1 200 OK`` header block, ``Content-Type: text/html; charset=utf-8``
and ``Content-Length``. Bodies are re-encoded to UTF-8. Dates are fixed,
record ids are uuid5(NAMESPACE_URL, url), so a rebuild is byte-identical.

After writing, the file is read back with FastWARC: all block and payload
digests must verify, the URLs must equal labels.tsv, none may occur in the
bundled sample (data/sample/crawl), and main-content text must be non-empty
for at least 90% of the pages.
"""

from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # data/: the shared WARC writer
from warc_pages import read_back, write_warc  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "pages.warc.gz"
LABELS = HERE / "labels.tsv"
SAMPLE_GLOB = str(HERE.parent / "sample" / "crawl" / "*.warc*")

SET_NAME = "webinstruct/data/eval/pages.warc.gz"


def read_tsv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))


def to_utf8(raw: bytes) -> bytes:
    """Decode a saved page (UTF-8, else its declared charset, else cp1252) and re-encode as UTF-8."""
    try:
        return raw.decode("utf-8").encode("utf-8")
    except UnicodeDecodeError:
        pass
    m = re.search(rb"charset=[\"']?([A-Za-z0-9_-]+)", raw[:4096])
    if m:
        try:
            return raw.decode(m.group(1).decode("ascii"), errors="replace").encode("utf-8")
        except LookupError:
            pass
    return raw.decode("cp1252", errors="replace").encode("utf-8")


def load_pages(src: Path) -> list[dict]:
    labels = read_tsv(LABELS)
    manifest = {row["url"]: row["file"] for row in read_tsv(src / "manifest.tsv")}
    urls = [row["url"] for row in labels]
    if len(set(urls)) != len(urls):
        raise SystemExit("labels.tsv lists a URL more than once")
    pages = []
    for url in sorted(urls):
        if url not in manifest:
            raise SystemExit(f"no source file for {url}")
        body = to_utf8((src / manifest[url]).read_bytes())
        pages.append({"url": url, "html": body})
    return pages


def write_set(pages: list[dict], out: Path) -> None:
    write_warc(pages, out, SET_NAME, "data/eval/build_eval.py",
               f"webinstruct recall evaluation set: {len(pages)} real web pages, "
               "hand-labelled edu_qa / other (see data/eval/labels.tsv and README.md). "
               "EVALUATION ONLY, never for training. Third-party web content from public "
               "benchmark and test-fixture repositories, credited in data/eval/README.md. "
               "Dates are fixed, not crawl dates.")


def sample_urls() -> set[str]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    kinds = (WarcRecordType.response | WarcRecordType.resource
             | WarcRecordType.revisit | WarcRecordType.conversion)
    urls: set[str] = set()
    for path in sorted(glob.glob(SAMPLE_GLOB)):
        with open(path, "rb") as fh:
            for rec in ArchiveIterator(fh, record_types=kinds):
                url = rec.headers.get("WARC-Target-URI")
                if url:
                    urls.add(url.strip("<>"))
    return urls


def verify(out: Path) -> None:
    label_urls = [row["url"] for row in read_tsv(LABELS)]
    n_info, urls, empty = read_back(out)
    if n_info != 1:
        raise SystemExit(f"expected one warcinfo record, read {n_info}")
    if urls != sorted(label_urls):
        raise SystemExit("response URLs differ from labels.tsv")
    overlap = set(urls) & sample_urls()
    if overlap:
        raise SystemExit(f"{len(overlap)} URLs also occur in data/sample/crawl: {sorted(overlap)[:3]}")
    for url in empty:
        print(f"  no main text: {url}")
    n_text = len(urls) - len(empty)
    if n_text < 0.9 * len(urls):
        raise SystemExit(f"main text for only {n_text}/{len(urls)} pages")
    print(f"verified: {len(urls)} responses, all digests ok, URLs = labels.tsv, "
          f"no overlap with the sample, {n_text}/{len(urls)} pages with main text")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="folder with manifest.tsv and the saved pages")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--no-verify", action="store_true")
    args = ap.parse_args(argv)

    pages = load_pages(args.source)
    write_set(pages, args.out)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, {len(pages)} pages, sha256 {digest})")
    if not args.no_verify:
        verify(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
