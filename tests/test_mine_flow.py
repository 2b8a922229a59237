"""Flow `mine` (extract -> refine) on a copy of the ingested sample, against the real embedded
server; the CLI command with an unreachable server and with the test server."""
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


def test_mine_flow_extracts_refines_and_reruns_for_free(ingested_sample, copy_warehouse, llm_server, prefect_env):
    from flows.mine import mine_flow

    wh = copy_warehouse(ingested_sample)
    # small chunks and replies, no repair request: the flow's wiring is under test here, not the model
    settings = llm_server.model_copy(update={"max_tokens": 96, "repair_retry": False})
    kwargs = dict(data_dir=str(wh.root), limit_docs=2, extract_llm=settings, chunk_chars=600, max_chunks=1)
    summary = mine_flow(**kwargs)

    assert "no recall_scores" in summary["warning"] and summary["docs"] == 2  # fell back to all documents
    x = summary["extract"]
    assert x["shards_skipped"] == 0 and 1 <= x["chunks"] <= 2 and x["calls"] >= 1 and x["cached"] == 0
    fates = query(wh, "SELECT doc_id, status, count(*) AS n FROM qa_extracted GROUP BY ALL")
    assert fates["doc_id"].n_unique() == 2  # every selected page has a recorded fate
    assert set(fates["status"]) <= {"ok", "no_pairs", "failed", "rejected"}
    assert x["pairs"] == int(fates.filter(pl.col("status") == "ok")["n"].sum())

    (r,) = summary["refine"]  # default: the extraction model refines
    assert r["ok"] + r["failed"] == x["pairs"]
    refined = query(wh, "SELECT r.qa_id, r.doc_id, e.doc_id AS e_doc FROM qa_refined r JOIN qa_extracted e USING (qa_id)")
    assert refined.height == x["pairs"] and (refined["doc_id"] == refined["e_doc"]).all()

    stages = query(wh, "SELECT stage, fingerprint, status, run_id FROM stage_runs "
                       "WHERE stage IN ('extract', 'refine') ORDER BY started_at")
    assert stages["stage"].to_list() == ["extract", "refine"] and (stages["status"] == "done").all()
    assert stages["fingerprint"].to_list() == [x["fingerprint"], r["fingerprint"]]
    run_id = stages["run_id"][0]
    assert query(wh, f"SELECT status FROM runs WHERE run_id = '{run_id}'")["status"].to_list() == ["done"]

    # the same run again: every shard is there, so no task runs and no LLM is asked
    again = mine_flow(**kwargs)
    assert again["extract"]["fingerprint"] == x["fingerprint"]
    assert again["extract"]["shards_skipped"] == again["extract"]["shards"] and again["extract"]["calls"] == 0
    assert again["refine"][0]["calls"] == 0 and again["refine"][0]["shards_skipped"] == again["extract"]["shards"]
    assert again["extract"]["pairs"] == x["pairs"]


def test_mine_flow_fails_fast_when_no_server_answers(ingested_sample, copy_warehouse, prefect_env):
    from flows.mine import mine_flow
    from tasks.llm_client import LLMSettings

    wh = copy_warehouse(ingested_sample)
    with pytest.raises(ServerUnavailable, match="webinstruct serve"):
        mine_flow(data_dir=str(wh.root), limit_docs=1, extract_llm=LLMSettings(base_urls=[DEAD_URL]))
    assert wh.versions("qa_extracted") == [] and wh.versions("llm_calls") == []


def run_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WEBINSTRUCT_DATA": str(data_dir)}
    env.pop("PREFECT_HOME", None)
    return subprocess.run(CLI + list(args), env=env, capture_output=True, text=True, timeout=600)


def test_mine_command(ingested_sample, copy_warehouse, llm_server):
    wh = copy_warehouse(ingested_sample)
    down = run_cli(wh.root, "mine", "--base-url", DEAD_URL, "--limit-docs", "1")
    assert down.returncode == 1 and "webinstruct serve" in down.stderr

    url, model = llm_server.base_urls[0], llm_server.model
    done = run_cli(wh.root, "mine", "--base-url", url, "--model", model, "--limit-docs", "1", "--max-chunks", "1",
                   "--chunk-chars", "600", "--max-tokens", "64", "--no-refine")
    assert done.returncode == 0, done.stderr
    assert "extract" in done.stderr and "1 page(s)" in done.stderr
    assert query(wh, "SELECT count(DISTINCT doc_id) AS n FROM qa_extracted")["n"][0] == 1
