"""Realistic bench corpora, built deterministically from a seed and cached under bench/.cache/.

Pages: every HTML response of the bundled real crawl files (data/sample/crawl, data/eval/pages.warc.gz:
453 pages, 153 kB of HTML on average) replicated with variations into real WARC.gz files, one
gzip member per record as Common Crawl writes them. Each copy gets a new WARC-Record-ID, date and
URL (a mirror host and a query string), its numbers in text nodes redrawn and its paragraphs
reordered, so the copies are distinct texts that stay near duplicates of their page (as mirrors
and re-crawls are). The corpus is `--docs` documents (default 50,000) in files of `PER_FILE`;
file k depends only on (seed, k), so a bench that reads the first N documents builds only the
files it needs.

Pairs: the bundled real questions and answers (GSM8K train, AQuA-RAT, SVAMP: 8,981 pairs)
replicated to `--pairs` (default 60,000): the real pairs once (the first 15% of n of them below
60,000 pairs), then per pair, at random:
  55% a new question: the first half of one real question and the second half of another;
  20% a near duplicate: one word replaced, deleted or inserted, or one number changed;
  15% an exact duplicate after normalization: case, spacing or punctuation changed;
  10% a real question with its numbers redrawn (a template twin);
and 0.5% of the pairs carry a GSM8K or MATH *test* question (contamination to find).

    .venv/bin/python bench/corpus.py [--docs 50000] [--pairs 60000] [--seed 0]
"""
from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import random
import re
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(__file__).resolve().parent / ".cache"
PER_FILE = 1000
SOURCES = [*sorted((ROOT / "data" / "sample" / "crawl").glob("*.warc.gz")), ROOT / "data" / "eval" / "pages.warc.gz"]
TEXT_NODE = re.compile(rb">([^<>]{2,})<")
PARAGRAPH = re.compile(rb"<p[\s>].*?</p>", re.S | re.I)
DIGITS = re.compile(rb"\d")


