"""Bad input: broken, odd and wrong crawl files are recorded with their reason; the rest is processed.

The files are built at test time from real records of the bundled sample (tests/faults/bad_warcs.py)
and go through the real ingest code: `ingest_file` into a fresh warehouse, and once all together
through the `ingest` Prefect flow.
"""
from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.ingest import IngestParams, expand_inputs, file_key, ingest_file
from tests.faults import bad_warcs as bw
from warehouse import Warehouse
from warehouse.catalog import query

GOOD_FOR_FLOW = bw.SAMPLE / "dolma_warc_sample-0000.warc.gz"  # 22 real HTML pages
WET = bw.SAMPLE / "ccwhirlwind_whirlwind.warc.wet.gz"
WAT = bw.SAMPLE / "ccwhirlwind_whirlwind.warc.wat.gz"
BIG_PAGE = "twenty-mb-page.warc.gz"


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory) -> Path:
    """Every bad file, the 20 MB page, the sample's WET and WAT files and one good sample file."""
    folder = tmp_path_factory.mktemp("bad-input")
    for case in bw.CASES:
        bw.write(folder, case)
    (folder / BIG_PAGE).write_bytes(bw.big_page())
    for path in (GOOD_FOR_FLOW, WET, WAT):
        shutil.copy(path, folder / path.name)
    return folder


def docs_of(wh: Warehouse, path: str) -> pl.DataFrame:
    fp = IngestParams().fingerprint()
    shards = [wh.shard_path("documents", fp, s) for s in wh.shard_ids("documents", fp) if s.startswith(file_key(path))]
    return pl.concat([pl.read_parquet(s) for s in shards]) if shards else wh.spec("documents").empty()


def stored_row(wh: Warehouse, path: str) -> dict:
    shard = wh.shard_path("crawl_files", IngestParams().fingerprint(), file_key(path))
    return pl.read_parquet(shard).row(0, named=True)


def described(row: dict, docs: pl.DataFrame) -> str:
    text = f"crawl_files status={row['status']}"
    if row["error"]:
        text += f": {row['error'][:160]}"
    return text + (f"; {docs.height} documents kept ({int(docs['truncated'].sum())} flagged truncated), "
                   f"skipped_empty={row['skipped_empty']}, skipped_non_html={row['skipped_non_html']}")


def _details(case: bw.Bad, docs: pl.DataFrame) -> str:
    if case.name == "charsets.warc.gz":
        found = [u.rsplit("/", 1)[1] for u, t in zip(docs["url"], docs["text"]) if bw.RU_WORD in t or bw.DE_WORD in t]
        return f"; real words decoded for: {', '.join(found)} (the others kept as mojibake, as labelled)"
    if case.name == "odd-urls.warc.gz":
        return f"; domains: {sorted(set(map(str, docs['domain'])))}"
    return ""


@pytest.mark.parametrize("case", bw.CASES, ids=[c.name for c in bw.CASES])
def test_bad_file_is_recorded_with_its_reason_and_the_rest_processed(case, bad_folder, tmp_path, reliability):
    wh = Warehouse(tmp_path / "wh")
    path = str(bad_folder / case.name)
    row = ingest_file(wh, path, IngestParams())  # must not raise
    docs = docs_of(wh, path)
    reliability(case.fault, case.expected, described(row, docs) + _details(case, docs))

    assert stored_row(wh, path)["status"] == row["status"] == case.status, row
    if case.status == "error":
        assert row["error"] and re.search(case.reason, row["error"]), row["error"]
    else:
        assert row["error"] is None
    assert row["docs_kept"] == docs.height == case.docs
    assert docs["text"].str.len_chars().min() is None or docs["text"].str.len_chars().min() > 0

    ids = set(docs["doc_id"])
    if case.docs >= bw.GOOD_PAGES and case.status == "error":  # garbage in the middle: every real page kept
        assert bw.good_doc_ids() <= ids
    if case.name.startswith(("truncated", "lying")):
        assert docs["truncated"].sum() == (0 if "gzip-header" in case.name else 1)
    if case.name == "charsets.warc.gz":
        text = dict(zip(docs["url"], docs["text"]))
        for label in ("right-label", "unknown-label", "garbled-label", "no-label"):
            assert bw.RU_WORD in text[f"http://01spb.ru/{label}"], label
        assert bw.DE_WORD in text["http://hifi-forum.de/cp1252-labelled-latin-1"]
        assert bw.DE_WORD in text["http://hifi-forum.de/cp1252-labelled-utf-8"]  # falls back to cp1252
    if case.name == "empty-and-non-html.warc.gz":
        assert (row["skipped_empty"], row["skipped_non_html"]) == (2, 6)  # empty + blank; 3 JSON, PDF, none, no block
        assert bw.good_doc_ids() & ids  # the real page after them
    if case.name == "all-script.warc.gz":
        assert row["skipped_empty"] == 1 and "only-scripts" not in " ".join(docs["url"])
    if case.name == "odd-urls.warc.gz":
        urls = docs["url"].to_list()
        assert "http://wget.example.org/wrapped" in urls and urls.count("") == 2  # empty and missing URI
        domains = dict(zip(docs["url"], docs["domain"]))
        assert domains["http://пример.рф/путь"] == "пример.рф"
        assert domains["http://example.com/caf%C3%A9?q=%E2%9C%93&x=%zz"] == "example.com"
        assert domains[""] is None


