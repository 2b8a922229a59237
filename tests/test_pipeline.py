"""The whole DAG as one Prefect flow on the bundled sample, against the real embedded LLM server."""
from __future__ import annotations

from warehouse import Warehouse
from warehouse.catalog import query


def test_pipeline_end_to_end_then_rerun_is_free(prefect_env, llm_server, sample_crawl, tmp_path):
    from flows.pipeline import pipeline_flow
    from tasks.export import funnel

    data_dir = tmp_path / "wh"
    export_dir = tmp_path / "export"
    # Small on purpose (2 CPU cores, a 135M model): few domains to label, short chunks and replies.
    llm = llm_server.model_copy(update={"max_tokens": 200})
    kwargs = dict(paths=[str(sample_crawl)], data_dir=str(data_dir), llm=llm, limit_docs=3,
                  min_domain_docs=1, max_llm_domains=2, chunk_chars=1200, max_chunks=1,
                  export_dir=str(export_dir))
    summary = pipeline_flow(**kwargs)
    wh = Warehouse(data_dir)

    stages = query(wh, "select stage, status from stage_runs")
    assert set(stages["status"]) == {"done"}
    assert {"ingest", "recall_train", "recall_score", "extract", "refine", "dedup", "decontaminate"} <= set(stages["stage"])
    assert query(wh, "select count(distinct round) as n from recall_models")["n"][0] == 2
    sources = query(wh, "select round, label_source, count(*) as n from domains group by all")
    assert sources.filter(label_source="over_budget").height == 2  # the budget held in both rounds

    f = dict(funnel(wh).iter_rows())
    assert f["documents"] >= 150
    assert 0 < f["recalled"] <= f["documents"]
    assert f["clean"] <= f["deduped"] <= f["refined"]
    # Every extracted doc is accounted for in the lineage view, with a reason when it stopped.
    lineage = query(wh, "select fate, count(*) as n from doc_lineage group by 1")
    assert lineage["n"].sum() == f["documents"]
    assert "not recalled" in lineage["fate"].to_list()
    processed = query(wh, "select count(distinct doc_id) as n from qa_extracted")["n"][0]
    assert 1 <= processed <= 3
    assert (export_dir / "README.md").exists()

    calls = query(wh, "select count(*) as n from llm_calls_all where not cached")["n"][0]
    assert calls > 0
    # Same settings again: every stage finds its fingerprint done, no new LLM requests.
    again = pipeline_flow(**kwargs)
    assert again["ingest"]["files_ingested"] == 0
    assert query(wh, "select count(*) as n from llm_calls_all where not cached")["n"][0] == calls
    assert dict(funnel(wh).iter_rows()) == f
    assert summary["run_id"] != again["run_id"]
