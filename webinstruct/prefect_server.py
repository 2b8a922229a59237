"""A Prefect server (API + UI) on loopback, as a child process, for `webinstruct ui` and tests."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from webinstruct.llm_server import free_port


class PrefectServer:
    """`prefect server start` on 127.0.0.1; its database lives in PREFECT_HOME (the warehouse's)."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", env: dict[str, str] | None = None,
                 startup_timeout_s: float = 180.0):
        self.host, self.port = host, port or free_port(host)
        self.env = {**os.environ, **(env or {}), "PREFECT_UI_ENABLED": "true",
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                    # the UI takes its API URL from these, not from --port
                    "PREFECT_UI_API_URL": f"http://{self.host}:{self.port}/api",
                    "PREFECT_SERVER_API_HOST": self.host, "PREFECT_SERVER_API_PORT": str(self.port),
                    # SQLite on 2 busy cores: wait for the database rather than answer 503
                    "PREFECT_SERVER_DATABASE_TIMEOUT": "30"}
        self.env.pop("PREFECT_API_URL", None)  # the server itself must not talk to another one
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "PrefectServer":
        prefect = str(Path(sys.executable).parent / "prefect")
        self.proc = subprocess.Popen([prefect, "server", "start", "--host", self.host, "--port", str(self.port)],
                                     env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.stderr else ""
                raise RuntimeError(f"prefect server exited with {self.proc.returncode}: {err}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"prefect server did not answer on {self.api_url} within {self.startup_timeout_s:.0f} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "PrefectServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
