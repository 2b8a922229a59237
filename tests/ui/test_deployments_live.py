"""`webinstruct deploy` against a real Prefect server: every deployment, triggered through the
REST API exactly as the UI's Run button does, completes; a rerun of `refine` with another model
writes a new version beside the old one, downstream stages follow, unchanged stages skip."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import polars as pl
import pytest

from tests.fixtures.llm import SECOND_MODEL
from tests.ui.conftest import log_tail, stop_process

pytestmark = pytest.mark.ui
CLI = str(Path(sys.executable).parent / "webinstruct")
FILES = ["dolma_warc_sample-0000.warc.gz", "resiliparse_warcfile.warc.gz"]
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class Api:
    def __init__(self, url: str):
        self.http = httpx.Client(base_url=url, timeout=30)

    def deployments(self) -> dict[str, dict]:
        out = {}
        for d in self.http.post("/deployments/filter", json={}).json():
            flow = self.http.get(f"/flows/{d['flow_id']}").json()["name"]
            out[f"{flow}/{d['name']}"] = d
        return out

    def run(self, deployment: dict, parameters: dict, timeout_s: float = 300) -> dict:
        """POST create_flow_run (what the UI's Run / Custom run does), then wait for a final state."""
        for _ in range(5):  # the server answers 503 while its SQLite database is busy; the UI retries too
            r = self.http.post(f"/deployments/{deployment['id']}/create_flow_run", json={"parameters": parameters})
            if r.status_code != 503:
                break
            time.sleep(2)
        r.raise_for_status()
        run_id = r.json()["id"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            fr = self.http.get(f"/flow_runs/{run_id}").json()
            if fr["state"]["type"] in FINAL:
                return fr
            time.sleep(1)
        raise TimeoutError(f"flow run {run_id} not finished after {timeout_s} s")

    def logs(self, run_id: str) -> list[str]:
        rows = self.http.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}}).json()
        return [r["message"] for r in rows]

    def artifact_keys(self, run_id: str) -> set[str]:
        rows = self.http.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}).json()
        return {r["key"] for r in rows if r.get("key")} | {r["type"] for r in rows}


def stage_runs(wh_root: Path, flow_run_id: str) -> pl.DataFrame:
    from warehouse import Warehouse

    runs = Warehouse(wh_root).manifest("stage_runs")
    return runs.filter(pl.col("run_id").str.ends_with(flow_run_id))


@pytest.fixture
def served(prefect_server, llm_server, sample_crawl, tmp_path):
    """A warehouse, a crawl folder and `webinstruct deploy` serving its deployments."""
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    for name in FILES:
        shutil.copy(sample_crawl / name, crawl / name)
    wh = tmp_path / "wh"
    log = tmp_path / "deploy.log"
    env = prefect_server.client_env(PREFECT_LOGGING_TO_API_ENABLED="true")
    with open(log, "wb") as out:
        proc = subprocess.Popen([CLI, "--data-dir", str(wh), "deploy", str(crawl), "--cron", "0 3 * * *",
                                 "--base-url", llm_server.base_urls[0], "--model", llm_server.model],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    api = Api(prefect_server.api_url)
    try:
        deadline = time.monotonic() + 120
        while len(api.deployments()) < 6:
            assert proc.poll() is None, log_tail(log)
            assert time.monotonic() < deadline, "deployments not registered:\n" + log_tail(log)
            time.sleep(1)
        yield api, wh, crawl, log
    finally:
        stop_process(proc)


def test_every_deployment_runs_and_a_refine_rerun_makes_a_new_version(served, llm_server):
    api, wh, crawl, log = served
    deps = api.deployments()
    assert set(deps) == {f"{f}/wh" for f in ("webinstruct", "ingest", "recall", "extract", "refine", "curate")}
    assert deps["webinstruct/wh"]["schedules"][0]["schedule"]["cron"] == "0 3 * * *"
    assert all(d["concurrency_limit"] == 1 or (d.get("global_concurrency_limit") or {}).get("limit") == 1
               for d in deps.values())

    # 1. the pipeline deployment, with small chunks and replies (a 135M model on 2 cores)
    params = dict(deps["webinstruct/wh"]["parameters"])
    params["llm"] = {**params["llm"], "max_tokens": 64, "repair_retry": False}
    params["extract"] = {"chunk_chars": 500, "overlap_chars": 100, "max_chunks": 1}
    first = api.run(deps["webinstruct/wh"], params)
    assert first["state"]["type"] == "COMPLETED", log_tail(log)
    assert any("funnel" in m for m in api.logs(first["id"]))  # logs reach the server
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