def base_pages() -> list[tuple[str, bytes]]:
    """(url, html bytes) of every HTML response in the bundled crawl files, in a fixed order."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    pages = []
    for path in SOURCES:
        with path.open("rb") as fh:
            for rec in ArchiveIterator(fh, record_types=WarcRecordType.response, parse_http=True):
                if (rec.http_content_type or "").startswith("text/html") and rec.content_length > 0:
                    url = rec.headers.get("WARC-Target-URI") or f"https://example.org/{len(pages)}"
                    body = rec.reader.read()
                    if len(body) > 512:
                        pages.append((url, body))
    return pages


def vary_html(html: bytes, rng: random.Random) -> bytes:
    """New numbers in text nodes, paragraphs reordered: a distinct page, still a near duplicate."""
    def redraw(m: re.Match) -> bytes:
        text = m.group(1)
        if rng.random() < 0.5:
            text = DIGITS.sub(lambda _: str(rng.randrange(10)).encode(), text)
        return b">" + text + b"<"

    html = TEXT_NODE.sub(redraw, html)
    paras = list(PARAGRAPH.finditer(html))
    if len(paras) >= 2:
        blocks = [m.group(0) for m in paras]
        rng.shuffle(blocks)
        out, last = [], 0
        for m, block in zip(paras, blocks):
            out += [html[last:m.start()], block]
            last = m.end()
        html = b"".join(out) + html[last:]
    return html


def warc_record(url: str, html: bytes, rng: random.Random, when: datetime) -> bytes:
    http = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"Content-Length: " + str(len(html)).encode() + b"\r\n\r\n" + html)
    digest = base64.b32encode(hashlib.sha1(http).digest()).decode()
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:{uuid.UUID(int=rng.getrandbits(128))}>\r\n"
            f"WARC-Date: {when:%Y-%m-%dT%H:%M:%SZ}\r\nWARC-Target-URI: {url}\r\n"
            f"Content-Type: application/http; msgtype=response\r\nWARC-Identified-Payload-Type: text/html\r\n"
            f"WARC-Block-Digest: sha1:{digest}\r\n"
            f"Content-Length: {len(http)}\r\n\r\n").encode()
    return gzip.compress(head + http + b"\r\n\r\n", compresslevel=6, mtime=0)


def _mirror(url: str, k: int) -> str:
    scheme, _, rest = url.partition("://")
    host, _, path = rest.partition("/")
    return f"{scheme or 'https'}://mirror{k}.{host}/{path}{'&' if '?' in path else '?'}copy={k}"


def warc_files(docs: int, seed: int = 0) -> list[Path]:
    """The corpus files holding the first `docs` documents (built on first use, then cached)."""
    folder = CACHE / f"pages-s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"corpus-{k:05d}.warc.gz" for k in range(-(-docs // PER_FILE))]
    pages = None
    for k, path in enumerate(files):
        if path.exists():
            continue
        pages = pages or base_pages()
        rng = random.Random(f"{seed}-{k}")
        t0 = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(days=k)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            for i in range(PER_FILE):
                url, html = pages[rng.randrange(len(pages))]
                fh.write(warc_record(_mirror(url, k * PER_FILE + i), vary_html(html, rng), rng,
                                     t0 + timedelta(seconds=i)))
        tmp.rename(path)
    return files


# ---- pairs ----------------------------------------------------------------------------------

def real_pairs() -> pl.DataFrame:
    seeds = ROOT / "data" / "seeds"
    gsm = pl.read_ndjson(seeds / "gsm8k_train.jsonl").select("question", "answer")
    aqua = pl.concat([pl.read_ndjson(seeds / f).select("question", pl.col("rationale").alias("answer"))
                      for f in ("aqua_rat_dev.json", "aqua_rat_test.json")])
    svamp = pl.DataFrame(json.loads((seeds / "svamp.json").read_text())).select(
        (pl.col("Body") + " " + pl.col("Question")).alias("question"),
        (pl.col("Equation") + " = " + pl.col("Answer").cast(pl.String)).alias("answer"))
    return pl.concat([gsm, aqua, svamp])


def _benchmark_questions() -> list[str]:
    bench = ROOT / "data" / "benchmarks"
    gsm = pl.read_ndjson(bench / "gsm8k_test.jsonl")["question"].to_list()
    math = pl.read_ndjson(bench / "math_test.jsonl", infer_schema_length=None)["problem"].to_list()
    return gsm + math


def _redraw_numbers(text: str, rng: random.Random) -> str:
    return re.sub(r"\d+", lambda m: str(rng.randrange(2, 10 ** len(m.group(0)))), text)


def _near(q: str, rng: random.Random) -> str:
    w = q.split(" ")
    i = rng.randrange(len(w))
    kind = rng.randrange(4)
    if kind == 0:
        w[i] = rng.choice(["apple", "seven", "quickly", "Tom", "blue", "exactly"])
    elif kind == 1 and len(w) > 3:
        del w[i]
    elif kind == 2:
        w.insert(i, rng.choice(["really", "also", "then", "now"]))
    else:
        nums = [j for j, x in enumerate(w) if any(c.isdigit() for c in x)]
        if nums:
            j = rng.choice(nums)
            w[j] = _redraw_numbers(w[j], rng)
        else:
            w[i] = w[i].upper()
    return " ".join(w)


def _exact(q: str, rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return q.upper() if rng.random() < 0.5 else q.lower()
    if kind == 1:
        return "  " + re.sub(" ", lambda _: rng.choice([" ", "  ", "\n"]), q) + " "
    return re.sub(r"[?.,!]", lambda _: rng.choice(["!", ";", " .", "?"]), q)


def pairs(n: int = 60_000, seed: int = 0) -> pl.DataFrame:
    """refined_id, question, answer: `n` pairs (cached as Parquet)."""
    path = CACHE / f"pairs-n{n}-s{seed}.parquet"
    if path.exists():
        return pl.read_parquet(path)
    base = real_pairs()
    # the real pairs are 15% of any corpus (all 8,981 of them from 60k pairs up): the same share of
    # duplicates at every size, so a small corpus is a fair sample of a big one
    base = base[: max(1, min(base.height, round(n * 0.15)))]
    qs, ans = base["question"].to_list(), base["answer"].to_list()
    bench = _benchmark_questions()
    rng = random.Random(seed)
    out_q, out_a = [], []
    for i in range(n):
        j = i % len(qs) if i < len(qs) else rng.randrange(len(qs))
        q, a = qs[j], ans[j]
        if i >= len(qs):
            r = rng.random()
            if r < 0.55:
                w, other = q.split(" "), qs[rng.randrange(len(qs))].split(" ")
                q = " ".join(w[: len(w) // 2] + other[len(other) // 2:])
            elif r < 0.75:
                q = _near(q, rng)
            elif r < 0.90:
                q = _exact(q, rng)
            else:
                q, a = _redraw_numbers(q, rng), _redraw_numbers(a, rng)
        if rng.random() < 0.005:
            q = bench[rng.randrange(len(bench))] if rng.random() < 0.5 else q + " " + bench[rng.randrange(len(bench))]
        out_q.append(q)
        out_a.append(a)
    df = pl.DataFrame({"refined_id": [f"r{i:08d}" for i in range(n)], "question": out_q, "answer": out_a})
    CACHE.mkdir(parents=True, exist_ok=True)
    df.write_parquet(path.with_suffix(".tmp"))
    path.with_suffix(".tmp").rename(path)
    return df


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=50_000)
    ap.add_argument("--pairs", type=int, default=60_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    files = warc_files(args.docs, args.seed)
    size = sum(f.stat().st_size for f in files)
    print(f"{args.docs} documents in {len(files)} WARC.gz files, {size / 1e9:.2f} GB, under {files[0].parent}")
    df = pairs(args.pairs, args.seed)
    print(f"{df.height} pairs, mean question {df['question'].str.len_chars().mean():.0f} chars")


if __name__ == "__main__":
    sys.exit(main())
