"""Fixtures for tests against a real Prefect server and a real browser (`make test-ui`).

Nothing here imports playwright at module level: the default suite collects this folder (and deselects it
by marker) in a venv without the `ui` extra.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
CHROMIUM = os.environ.get("WEBINSTRUCT_CHROMIUM", "/usr/bin/chromium")
# Measured to work here with Debian's chromium as root and no network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_TIMEOUT_S = float(os.environ.get("WEBINSTRUCT_PREFECT_START_TIMEOUT", "120"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_environ() -> dict[str, str]:
    """os.environ without PREFECT_* settings, so a developer's profile or API URL cannot leak in."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}


def stop_process(proc: subprocess.Popen, grace_s: float = 20) -> None:
    """Terminate, then kill: the process and whatever it started in its own session."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@dataclass
class PrefectServer:
    api_url: str
    ui_url: str
    home: Path
    port: int
    log_path: Path
    # What a client process (a flow, `flow.serve`, the prefect CLI) needs to talk to this server.
    env: dict[str, str] = field(default_factory=dict)

    def client_env(self, **extra: str) -> dict[str, str]:
        """A full environment for a subprocess: the caller's (less PREFECT_*), this server's, then extra."""
        return {**clean_environ(), **self.env, **extra}


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> PrefectServer:
    """A real `prefect server start` (API + UI) on a free loopback port, with its own PREFECT_HOME."""
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    ui_url = f"http://127.0.0.1:{port}"
    common = {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    server_env = {
        **clean_environ(), **common,
        "PREFECT_UI_ENABLED": "true",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        # The UI asks /ui-settings for the API URL; without this it would be derived from
        # PREFECT_SERVER_API_PORT (or PREFECT_API_URL), never from the --port flag.
        "PREFECT_UI_API_URL": api_url,
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        # SQLite busy timeout: 2 shared cores, a browser and flow runs make 10 s (the default) too short at
        # times (Prefect's own test mode uses 30 s); say so in the log when it still happens.
        "PREFECT_SERVER_DATABASE_TIMEOUT": "30",
        "PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "true",
    }
    log_path = home / "server.log"
    prefect = Path(sys.executable).parent / "prefect"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        # Own session: teardown signals the whole group (uvicorn and its service workers).
        proc = subprocess.Popen([str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                env=server_env, cwd=home, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prefect server exited with {proc.returncode} while starting:\n{log_tail(log_path)}")
            try:
                if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > SERVER_START_TIMEOUT_S:
                pytest.fail(f"prefect server not healthy after {SERVER_START_TIMEOUT_S:.0f}s:\n{log_tail(log_path)}")
            time.sleep(0.5)
        print(f"\nprefect server healthy on {ui_url} after {time.monotonic() - started:.1f}s")
        yield PrefectServer(
            api_url=api_url, ui_url=ui_url, home=home, port=port, log_path=log_path,
            env={**common, "PREFECT_API_URL": api_url, "PREFECT_UI_URL": ui_url},
        )
    finally:
        stop_process(proc)


# --- browser ----------------------------------------------------------------------------------------------

@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # Keep each phase's report on the item so the page fixture can screenshot a failure.
    report = yield
    setattr(item, f"ui_report_{report.when}", report)
    return report


class Screenshots:
    """Saves PNGs under tests/ui/screenshots/<test>/ and copies them to $WEBINSTRUCT_UI_ARTIFACTS if set.

    A failing test that used `browser_page` also leaves failure.png and failure.html there."""

    def __init__(self, test_name: str):
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name).strip("_")
        self.dir = SCREENSHOTS / safe
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        artifacts = os.environ.get("WEBINSTRUCT_UI_ARTIFACTS")
        self.artifacts = Path(artifacts) / safe if artifacts else None

    def take(self, page, name: str, full_page: bool = False) -> Path:
        path = self.dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        self.publish(path)
        return path

    def publish(self, path: Path) -> None:
        if self.artifacts is not None:
            self.artifacts.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, self.artifacts / path.name)

    def publish_all(self) -> None:
        for path in sorted(self.dir.glob("*.png")):
            self.publish(path)


@pytest.fixture(scope="session")
def chromium_browser():
    """One headless Debian chromium for the session, driven by playwright (no `playwright install`)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (run `make browser`, or set WEBINSTRUCT_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright missing (pip install -e '.[ui]')")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def screenshots(request) -> Screenshots:
    return Screenshots(request.node.name)


@pytest.fixture
def browser_page(request, chromium_browser, screenshots):
    """A fresh browser context and page; a failing test leaves a `failure.png` beside its screenshots."""
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        yield page
    finally:
        report = getattr(request.node, "ui_report_call", None)
        if report is not None and report.failed:
            try:
                screenshots.take(page, "failure")
                html = screenshots.dir / "failure.html"
                html.write_text(page.content())
                screenshots.publish(html)
            except Exception as exc:  # noqa: BLE001 - the page may be gone; the test's own failure matters
                print(f"no failure screenshot: {exc}")
        screenshots.publish_all()
        context.close()


# --- a served warehouse -----------------------------------------------------------------------------------

@pytest.fixture
def served(prefect_server, llm_server, sample_crawl, tmp_path):
    """A warehouse, a crawl folder and `webinstruct deploy` serving its deployments: (api, wh, crawl, log)."""
    from tests.ui.live import serve_warehouse  # imported here: live.py imports this module

    with serve_warehouse(prefect_server, llm_server, sample_crawl, tmp_path) as warehouse:
        yield warehouse
