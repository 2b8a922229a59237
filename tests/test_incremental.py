"""The incremental contract, end to end with the real embedded LLM server: a new crawl file is
carried through every stage on its own, nothing published is retracted, nothing new does no work."""
from __future__ import annotations

import shutil

import polars as pl

from warehouse import Warehouse
from warehouse.catalog import query

FIRST = ["dolma_warc_sample-0000.warc.gz", "resiliparse_warcfile.warc.gz"]
LATER = "dolma_warc_sample-0001.warc.gz"


def table(wh: Warehouse, name: str) -> pl.DataFrame:
    return query(wh, f"select * from {name}_all")


def new_rows(after: pl.DataFrame, before: pl.DataFrame, key: str) -> pl.DataFrame:
    return after.join(before.select(key), on=key, how="anti")


def run_stages(wh: Warehouse, run_id: str) -> dict[str, list[dict]]:
    runs = wh.manifest("stage_runs").filter(pl.col("run_id") == run_id)
    return {s: runs.filter(pl.col("stage") == s).to_dicts() for s in runs["stage"].unique()}


def test_new_segment_flows_through_alone_and_nothing_is_retracted(prefect_env, llm_server, sample_crawl, tmp_path):
    from flows.pipeline import pipeline_flow
    from flows.settings import CrawlSource, DomainSettings, ExportSettings, ExtractSettings

    crawl = tmp_path / "crawl"
    crawl.mkdir()
    for name in FIRST:
        shutil.copy(sample_crawl / name, crawl / name)
    wh = Warehouse(tmp_path / "wh")
    kwargs = dict(source=CrawlSource(paths=[str(crawl)]), data_dir=str(wh.root),
                  llm=llm_server.model_copy(update={"max_tokens": 64, "repair_retry": False}),
                  domains=DomainSettings(min_domain_docs=1),
                  extract=ExtractSettings(chunk_chars=500, overlap_chars=100, max_chunks=1),
                  export=ExportSettings(dir=str(tmp_path / "export")))
    first = pipeline_flow(**kwargs)
    before = {t: table(wh, t) for t in ("recall_models", "recall_scores", "domains", "qa_extracted", "qa_refined",
                                        "qa_duplicates", "dataset", "llm_calls")}
    versions = query(wh, "select stage, version from versions order by all")
    assert before["qa_extracted"].height > 0 and before["recall_models"].height == 2

    shutil.copy(sample_crawl / LATER, crawl / LATER)  # a new crawl segment arrives
    second = pipeline_flow(**kwargs)
    s2 = run_stages(wh, second["run_id"])
    new_docs = set(query(wh, f"select doc_id from documents where source_file like '%{LATER}'")["doc_id"])
    assert second["ingest"]["files_ingested"] == 1 and new_docs

    # no retraining: the pinned models score the new file; every stage kept its version
    assert all(r["shards_done"] == 0 for r in s2["recall_train"])
    assert table(wh, "recall_models").height == 2
    assert query(wh, "select stage, version from versions order by all").equals(versions)
    # only the new file's documents shard was scored, in each round
    assert [r["shards_done"] for r in s2["recall_score"]] == [1, 1]
    scored = new_rows(table(wh, "recall_scores").with_columns(k=pl.col("doc_id") + pl.col("fingerprint")),
                      before["recall_scores"].with_columns(k=pl.col("doc_id") + pl.col("fingerprint")), "k")
    assert set(scored["doc_id"]) == new_docs

    # only new documents were extracted, refined, deduplicated, decontaminated
    extracted = new_rows(table(wh, "qa_extracted"), before["qa_extracted"], "qa_id")
    assert set(extracted["doc_id"]) <= new_docs
    recalled_new = set(query(wh, "select doc_id from recall_scores where round = 2 and kept")["doc_id"]) & new_docs
    assert set(extracted["doc_id"]) == recalled_new
    refined = new_rows(table(wh, "qa_refined"), before["qa_refined"], "refined_id")
    assert set(refined["doc_id"]) <= new_docs
    for st in ("refine", "dedup", "decontaminate", "export"):
        assert sum(r["shards_done"] for r in s2[st]) <= len(set(extracted["doc_id"])) + 1, st

    # what the first run published is still there, unchanged
    for name, key in (("qa_extracted", "qa_id"), ("qa_refined", "refined_id"), ("dataset", "refined_id")):
        now = table(wh, name).join(before[name].select(key), on=key, how="semi")
        assert now.sort(key).equals(before[name].sort(key)), name
    assert query(wh, "select count(*) n from dataset")["n"][0] >= before["dataset"].height

    # the LLM was asked only about new things: new pages, new pairs, domains not labelled before
    calls = new_rows(table(wh, "llm_calls"), before["llm_calls"], "call_id").filter(~pl.col("cached"))
    ex = calls.filter(pl.col("stage") == "extract")["item_id"].str.replace(r"#\d+$", "")
    assert set(ex) <= new_docs
    labelled = before["domains"].filter(pl.col("label_source") == "llm")
    asked = calls.filter(pl.col("stage") == "domains")
    assert asked.join(labelled.select(pl.col("domain").alias("item_id"), "fingerprint"),
                      on=["item_id", "fingerprint"], how="semi").is_empty()
    assert set(calls.filter(pl.col("stage") == "refine")["item_id"]) <= set(extracted["qa_id"])
    twice = query(wh, "select fingerprint, domain from domains_all where label_source = 'llm' group by all "
                      "having count(*) > 1")
    assert twice.is_empty()  # a domain is labelled once per version

    # status: every segment done, nothing pending, per stage and version
    from webinstruct.segments import segment_status

    status = segment_status(wh)
    scored = status.filter(pl.col("stage") == "recall_score")
    assert scored["segments_done"].to_list() == [3, 3] and scored["segments_pending"].sum() == 0
    assert status.filter(pl.col("stage") == "extract")["segments_pending"].to_list() == [0]

    # nothing new: no stage writes a shard, no LLM call
    n_calls = table(wh, "llm_calls").height
    third = pipeline_flow(**kwargs)
    s3 = run_stages(wh, third["run_id"])
    assert all(r["shards_done"] == 0 for rows in s3.values() for r in rows), s3
    assert table(wh, "llm_calls").height == n_calls
    assert first["run_id"] != second["run_id"] != third["run_id"]
