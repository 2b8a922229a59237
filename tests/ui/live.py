"""A warehouse's deployments served by `webinstruct deploy` against the test Prefect server, and the REST
calls the UI tests make on them (what the UI's Run button does, logs, artifacts).

The `served` fixture (tests/ui/conftest.py) wraps `serve_warehouse`.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import polars as pl

from tests.ui.conftest import PrefectServer, log_tail, stop_process

CLI = str(Path(sys.executable).parent / "webinstruct")
FILES = ["dolma_warc_sample-0000.warc.gz", "resiliparse_warcfile.warc.gz"]
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
STAGE_FLOWS = ("webinstruct", "ingest", "recall", "extract", "refine", "curate")
REGISTER_TIMEOUT_S = 120


class _PatientClient(httpx.Client):
    """The test server runs on 2 busy cores: it may drop a connection or answer 503 (SQLite busy) for a
    moment, as a user's browser would see and retry."""

    def request(self, *args, **kwargs) -> httpx.Response:
        for attempt in range(6):
            try:
                r = super().request(*args, **kwargs)
                if r.status_code != 503 or attempt == 5:
                    return r
            except httpx.TransportError:
                if attempt == 5:
                    raise
            time.sleep(2)
        raise AssertionError("unreachable")


class Api:
    def __init__(self, url: str):
        self.http = _PatientClient(base_url=url, timeout=30)

    def deployments(self, name: str = "wh") -> dict[str, dict]:
        """This warehouse's deployments (the session's server may hold other tests' too)."""
        out = {}
        for d in self.http.post("/deployments/filter", json={}).json():
            if d["name"] != name:
                continue
            flow = self.http.get(f"/flows/{d['flow_id']}").json()["name"]
            out[f"{flow}/{d['name']}"] = d
        return out

    def run(self, deployment: dict, parameters: dict, timeout_s: float = 300) -> dict:
        """POST create_flow_run (what the UI's Run / Custom run does), then wait for a final state."""
        r = self.http.post(f"/deployments/{deployment['id']}/create_flow_run", json={"parameters": parameters})
        r.raise_for_status()
        return self.wait(r.json()["id"], timeout_s)

    def wait(self, run_id: str, timeout_s: float = 300) -> dict:
        """The flow run once it is in a final state."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            fr = self.http.get(f"/flow_runs/{run_id}").json()
            if fr["state"]["type"] in FINAL:
                return fr
            time.sleep(1)
        raise TimeoutError(f"flow run {run_id} not finished after {timeout_s} s")

    def logs(self, run_id: str, expect: str, wait_s: float = 30) -> list[str]:
        """The run's log lines, waiting for one containing `expect` (logs are shipped in batches)."""
        deadline = time.monotonic() + wait_s
        while True:
            rows = self.http.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}}).json()
            lines = [r["message"] for r in rows]
            if any(expect in m for m in lines) or time.monotonic() > deadline:
                return lines
            time.sleep(1)

    def artifacts(self, run_id: str) -> list[dict]:
        return self.http.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}).json()

    def artifact_keys(self, run_id: str) -> set[str]:
        rows = self.artifacts(run_id)
        return {r["key"] for r in rows if r.get("key")} | {r["type"] for r in rows}


def stage_runs(wh_root: Path, flow_run_id: str) -> pl.DataFrame:
    """The stage_runs manifest rows a flow run wrote (their run_id ends with the flow run's id)."""
    from warehouse import Warehouse

    runs = Warehouse(wh_root).manifest("stage_runs")
    return runs.filter(pl.col("run_id").str.ends_with(flow_run_id))


def small_pipeline_params(deployment: dict) -> dict:
    """The pipeline deployment's parameters with small chunks and replies (a 135M model on 2 cores)."""
    params = dict(deployment["parameters"])
    params["llm"] = {**params["llm"], "max_tokens": 64, "repair_retry": False}
    params["extract"] = {"chunk_chars": 500, "overlap_chars": 100, "max_chunks": 1}
    return params


@contextmanager
def serve_warehouse(server: PrefectServer, llm, sample_crawl: Path,
                    tmp_path: Path) -> Iterator[tuple[Api, Path, Path, Path]]:
    """A warehouse `wh`, a crawl folder and `webinstruct deploy` serving its deployments.

    Yields (api, warehouse root, crawl folder, deploy log)."""
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    for name in FILES:
        shutil.copy(sample_crawl / name, crawl / name)
    wh = tmp_path / "wh"
    log = tmp_path / "deploy.log"
    env = server.client_env(PREFECT_LOGGING_TO_API_ENABLED="true")
    with open(log, "wb") as out:
        proc = subprocess.Popen([CLI, "--data-dir", str(wh), "deploy", str(crawl), "--cron", "0 3 * * *",
                                 "--base-url", llm.base_urls[0], "--model", llm.model],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    api = Api(server.api_url)
    try:
        deadline = time.monotonic() + REGISTER_TIMEOUT_S
        # Every test's warehouse is named `wh`: wait for deployments that point at this one, not for any
        # left by an earlier test (same names, another data_dir) on the session's server.
        while not _registered(api.deployments(), wh):
            assert proc.poll() is None, log_tail(log)
            assert time.monotonic() < deadline, "deployments not registered:\n" + log_tail(log)
            time.sleep(1)
        yield api, wh, crawl, log
    finally:
        stop_process(proc)
        # Nobody serves them any more: leave none for a later test to trigger by name (best effort).
        try:
            for d in api.deployments().values():
                if (d.get("parameters") or {}).get("data_dir") == str(wh):
                    api.http.delete(f"/deployments/{d['id']}")
        except httpx.HTTPError as exc:  # cleanup only: a later test waits for its own deployments anyway
            print(f"could not delete the deployments of {wh}: {exc}")
        api.http.close()


def _registered(deps: dict[str, dict], wh: Path) -> bool:
    return all(((deps.get(f"{flow}/wh") or {}).get("parameters") or {}).get("data_dir") == str(wh)
               for flow in STAGE_FLOWS)
