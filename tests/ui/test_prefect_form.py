"""Run a served deployment from the Prefect UI's custom-run form, in a real browser against a real server."""
from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from tests.ui.conftest import ROOT, log_tail, stop_process

pytestmark = [pytest.mark.ui, pytest.mark.timeout(420)]

DEMO_FLOW = ROOT / "tests" / "ui" / "demo_flow.py"


@pytest.fixture(scope="module")
def served_demo(prefect_server, tmp_path_factory):
    """`python tests/ui/demo_flow.py` serving the demo deployment against the test server."""
    from tests.ui.demo_flow import DEPLOYMENT_NAME, FLOW_NAME
    from tests.ui.prefect_form import wait_for_deployment

    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = prefect_server.client_env(
        PREFECT_LOGGING_TO_API_ENABLED="true",  # the flow's logger.info must reach the server (and the UI)
        PREFECT_RUNNER_POLL_FREQUENCY="2",      # pick up a submitted run in ~2 s rather than 10
    )
    with open(log_path, "wb") as log:
        # cwd=ROOT: the deployment's entrypoint is recorded relative to it and loaded from it per run.
        proc = subprocess.Popen([sys.executable, str(DEMO_FLOW), DEPLOYMENT_NAME], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    deployment = None
    try:
        try:
            deployment = wait_for_deployment(prefect_server.api_url, FLOW_NAME, DEPLOYMENT_NAME, timeout_s=120)
        except TimeoutError as e:
            pytest.fail(f"{e}; serve exited={proc.poll()}\n{log_tail(log_path)}")
        yield {"flow": FLOW_NAME, "deployment": DEPLOYMENT_NAME, "id": deployment["id"], "log": log_path}
    finally:
        stop_process(proc)
        if deployment is not None:
            # The server is shared by the whole session: leave no demo deployment for other tests to find.
            httpx.delete(f"{prefect_server.api_url}/deployments/{deployment['id']}", timeout=10)


def flow_run_logs(api_url: str, run_id: str) -> list[str]:
    r = httpx.post(f"{api_url}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200},
                   timeout=10)
    r.raise_for_status()
    return [entry["message"] for entry in r.json()]


@pytest.mark.parametrize("ui_version", ["v2", "v1"])
def test_custom_run_form_runs_deployment_with_nested_values(ui_version, browser_page, screenshots,
                                                            prefect_server, served_demo):
    # browser_page comes first so that a missing browser skips before a server starts.
    from tests.ui.prefect_form import run_deployment_from_form, wait_for_flow_run

    page = browser_page
    model = f"qwen2.5-0.5b-{ui_version}"
    fills = {
        "refiner.model": model,          # a str field nested in a pydantic model parameter
        "refiner.strictness": "strict",  # a Literal field nested in the model
        "refiner.max_tokens": "99",      # an int field nested in the model
        "split": "test",                 # a top-level Literal parameter
        "reviewers.1.model": f"reviewer-{ui_version}",  # fields of list entries (a list of models)
        "reviewers.1.strictness": "lenient",
        "reviewers.0.max_tokens": "7",
    }
    started = time.monotonic()
    run_id = run_deployment_from_form(page, prefect_server.ui_url, served_demo["flow"], served_demo["deployment"],
                                      fills, timeout_s=60, ui_version=ui_version, screenshot_dir=screenshots.dir)
    submitted = time.monotonic()
    state = wait_for_flow_run(prefect_server.api_url, run_id, timeout_s=180)
    print(f"\n{ui_version}: form submitted in {submitted - started:.1f}s, run {state} "
          f"{time.monotonic() - submitted:.1f}s later")
    assert state == "Completed", f"flow run {run_id} ended {state}\n{log_tail(served_demo['log'])}"

    run = httpx.get(f"{prefect_server.api_url}/flow_runs/{run_id}", timeout=10).json()
    assert run["deployment_id"] == served_demo["id"]
    assert run["parameters"]["refiner"] == {"model": model, "strictness": "strict", "max_tokens": 99}
    assert run["parameters"]["split"] == "test"
    assert run["parameters"]["reviewers"] == [  # each entry whole, only the fields filled changed
        {"model": "reviewer-a", "strictness": "lenient", "max_tokens": 7},
        {"model": f"reviewer-{ui_version}", "strictness": "lenient", "max_tokens": 256}]
    assert run["parameters"].get("limit", 3) == 3  # untouched fields keep their defaults

    # The run logger ships records in batches; they are in the API shortly after the run ends.
    expected = f"ui-demo refiner={model} strictness=strict split=test limit=3"
    deadline = time.monotonic() + 30
    while expected not in (messages := flow_run_logs(prefect_server.api_url, run_id)):
        assert time.monotonic() < deadline, f"log line not on the server; it has {messages}"
        time.sleep(0.5)

    # And a person looking at the run page sees it finished, with the log line.
    page.reload()
    page.get_by_text(expected).first.wait_for(state="visible", timeout=30_000)
    screenshots.take(page, f"{ui_version}-flow-run-completed")
