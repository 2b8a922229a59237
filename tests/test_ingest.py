"""Ingestion of the real bundled WARC/WET files: content, faults, incrementality, fsspec."""
from __future__ import annotations

import pytest
import shutil

import fsspec
import polars as pl

from tasks.ingest import IngestParams, already_ingested, expand_inputs, ingest_file
from tasks.html_text import registered_domain
from warehouse import Warehouse
from warehouse.catalog import query


def test_sample_documents_have_real_content(ingested_sample):
    docs = query(ingested_sample, "select * from documents")
    assert docs.height >= 150
    assert docs["doc_id"].str.starts_with("<urn:uuid:").all()
    assert (docs["n_chars"] == docs["text"].str.len_chars()).all()
    forum = docs.filter(pl.col("source_file").str.ends_with("forum_pages.warc.gz"))
    assert forum.height >= 150
    assert forum["url"].str.starts_with("http").all()
    # Real Q&A threads come through with their main text.
    se = forum.filter(pl.col("domain") == "stackexchange.com")
    assert se.height >= 1 and se["text"].str.len_chars().min() > 200
    cc = docs.filter(pl.col("source_file").str.ends_with("resiliparse_warcfile.warc.gz"))
    assert cc.height == 16 and set(cc["crawl"]) == {"CC-MAIN-2020-34"}


def test_wet_conversion_records_are_read_as_text(ingested_sample):
    wet = query(ingested_sample, "select * from documents where source_file like '%.wet.gz'")
    assert wet.height == 1
    assert wet["content_type"][0] == "text/plain" and wet["crawl"][0] == "CC-MAIN-2024-22"
    # A WET record keeps the id of the response it was converted from, so WARC and WET agree.
    warc = query(ingested_sample, "select doc_id from documents where source_file like '%whirlwind.warc.gz'")
    assert wet["doc_id"][0] == warc["doc_id"][0]


def test_truncated_file_is_recorded_and_its_text_kept(ingested_sample):
    row = query(ingested_sample, "select * from crawl_files where path like '%resiliparse_clipped%'").row(0, named=True)
    assert row["status"] == "error"
    assert "cut short" in row["error"] and "88275" in row["error"]
    assert row["docs_kept"] == 1 and row["truncated_records"] == 1
    doc = query(ingested_sample, "select truncated, n_chars from documents where source_file like '%clipped%'")
    assert doc["truncated"].to_list() == [True] and doc["n_chars"][0] > 1000


def test_non_html_records_are_skipped_and_counted(ingested_sample):
    post = query(ingested_sample, "select * from crawl_files where path like '%warcio_post-test%'").row(0, named=True)
    assert post["status"] == "ok" and post["responses"] == 3 and post["skipped_non_html"] == 3
    assert post["docs_kept"] == 0
    # ClueWeb-era headers (bare LF line ends) still yield their HTML pages.
    quirk = query(ingested_sample, "select docs_kept from crawl_files where path like '%clueweb-quirk%'")
    assert quirk["docs_kept"][0] == 29


def test_corrupt_and_missing_files_do_not_stop_the_others(data_dir, sample_crawl, tmp_path):
    bad = tmp_path / "garbage.warc.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00 definitely not a gzip member" * 10)
    good = sample_crawl / "resiliparse_warcfile.warc.gz"
    wh = Warehouse(data_dir)
    params = IngestParams()
    rows = [ingest_file(wh, str(p), params) for p in (bad, good)]
    assert rows[1]["status"] == "ok" and rows[1]["docs_kept"] == 16
    assert rows[0]["docs_kept"] == 0
    crawl = query(wh, "select path, status, error from crawl_files order by path")
    assert crawl.height == 2
    assert query(wh, "select count(*) as n from documents")["n"][0] == 16


def test_reingest_is_a_noop_and_new_files_are_the_only_work(data_dir, sample_crawl, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("resiliparse_warcfile.warc.gz", "dolma_warc_sample-0000.warc.gz"):
        shutil.copy(sample_crawl / name, inputs / name)
    wh = Warehouse(data_dir)
    params = IngestParams(shard_size=5)
    fp = params.fingerprint()

    def ingest_all() -> list[str]:
        todo = [p for p in expand_inputs([str(inputs)]) if not already_ingested(wh, fp, p)]
        for p in todo:
            ingest_file(wh, p, params)
        return todo

    assert len(ingest_all()) == 2
    before = query(wh, "select count(*) as n from documents")["n"][0]
    assert before == 16 + 22
    assert len(wh.shard_ids("documents", fp)) == 4 + 5  # shard_size=5 cuts files into shards
    assert ingest_all() == []
    assert query(wh, "select count(*) as n from documents")["n"][0] == before
    shutil.copy(sample_crawl / "dolma_warc_sample-0001.warc.gz", inputs)
    done = ingest_all()
    assert [p.rsplit("/", 1)[1] for p in done] == ["dolma_warc_sample-0001.warc.gz"]
    assert query(wh, "select count(*) as n from documents")["n"][0] == before + 15


def test_interrupted_file_is_redone_without_duplicates(data_dir, sample_crawl):
    wh = Warehouse(data_dir)
    params = IngestParams(shard_size=4)
    path = str(sample_crawl / "resiliparse_warcfile.warc.gz")
    ingest_file(wh, path, params)
    # Simulate a crash after the shards but before the commit row.
    wh.shard_path("crawl_files", params.fingerprint(), next(iter(wh.shard_ids("crawl_files", params.fingerprint())))).unlink()
    assert not already_ingested(wh, params.fingerprint(), path)
    ingest_file(wh, path, params)
    n = query(wh, "select count(*) as n, count(distinct doc_id) as d from documents").row(0, named=True)
    assert n == {"n": 16, "d": 16}


def test_fsspec_urls_are_read(data_dir, sample_crawl):
    fs = fsspec.filesystem("memory")
    fs.pipe("/crawl/seg-1/resiliparse_warcfile.warc.gz", (sample_crawl / "resiliparse_warcfile.warc.gz").read_bytes())
    paths = expand_inputs(["memory://crawl/seg-1"])
    assert paths == ["memory:///crawl/seg-1/resiliparse_warcfile.warc.gz"]
    row = ingest_file(Warehouse(data_dir), paths[0], IngestParams())
    assert row["status"] == "ok" and row["docs_kept"] == 16 and row["checksum"].startswith("sha256:")


def test_registered_domain_is_public_suffix_aware():
    assert registered_domain("https://forums.bbc.co.uk/thread/1") == "bbc.co.uk"
    assert registered_domain("https://math.stackexchange.com/q/1") == "stackexchange.com"
    assert registered_domain("https://someone.github.io/post") == "someone.github.io"


def test_common_crawl_listing_expands_relative_to_its_base(data_dir, sample_crawl, tmp_path):
    import gzip

    from tasks.ingest import expand_inputs, read_listing

    listing = tmp_path / "warc.paths.gz"
    names = ["dolma_warc_sample-0000.warc.gz", "warcio_example.warc.gz"]
    with gzip.open(listing, "wt") as f:
        f.write("\n".join(names) + "\n")
    assert read_listing(str(listing)) == [f"https://data.commoncrawl.org/{n}" for n in names]  # Common Crawl's layout
    assert expand_inputs([str(listing)], listing_base=str(sample_crawl)) == [str(sample_crawl / n) for n in names]
    with pytest.raises(FileNotFoundError, match="input not found"):
        expand_inputs([str(listing)], listing_base=str(tmp_path))  # a listed file that is not there is an error
