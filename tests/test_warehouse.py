"""Warehouse: atomic shards, fingerprinted versions, current vs all, manifest, read-only SQL."""
from __future__ import annotations

import os

import polars as pl
import pytest

from warehouse import Warehouse, fingerprint
from warehouse.catalog import ReadOnlyViolation, query, write_catalog


def _docs(ids: list[str]) -> pl.DataFrame:
    return pl.DataFrame({
        "doc_id": ids, "url": [f"https://ex.org/{i}" for i in ids], "domain": ["ex.org"] * len(ids),
        "crawl": None, "fetched_at": None, "content_type": "text/html", "charset": "utf-8", "title": "t",
        "text": [f"text {i}" for i in ids], "n_chars": 6, "language": "en", "truncated": False, "source_file": "f",
        "record_offset": 0,
    })


def _run(wh: Warehouse, fp: str, shards: dict[str, list[str]]) -> str:
    rid = wh.begin_run("test", {})
    with wh.stage_run(run_id=rid, stage="ingest", fingerprint=fp, outputs=["documents"],
                      params={}, upstream=[], code_version="t"):
        for shard, ids in shards.items():
            wh.write_shard("documents", fp, shard, _docs(ids))
    wh.finish_run(rid)
    return rid


def test_fingerprint_changes_with_every_input():
    base = dict(params={"a": 1}, code_version="1", upstream=["x"], prompt="p", model="m")
    fp = fingerprint("s", **base)
    assert fp == fingerprint("s", **base)
    for change in ({"params": {"a": 2}}, {"code_version": "2"}, {"upstream": ["y"]},
                   {"prompt": "q"}, {"model": "n"}):
        assert fingerprint("s", **{**base, **change}) != fp, change
    assert fingerprint("t", **base) != fp


def test_shard_write_is_atomic_and_schema_checked(data_dir):
    wh = Warehouse(data_dir)
    path = wh.write_shard("documents", "v1", "a", _docs(["1", "2"]))
    assert path.name == "part-a.parquet"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp")]
    assert pl.read_parquet(path).columns == list(wh.spec("documents").schema)
    with pytest.raises(ValueError, match="missing columns"):
        wh.write_shard("documents", "v1", "b", _docs(["3"]).drop("url"))
    # A failed write leaves neither a shard nor a temp file behind.
    assert wh.shard_ids("documents", "v1") == ["a"]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp")]


def test_versions_side_by_side_newest_current(data_dir):
    wh = Warehouse(data_dir)
    _run(wh, "old", {"s1": ["1", "2"]})
    _run(wh, "new", {"s1": ["1", "2", "3"]})
    assert wh.current_fingerprints("documents") == ["new"]
    assert query(wh, "select count(*) as n from documents")["n"][0] == 3
    both = query(wh, "select fingerprint, count(*) as n from documents_all group by 1 order by 1")
    assert both.to_dicts() == [{"fingerprint": "new", "n": 3}, {"fingerprint": "old", "n": 2}]


def test_failed_stage_run_is_recorded_and_not_current(data_dir):
    wh = Warehouse(data_dir)
    _run(wh, "good", {"s1": ["1"]})
    rid = wh.begin_run("test", {})
    with pytest.raises(RuntimeError):
        with wh.stage_run(run_id=rid, stage="ingest", fingerprint="bad", outputs=["documents"],
                          params={}, upstream=[], code_version="t"):
            wh.write_shard("documents", "bad", "s1", _docs(["9"]))
            raise RuntimeError("boom")
    runs = query(wh, "select fingerprint, status, error from stage_runs order by started_at")
    assert runs["status"].to_list() == ["done", "failed"]
    assert "boom" in runs["error"][1]
    assert wh.current_fingerprints("documents") == ["good"]


def test_empty_tables_are_queryable_with_their_schema(data_dir):
    wh = Warehouse(data_dir)
    df = query(wh, "select * from qa_refined")
    assert df.height == 0
    assert "refined_id" in df.columns and "fingerprint" in df.columns


@pytest.mark.parametrize("sql", [
    "drop view documents",
    "create table t as select 1",
    "copy (select 1) to 'x.csv'",
    "attach 'other.db'",
    "install httpfs",
    "set threads=1",
    "pragma show_tables",
    "select 1; drop view documents",
])
def test_sql_refuses_anything_but_reads(data_dir, sql):
    wh = Warehouse(data_dir)
    with pytest.raises(ReadOnlyViolation):
        query(wh, sql)


def test_sql_cannot_read_outside_the_warehouse(data_dir):
    wh = Warehouse(data_dir)
    with pytest.raises(Exception, match="(?i)permission|disabled|not allowed"):
        query(wh, "select * from read_csv('/etc/passwd')")


def test_catalog_file_has_views_and_is_replaced_atomically(data_dir):
    import duckdb

    wh = Warehouse(data_dir)
    _run(wh, "v1", {"s1": ["1", "2"]})
    path = write_catalog(wh)
    inode = os.stat(path).st_ino
    write_catalog(wh)
    assert os.stat(path).st_ino != inode  # a new file renamed over the old one
    con = duckdb.connect(str(path), read_only=True)
    assert con.sql("select count(*) from documents").fetchall() == [(2,)]
    con.close()


def test_shards_from_before_a_column_existed_read_it_as_null(data_dir):
    """qa_extracted gained `attempt`: a warehouse written before it still queries, in SQL and in polars."""
    wh = Warehouse(data_dir)
    schema = {c: t for c, t in wh.spec("qa_extracted").schema.items() if c != "attempt"}
    old = pl.DataFrame([{"qa_id": "q1", "doc_id": "d1", "chunk": 0, "status": "ok"}], schema=schema)
    path = wh.shard_path("qa_extracted", "oldversion", "s0")
    path.parent.mkdir(parents=True)
    old.write_parquet(path)
    assert query(wh, "select qa_id, attempt from qa_extracted_all").rows() == [("q1", None)]
    assert wh.scan("qa_extracted", "oldversion").select("qa_id", "attempt").collect().rows() == [("q1", None)]
