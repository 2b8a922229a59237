"""Issue "UI rerun", in a real browser: after a pipeline run, a person opens refine/wh -> Run -> Custom run,
sets the first refiner's model to another one, submits; the run writes a new refine version beside the old,
curates it, leaves upstream alone, and its page lists what each stage did (the artifacts)."""
from __future__ import annotations

import time

import polars as pl
import pytest

from tests.fixtures.llm import SECOND_MODEL
from tests.ui.conftest import log_tail
from tests.ui.live import small_pipeline_params, stage_runs

# Server, LLM server and deploy start, a pipeline run and a refine run with a 135M model on 2 cores.
pytestmark = [pytest.mark.ui, pytest.mark.timeout(1200)]

UI_VERSION = "v2"  # the UI a browser without a saved preference gets
RUN_TIMEOUT_S = 300


def test_refine_rerun_from_the_custom_run_form(browser_page, screenshots, prefect_server, served):
    # browser_page comes first so that a missing browser skips before the servers start.
    from tests.ui.prefect_form import flow_run_url, open_flow_run_tab, run_deployment_from_form, wait_for_flow_run
    from warehouse import Warehouse
    from warehouse.catalog import query

    page = browser_page
    api, wh, _, log = served
    deps = api.deployments()

    # 1. the pipeline, through the API, with small chunks and replies
    started = time.monotonic()
    first = api.run(deps["webinstruct/wh"], small_pipeline_params(deps["webinstruct/wh"]), timeout_s=RUN_TIMEOUT_S)
    assert first["state"]["type"] == "COMPLETED", log_tail(log)
    refine_before = set(stage_runs(wh, first["id"]).filter(pl.col("stage") == "refine")["fingerprint"])
    assert len(refine_before) == 1
    pipeline_s = time.monotonic() - started

    # 2. refine from the custom-run form: the first entry of the `refiners` list gets another model
    started = time.monotonic()
    run_id = run_deployment_from_form(page, prefect_server.ui_url, "refine", "wh",
                                      {"refiners.0.model": SECOND_MODEL, "refiners.0.max_tokens": "64"},
                                      timeout_s=90, ui_version=UI_VERSION, screenshot_dir=screenshots.dir)
    submitted = time.monotonic()
    state = wait_for_flow_run(prefect_server.api_url, run_id, timeout_s=RUN_TIMEOUT_S)
    print(f"\npipeline {pipeline_s:.0f}s; form submitted in {submitted - started:.1f}s; "
          f"refine run {state} {time.monotonic() - submitted:.0f}s later")
    assert state == "Completed", f"flow run {run_id} ended {state}\n{log_tail(log)}"

    # what the form sent: the entry as deployed, but for the two fields changed
    sent = api.http.get(f"/flow_runs/{run_id}").json()["parameters"]["refiners"]
    deployed = deps["refine/wh"]["parameters"]["refiners"]
    assert len(sent) == len(deployed) == 1
    assert sent[0]["model"] == SECOND_MODEL and sent[0]["max_tokens"] == 64
    assert {k: v for k, v in sent[0].items() if k not in ("model", "max_tokens")} == \
        {k: v for k, v in deployed[0].items() if k not in ("model", "max_tokens")}

    # 3. a new refine version beside the old; downstream followed; upstream untouched
    versions = query(Warehouse(wh), "select stage, version, settings from versions where stage = 'refine'")
    assert versions.height == 2, versions
    assert sum(SECOND_MODEL in s for s in versions["settings"]) == 1, versions
    runs = stage_runs(wh, run_id)
    assert set(runs["stage"]) == {"refine", "dedup", "decontaminate", "export"}, runs
    (new_refine,) = runs.filter(pl.col("stage") == "refine")["fingerprint"]
    assert new_refine not in refine_before
    refined = query(Warehouse(wh), f"select status, count(*) n from qa_refined_all where fingerprint = '{new_refine}' "
                                   "group by all")
    print(f"refine {new_refine} with {SECOND_MODEL}: {dict(refined.iter_rows())}")
    refine_artifacts = {a["id"] for a in api.artifacts(run_id) if a.get("key") == "refine-stage"}
    assert refine_artifacts, api.artifact_keys(run_id)

    # the run's page says so, and its Artifacts tab lists what the refine stage did
    page.goto(flow_run_url(prefect_server.ui_url, run_id, UI_VERSION), wait_until="domcontentloaded")
    page.get_by_text("Completed", exact=True).first.wait_for(state="visible")
    screenshots.take(page, f"{UI_VERSION}-flow-run-completed")
    panel = open_flow_run_tab(page, prefect_server.ui_url, run_id, "Artifacts", UI_VERSION)
    # The card of the artifact with that key, linking to one of this run's refine-stage artifacts.
    card = panel.locator("a[href*='/artifacts/artifact/']").filter(has=page.get_by_text("refine-stage", exact=True))
    card.first.wait_for(state="visible")
    screenshots.take(page, f"{UI_VERSION}-artifacts", full_page=True)
    hrefs = {card.nth(i).get_attribute("href") for i in range(card.count())}
    assert {h.rstrip("/").rsplit("/", 1)[-1] for h in hrefs} <= refine_artifacts, hrefs