def test_twenty_megabyte_page_is_processed(bad_folder, tmp_path, reliability):
    wh = Warehouse(tmp_path / "wh")
    path = str(bad_folder / BIG_PAGE)
    started = time.perf_counter()
    row = ingest_file(wh, path, IngestParams())
    seconds = time.perf_counter() - started
    docs = docs_of(wh, path)
    big = docs.filter(pl.col("url").str.ends_with("/q/huge"))
    reliability("a 20 MB HTML page (a real thread repeated), then a normal page",
                "processed like any page: status ok, both pages kept, in seconds",
                f"{described(row, docs)}; the big page gave {big['n_chars'][0]:,} characters of main text; "
                f"{seconds:.1f} s")
    assert row["status"] == "ok" and docs.height == 2
    assert big["n_chars"][0] > 1_000_000
    assert seconds < 60


def test_wet_and_wat_files(tmp_path, reliability):
    wh = Warehouse(tmp_path / "wh")
    wet, wat = (ingest_file(wh, str(p), IngestParams()) for p in (WET, WAT))
    reliability("a WET file (text conversions, no HTML)", "its text records are the documents",
                f"status={wet['status']}, {wet['docs_kept']} document(s) from {wet['responses']} conversion record(s)")
    reliability("a WAT file (metadata records only) given explicitly",
                "status ok, nothing taken from it: crawl_files shows records_read and 0 pages",
                f"status={wat['status']}, records_read={wat['records_read']}, pages={wat['responses']}, "
                f"documents={wat['docs_kept']}")
    assert wet["status"] == "ok" and wet["docs_kept"] == 1
    assert docs_of(wh, str(WET))["content_type"].to_list() == ["text/plain"]
    assert wat["status"] == "ok" and wat["responses"] == 0 and wat["docs_kept"] == 0
    assert WAT.name not in " ".join(expand_inputs([str(WAT.parent)]))  # a folder's WAT files are not ingested


def test_folder_without_warc_files_is_a_clear_error(tmp_path, reliability):
    folder = tmp_path / "no-warcs"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a crawl file")
    assert expand_inputs([str(folder)]) == []  # a schedule watching a folder that is still empty has nothing new
    env = {**os.environ, "WEBINSTRUCT_DATA": str(tmp_path / "wh")}
    env.pop("PREFECT_HOME", None)
    cli = subprocess.run([str(Path(sys.executable).parent / "webinstruct"), "ingest", str(folder)],
                         check=False, env=env, capture_output=True, text=True, timeout=300)
    reliability("a folder with no WARC/WET file given as input on the command line",
                "a one-line error naming the folder, no traceback, nothing ingested (a scheduled run watching "
                "an empty folder just finds nothing new)",
                f"the CLI exited {cli.returncode} with: "
                f"{cli.stderr.strip().splitlines()[0] if cli.stderr.strip() else '(nothing)'}")
    assert cli.returncode == 2 and f"no crawl files in {folder}" in cli.stderr
    assert "Traceback" not in cli.stderr + cli.stdout
    assert not (tmp_path / "wh" / "documents").exists()


def test_ingest_flow_over_a_folder_of_every_bad_file(prefect_env, bad_folder, tmp_path, reliability):
    from flows.ingest import ingest_flow
    from flows.settings import CrawlSource

    wh = Warehouse(tmp_path / "wh")
    source = CrawlSource(paths=[str(bad_folder), str(bad_folder / WAT.name)])  # a folder's WAT files are skipped
    summary = ingest_flow(source=source, data_dir=str(wh.root))
    files = query(wh, "select * from crawl_files")
    by_name = {Path(r["path"]).name: r for r in files.iter_rows(named=True)}
    good = query(wh, f"select doc_id from documents where source_file like '%{GOOD_FOR_FLOW.name}'")
    stage = query(wh, "select status from stage_runs where stage = 'ingest'")["status"].to_list()
    errors = [Path(p).name for p, _ in summary["errors"]]
    reliability(f"a folder of all {len(bw.CASES) + 1} bad files, WET, WAT and one good sample file, "
                "through the ingest flow",
                "the run completes; the good file's documents all kept; every bad file has a crawl_files row "
                "whose status/error names its problem",
                f"flow finished (ingest stage {stage}); {len(by_name)} crawl_files rows for "
                f"{summary['files_seen']} inputs, {len(errors)} with errors; good file: {good.height} of 22 "
                f"documents kept")

    assert stage == ["done"] and summary["files_seen"] == len(bw.CASES) + 4 == len(by_name)
    assert good.height == 22 and set(good["doc_id"]) == bw.good_doc_ids(GOOD_FOR_FLOW)
    assert by_name[GOOD_FOR_FLOW.name]["status"] == "ok"
    for case in bw.CASES:
        row = by_name[case.name]
        assert row["status"] == case.status and row["docs_kept"] == case.docs, (case.name, row)
        assert not case.reason or re.search(case.reason, row["error"]), (case.name, row["error"])
    assert sorted(errors) == sorted(c.name for c in bw.CASES if c.status == "error")
    assert by_name[BIG_PAGE]["status"] == by_name[WET.name]["status"] == by_name[WAT.name]["status"] == "ok"


