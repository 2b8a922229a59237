"""The whole DAG as one Prefect flow on the bundled sample, against the real embedded LLM server."""
from __future__ import annotations

from warehouse import Warehouse
from warehouse.catalog import query


def test_pipeline_end_to_end_then_rerun_is_free(prefect_env, llm_server, sample_crawl, tmp_path):
    from flows.pipeline import pipeline_flow
    from flows.settings import CrawlSource, DomainSettings, ExportSettings, ExtractSettings
    from tasks.export import funnel

    data_dir = tmp_path / "wh"
    export_dir = tmp_path / "export"
    # Small on purpose (2 CPU cores, a 135M model): few domains to label, short chunks and replies.
    llm = llm_server.model_copy(update={"max_tokens": 200})
    kwargs = dict(source=CrawlSource(paths=[str(sample_crawl)]), data_dir=str(data_dir), llm=llm,
                  domains=DomainSettings(min_domain_docs=1, max_llm_domains=2),
                  extract=ExtractSettings(max_docs=3, chunk_chars=1200, max_chunks=1),
                  export=ExportSettings(dir=str(export_dir)))
    summary = pipeline_flow(**kwargs)
    wh = Warehouse(data_dir)

    stages = query(wh, "select stage, status from stage_runs")
    assert set(stages["status"]) == {"done"}
    assert {"ingest", "recall_train", "recall_score", "extract", "refine", "dedup", "decontaminate"} <= set(stages["stage"])
    assert query(wh, "select count(distinct round) as n from recall_models")["n"][0] == 2
    llm_labelled = query(wh, "select round, count(*) as n from domains where label_source in ('llm', 'failed') "
                             "group by all order by all")
    assert llm_labelled["n"].to_list() == [2, 2]  # the budget held in both rounds

    f = dict(funnel(wh).iter_rows())
    assert f["documents"] >= 150
    assert 0 < f["recalled"] <= f["documents"]
    assert f["clean"] <= f["deduped"] <= f["refined"]
    # Every extracted doc is accounted for in the lineage view, with a reason when it stopped.
    lineage = query(wh, "select fate, count(*) as n from doc_lineage group by 1")
    assert lineage["n"].sum() == f["documents"]
    assert {"not recalled", "recalled, not extracted (yet)"} <= set(lineage["fate"].to_list())
    # the three highest-scoring recalled pages were the ones extracted
    top = query(wh, "select doc_id from recall_scores where round = 2 and kept order by score desc, doc_id limit 3")
    done = query(wh, "select distinct doc_id from qa_extracted")
    assert sorted(done["doc_id"]) == sorted(top["doc_id"])
    assert (export_dir / "README.md").exists()

    calls = query(wh, "select count(*) as n from llm_calls_all where not cached")["n"][0]
    assert calls > 0
    # Again with zero budgets: nothing new is ingested or trained, no LLM call, the funnel is unchanged
    again = pipeline_flow(**{**kwargs, "domains": DomainSettings(min_domain_docs=1, max_llm_domains=0),
                             "extract": ExtractSettings(max_docs=0, chunk_chars=1200, max_chunks=1)})
    assert again["ingest"]["files_ingested"] == 0
    assert [r["trained"] for r in again["recall"]["rounds"]] == [False, False]
    assert again["extract"]["fingerprint"] == summary["extract"]["fingerprint"] and again["extract"]["docs"] == 0
    assert query(wh, "select count(*) as n from llm_calls_all where not cached")["n"][0] == calls
    assert dict(funnel(wh).iter_rows()) == f
    assert summary["run_id"] != again["run_id"]
