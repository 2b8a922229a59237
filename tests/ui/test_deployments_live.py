"""`webinstruct deploy` against a real Prefect server: every deployment, triggered through the
REST API exactly as the UI's Run button does, completes; a rerun of `refine` with another model
writes a new version beside the old one, downstream stages follow, unchanged stages skip."""
from __future__ import annotations

import polars as pl
import pytest

from tests.fixtures.llm import SECOND_MODEL
from tests.ui.conftest import log_tail
from tests.ui.live import small_pipeline_params, stage_runs

pytestmark = pytest.mark.ui


def test_every_deployment_runs_and_a_refine_rerun_makes_a_new_version(served, llm_server):
    api, wh, crawl, log = served
    deps = api.deployments()
    assert set(deps) == {f"{f}/wh" for f in ("webinstruct", "ingest", "recall", "extract", "refine", "curate")}
    assert deps["webinstruct/wh"]["schedules"][0]["schedule"]["cron"] == "0 3 * * *"
    assert all(d["concurrency_limit"] == 1 or (d.get("global_concurrency_limit") or {}).get("limit") == 1
               for d in deps.values())

    # 1. the pipeline deployment, with small chunks and replies (a 135M model on 2 cores)
    params = small_pipeline_params(deps["webinstruct/wh"])
    first = api.run(deps["webinstruct/wh"], params)
    assert first["state"]["type"] == "COMPLETED", log_tail(log)
    assert any("funnel" in m for m in api.logs(first["id"], "funnel"))  # logs reach the server
    assert {"funnel", "ingest-stage", "recall-r1-scores", "table"} <= api.artifact_keys(first["id"])
    done = stage_runs(wh, first["id"])
    assert {"ingest", "recall_train", "recall_score", "domains", "extract", "refine", "dedup",
            "decontaminate", "export"} <= set(done["stage"])
    refine_before = set(done.filter(pl.col("stage") == "refine")["fingerprint"])

    # 2. every stage deployment with the settings the pipeline ran with: nothing new, all complete
    # (recall and extract carry the later stages on with the settings those last ran with)
    same = {"ingest": {}, "recall": {"llm": params["llm"]}, "extract": {"llm": params["llm"], "extract": params["extract"]},
            "curate": {}}
    for name, form in same.items():
        fr = api.run(deps[f"{name}/wh"], form)
        assert fr["state"]["type"] == "COMPLETED", (name, log_tail(log))
        assert stage_runs(wh, fr["id"])["shards_done"].sum() == 0, name

    # 3. refine from the form with another model: a new version beside the old; curate follows
    refiner = {**deps["refine/wh"]["parameters"]["refiners"][0], "model": SECOND_MODEL, "max_tokens": 64}
    rerun = api.run(deps["refine/wh"], {"refiners": [refiner]})
    assert rerun["state"]["type"] == "COMPLETED", log_tail(log)
    runs = stage_runs(wh, rerun["id"])
    assert set(runs["stage"]) == {"refine", "dedup", "decontaminate", "export"}  # upstream untouched
    (new_refine,) = runs.filter(pl.col("stage") == "refine")["fingerprint"]
    assert new_refine not in refine_before
    from warehouse import Warehouse
    from warehouse.catalog import query

    versions = query(Warehouse(wh), "select version, settings from versions where stage = 'refine'")
    assert versions.height == 2 and any(SECOND_MODEL in s for s in versions["settings"])
    assert "refine-stage" in api.artifact_keys(rerun["id"])

    # 4. the pipeline with that refiner: upstream stages skip, refine finds its version done
    again = api.run(deps["webinstruct/wh"], {**params, "refiners": [refiner]})
    assert again["state"]["type"] == "COMPLETED", log_tail(log)
    runs = stage_runs(wh, again["id"])
    assert runs["shards_done"].sum() == 0
    assert set(runs.filter(pl.col("stage") == "refine")["fingerprint"]) == {new_refine}