# --- property-based: random bytes as whole files and as records ------------------------------

FAST = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SMALL_REAL = bw.SAMPLE / "warcio_example.warc.gz"  # 3.8 KB: 6 real records, 1 HTML page


def _mutated(data: tuple[int, bytes]) -> bytes:
    raw = SMALL_REAL.read_bytes()
    at, junk = data
    at %= len(raw)
    return raw[:at] + junk + raw[at + len(junk):]


whole_files = st.one_of(
    st.binary(max_size=3000),
    st.binary(max_size=3000).map(lambda b: b"\x1f\x8b\x08" + b),  # gzip magic, then anything
    st.binary(max_size=3000).map(lambda b: b"WARC/1.0\r\n" + b),  # a WARC start, then anything
    st.binary(max_size=3000).map(lambda b: gzip.compress(b"WARC/1.0\r\n" + b, mtime=0)),
    st.tuples(st.integers(0, 10**6), st.binary(min_size=1, max_size=64)).map(_mutated),  # a real file, overwritten
    st.integers(0, 10**6).map(lambda n: SMALL_REAL.read_bytes()[: n % 3816]),  # a real file, cut anywhere
)


def test_random_bytes_as_whole_files_never_raise(reliability):
    outcomes: Counter = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        wh = Warehouse(Path(tmp) / "wh")

        @FAST
        @given(data=whole_files, suffix=st.sampled_from([".warc", ".warc.gz"]))
        def check(data: bytes, suffix: str) -> None:
            path = Path(tmp) / f"random-{sum(outcomes.values())}{suffix}"
            path.write_bytes(data)
            row = ingest_file(wh, str(path), IngestParams())  # must not raise
            assert stored_row(wh, str(path))["status"] == row["status"]
            assert (row["status"] == "error") == bool(row["error"])
            assert row["docs_kept"] == docs_of(wh, str(path)).height
            outcomes[row["status"]] += 1

        check()
    reliability("random bytes as a whole .warc / .warc.gz file (hypothesis: pure noise, noise after gzip or WARC "
                "magic, a real file overwritten or cut anywhere)",
                "never raises; every file gets a crawl_files row, status error with a reason unless it is valid",
                f"{sum(outcomes.values())} files, no exception: {dict(outcomes)}")
    assert outcomes["error"] > 0


GOOD_PART = bw.members()[: bw.response_index(4)]  # warcinfo and the first 4 real pages with their other records


def _good_part_ids() -> set[str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "part.warc.gz"
        path.write_bytes(b"".join(GOOD_PART))
        wh = Warehouse(Path(tmp) / "wh")
        ingest_file(wh, str(path), IngestParams())
        return set(docs_of(wh, str(path))["doc_id"])


def _record(kind: str, payload: bytes, label: bytes) -> bytes:
    if kind == "raw":  # no WARC header at all: garbage between records
        return payload
    if kind == "block":  # random bytes as the whole HTTP message
        return bw.warc_record("response", payload)
    return bw.warc_record("response", bw.http_response(payload, b"text/html; charset=" + label))


def test_random_bytes_as_records_between_good_records(reliability):
    expected = _good_part_ids()
    assert len(expected) == 4
    outcomes: Counter = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        wh = Warehouse(Path(tmp) / "wh")

        @FAST
        @given(kind=st.sampled_from(["raw", "block", "html"]), payload=st.binary(max_size=4000),
               label=st.binary(max_size=12).filter(lambda b: b"\r" not in b and b"\n" not in b),
               where=st.integers(1, len(GOOD_PART)), gzipped=st.booleans())
        def check(kind: str, payload: bytes, label: bytes, where: int, gzipped: bool) -> None:
            bad = _record(kind, payload, label)
            if gzipped:
                parts = [*GOOD_PART[:where], bad if kind == "raw" else bw.gz(bad), *GOOD_PART[where:]]
            else:
                records = [gzip.decompress(m) for m in GOOD_PART]
                parts = [*records[:where], bad, *records[where:]]
            path = Path(tmp) / f"spliced-{sum(outcomes.values())}.warc{'.gz' * gzipped}"
            path.write_bytes(b"".join(parts))
            row = ingest_file(wh, str(path), IngestParams())  # must not raise
            assert stored_row(wh, str(path))["status"] == row["status"]
            kept = set(docs_of(wh, str(path))["doc_id"])
            assert expected <= kept, (kind, gzipped, where, row["error"])
            outcomes[f"{kind}: {row['status']}"] += 1

        check()
    reliability("random bytes as a record between real records (hypothesis: garbage with no header, a random HTTP "
                "message, a random HTML body with a random charset label; gzip and plain)",
                "never raises; the file is recorded; all 4 real pages around it are kept",
                f"{sum(outcomes.values())} files, no exception, every real page kept: {dict(sorted(outcomes.items()))}")
