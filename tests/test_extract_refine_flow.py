"""Flows `extract` and `refine` on a copy of the ingested sample, against the real embedded
server: a per-run budget leaves the rest pending, reruns are free; the `mine` command with an
unreachable server and with the test server."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from tasks.llm_client import ServerUnavailable
from warehouse.catalog import query

CLI = [str(Path(sys.executable).parent / "webinstruct")]
DEAD_URL = "http://127.0.0.1:9/v1"  # the discard port: connection refused


def test_extract_budget_then_pending_then_refine_and_rerun_for_free(ingested_sample, copy_warehouse, llm_server,
                                                                       prefect_env):
    from flows.extract import extract_flow
    from flows.refine import refine_flow
    from flows.settings import ExtractSettings

    wh = copy_warehouse(ingested_sample)
    # small chunks and replies, no repair request: the flow's wiring is under test here, not the model
    settings = llm_server.model_copy(update={"max_tokens": 96, "repair_retry": False})
    extract = ExtractSettings(max_docs=1, chunk_chars=600, max_chunks=1, require_question=False)
    x = extract_flow(data_dir=str(wh.root), llm=settings, extract=extract)

    assert "no recall_scores" in x["warning"] and x["docs"] == 1  # fell back to all documents
    assert x["pending_after"] == 268 and 1 <= x["chunks"] and x["calls"] >= 1 and x["cached"] == 0
    # without recall scores, the order is by doc_id: the first document was taken
    first = query(wh, "SELECT min(doc_id) AS d FROM documents")["d"][0]
    fates = query(wh, "SELECT doc_id, status, count(*) AS n FROM qa_extracted GROUP BY ALL")
    assert fates["doc_id"].unique().to_list() == [first]  # the selected page has a recorded fate
    assert set(fates["status"]) <= {"ok", "no_pairs", "failed", "rejected"}
    assert x["pairs"] == int(fates.filter(pl.col("status") == "ok")["n"].sum())

    # the next run takes the next page into the same version (the budget is not a setting)
    x2 = extract_flow(data_dir=str(wh.root), llm=settings, extract=extract)
    assert x2["fingerprint"] == x["fingerprint"] and x2["docs"] == 1 and x2["pending_after"] == 267
    assert query(wh, "SELECT count(DISTINCT doc_id) AS n FROM qa_extracted")["n"][0] == 2

    r = refine_flow(data_dir=str(wh.root), refiners=[settings])
    (ref,) = r["refine"]
    pairs = query(wh, "SELECT count(*) AS n FROM qa_extracted WHERE status = 'ok'")["n"][0]
    # every ok pair gets one row: ok, unrefined (failed verification; the pair stands in) or failed
    fates = dict(query(wh, "SELECT status, count(*) AS n FROM qa_refined GROUP BY status").iter_rows())
    assert set(fates) <= {"ok", "unrefined", "failed"} and sum(fates.values()) == pairs
    assert ref["ok"] == fates.get("ok", 0) and r["extract_fingerprint"] == x["fingerprint"]
    refined = query(wh, "SELECT r.qa_id, r.doc_id, e.doc_id AS e_doc FROM qa_refined r JOIN qa_extracted e USING (qa_id)")
    assert refined.height == pairs and (refined["doc_id"] == refined["e_doc"]).all()

    stages = query(wh, "SELECT stage, fingerprint, status FROM stage_runs WHERE stage IN ('extract', 'refine') "
                       "ORDER BY started_at")
    assert stages["stage"].to_list() == ["extract", "extract", "refine"] and (stages["status"] == "done").all()

    # refine again: every shard is there, so no task runs and no LLM is asked
    again = refine_flow(data_dir=str(wh.root), refiners=[settings])
    assert again["refine"][0]["calls"] == 0 and again["refine"][0]["shards_done"] == 0
    # extract with max_docs=0: nothing to do, no server needed
    none = extract_flow(data_dir=str(wh.root), llm=settings.model_copy(update={"base_urls": [DEAD_URL]}),
                        extract=extract.model_copy(update={"max_docs": 0}))
    assert none["docs"] == 0 and none["calls"] == 0


def test_extract_flow_fails_fast_when_no_server_answers(ingested_sample, copy_warehouse, prefect_env):
    from flows.extract import extract_flow
    from flows.settings import ExtractSettings
    from tasks.llm_client import LLMSettings

    wh = copy_warehouse(ingested_sample)
    with pytest.raises(ServerUnavailable, match="webinstruct serve"):
        extract_flow(data_dir=str(wh.root), llm=LLMSettings(base_urls=[DEAD_URL]), extract=ExtractSettings(max_docs=1))
    assert wh.versions("qa_extracted") == [] and wh.versions("llm_calls") == []


def run_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WEBINSTRUCT_DATA": str(data_dir)}
    env.pop("PREFECT_HOME", None)
    return subprocess.run(CLI + list(args), env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # ~35 s of CLI runs; make test-slow (CI) runs it
def test_mine_command(ingested_sample, copy_warehouse, llm_server):
    wh = copy_warehouse(ingested_sample)  # (no server: tests/faults/test_user_errors.py)
    url, model = llm_server.base_urls[0], llm_server.model
    done = run_cli(wh.root, "mine", "--base-url", url, "--model", model, "--max-docs", "1", "--max-chunks", "1",
                   "--chunk-chars", "600", "--max-tokens", "64", "--no-refine")
    assert done.returncode == 0, done.stderr
    assert "extract" in done.stderr and "1 new page(s)" in done.stderr
    assert query(wh, "SELECT count(DISTINCT doc_id) AS n FROM qa_extracted")["n"][0] == 1
