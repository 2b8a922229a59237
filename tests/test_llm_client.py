"""The LLM client against the real embedded server (llama.cpp serving SmolLM2 on loopback)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import polars as pl
import pydantic
import pytest

from tasks import llm_client
from tasks.llm_client import LLMClient, LLMRequest, LLMSettings, ServerUnavailable, request_key
from warehouse import Warehouse
from webinstruct import llm_server
from webinstruct.llm_server import ensure_server, free_port, settings_from_cli


class Capital(pydantic.BaseModel):
    country: str
    capital: str


SYSTEM = {"role": "system", "content": "You answer geography questions with a JSON object."}


def capital_requests(countries: list[str]) -> list[LLMRequest]:
    return [LLMRequest(f"geo#{i}", [SYSTEM, {"role": "user", "content": f"What is the capital of {c}?"}],
                       Capital, max_tokens=48) for i, c in enumerate(countries)]


def test_structured_output_then_rerun_is_all_cached(llm_server, data_dir):
    wh = Warehouse(data_dir)
    requests = capital_requests(["France", "Japan", "Peru", "Kenya"])
    client = LLMClient(llm_server, wh)
    client.check_server()

    first = client.run(requests, stage="geo", fingerprint="fp-geo", shard="0001")
    assert [r.item_id for r in first] == [r.item_id for r in requests]
    for res in first:
        if res.ok:
            assert isinstance(res.parsed, Capital) and res.error is None
        else:  # a 135M model may fail; then the failure is recorded with its reason and text
            assert res.parsed is None and res.error and res.status in llm_client.TRANSIENT | {"parse_error"}
    assert any(r.ok for r in first)
    assert client.network_calls >= len(requests)

    calls = wh.read_shard("llm_calls", "fp-geo", "geo-0001")
    assert calls.height == len(requests)
    assert calls["cached"].sum() == 0
    assert calls["item_id"].to_list() == [r.item_id for r in requests]
    ok_rows = calls.filter(pl.col("status") == "ok")
    assert (ok_rows["prompt_tokens"] > 0).all() and (ok_rows["completion_tokens"] > 0).all()
    assert calls["stage"].unique().to_list() == ["geo"]

    # The same shard again: successes come from the cache, no request reaches the server for them.
    again = LLMClient(llm_server, wh)
    second = again.run(requests, stage="geo", fingerprint="fp-geo", shard="0001")
    n_ok = sum(r.ok for r in first)
    assert [r.parsed for r in second if r.cached] == [r.parsed for r in first if r.ok]
    assert sum(r.cached for r in second) == n_ok
    if n_ok == len(requests):
        assert again.network_calls == 0
    # the first run's rows stay as they were; the rerun logs beside them
    assert wh.shard_ids("llm_calls", "fp-geo") == ["geo-0001", "geo-0001.r1"]
    rerun_rows = wh.read_shard("llm_calls", "fp-geo", "geo-0001.r1")
    assert rerun_rows.filter(pl.col("cached"))["item_id"].to_list() == [r.item_id for r in first if r.ok]
    assert not any((data_dir / "_cache" / "llm_journal").rglob("*.jsonl"))


def test_cache_key_covers_what_changes_the_reply():
    s = LLMSettings()
    base = capital_requests(["France"])[0]
    key = request_key(s, base)
    assert request_key(s, capital_requests(["France"])[0]) == key
    assert request_key(s.model_copy(update={"temperature": 0.7}), base) != key
    assert request_key(s.model_copy(update={"model": "other"}), base) != key
    assert request_key(s.model_copy(update={"base_urls": ["http://elsewhere/v1"]}), base) == key

    class Other(pydantic.BaseModel):
        city: str

    assert request_key(s, LLMRequest(base.item_id, base.messages, Other)) != key
    assert request_key(s, LLMRequest(base.item_id, base.messages, Capital, max_tokens=7)) != key


def test_unreachable_server_fails_fast_with_what_to_start(data_dir):
    settings = LLMSettings(base_urls=[f"http://127.0.0.1:{free_port()}/v1"], model="m")
    with pytest.raises(ServerUnavailable, match="webinstruct serve"):
        LLMClient(settings, Warehouse(data_dir)).check_server()
    with pytest.raises(ServerUnavailable, match="--base-url"):
        with ensure_server(settings):
            pass


def test_wrong_model_name_is_reported(llm_server):
    with pytest.raises(ServerUnavailable, match="SmolLM2-135M-Instruct"):
        llm_client.check_servers(llm_server.model_copy(update={"model": "no-such-model"}))


def test_ensure_server_starts_the_embedded_default_and_stops_it(monkeypatch):
    url = f"http://127.0.0.1:{free_port()}/v1"
    monkeypatch.setattr(llm_client, "DEFAULT_BASE_URL", url)
    settings = settings_from_cli([url], None, 2)
    with ensure_server(settings) as ready:
        assert ready.base_urls == [url]
        llm_client.check_servers(ready)
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/models", timeout=2)


def test_ensure_server_uses_a_running_server(llm_server):
    with ensure_server(llm_server) as ready:
        assert ready == llm_server


def test_settings_from_cli():
    s = settings_from_cli(["http://a:1/v1/", "http://b:2/v1"], "big-model", 32)
    assert s.base_urls == ["http://a:1/v1", "http://b:2/v1"] and s.model == "big-model"
    assert s.max_concurrency == 32
    assert settings_from_cli(None, None, None) == LLMSettings()


def test_serve_command_runs_until_interrupted():
    port = free_port()
    cli = os.path.join(os.path.dirname(sys.executable), "webinstruct")
    proc = subprocess.Popen([cli, "serve", "--port", str(port),
                             "--parallel", "1", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()  # printed once the server answers
        assert url == f"http://127.0.0.1:{port}/v1"
        llm_client.check_servers(LLMSettings(base_urls=[url]))
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped" in err


def test_serve_vllm_without_vllm_says_how_to_get_it(monkeypatch):
    from typer.testing import CliRunner

    from webinstruct.cli import app

    monkeypatch.setattr(llm_server, "vllm_python", lambda: None)
    result = CliRunner().invoke(app, ["serve", "--engine", "vllm", "--model", "some/model"])
    assert result.exit_code != 0
    assert "vLLM is not installed" in result.output
