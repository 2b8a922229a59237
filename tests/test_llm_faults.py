"""Fault injection with the scripted server: every failure is retried or recorded, nothing lost."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import polars as pl
import pydantic

from tasks.llm_cache import ShardJournal
from tasks.llm_client import LLMClient, LLMRequest, LLMSettings
from tests.fake_llm_server import drop, error, garbled, ok, stall
from warehouse import Warehouse

FAST = dict(timeout_s=0.5, backoff_base_s=0.01, backoff_max_s=0.05, max_retries=4, max_concurrency=4)


class Echo(pydantic.BaseModel):
    echo: str


def reqs(*names: str) -> list[LLMRequest]:
    return [LLMRequest(n, [{"role": "system", "content": "Echo."}, {"role": "user", "content": n}], Echo)
            for n in names]


def run(server, data_dir, requests, shard="s1", **settings):
    wh = Warehouse(data_dir)
    client = LLMClient(server.settings(**{**FAST, **settings}), wh)
    results = client.run(requests, stage="t", fingerprint="fp", shard=shard)
    return results, wh.read_shard("llm_calls", "fp", f"t-{shard}"), client


def test_transient_errors_are_retried_until_they_pass(fake_llm, data_dir):
    server = fake_llm(plan={"a": [error(500), error(503)], "b": [drop(), drop()], "c": [stall(2.0)],
                            "d": [garbled()], "e": [error(502), drop(), stall(2.0), garbled()]})
    results, calls, _ = run(server, data_dir, reqs("a", "b", "c", "d", "e", "f"))
    assert [r.status for r in results] == ["ok"] * 6
    assert [r.parsed.echo for r in results] == ["a", "b", "c", "d", "e", "f"]
    assert calls["attempts"].to_list() == [3, 3, 2, 2, 5, 1]
    assert calls["status"].to_list() == ["ok"] * 6


def test_retry_after_is_honoured(fake_llm, data_dir):
    arrivals: list[float] = []

    def script(body):
        arrivals.append(time.monotonic())
        return error(429, retry_after=0.3) if len(arrivals) == 1 else None

    server = fake_llm(script=script)
    results, calls, _ = run(server, data_dir, reqs("x"))
    assert results[0].ok and calls["attempts"].to_list() == [2]
    assert arrivals[1] - arrivals[0] >= 0.3  # a lower bound the client must respect, not a timing


def test_persistent_failures_are_recorded_with_their_reason(fake_llm, data_dir):
    server = fake_llm(plan={"down": [error(500)] * 10, "bad": [error(400)], "slow": [stall(2.0)] * 10,
                            "limited": [error(429, retry_after=0)] * 10})
    results, calls, _ = run(server, data_dir, reqs("down", "bad", "slow", "limited", "fine"), max_retries=2)
    by = {r.item_id: r for r in results}
    assert by["down"].status == "http_error" and "HTTP 500" in by["down"].error and "3 attempts" in by["down"].error
    assert by["bad"].status == "http_error" and "HTTP 400" in by["bad"].error and by["bad"].attempts == 1
    assert by["slow"].status == "timeout" and "no reply within" in by["slow"].error
    assert by["limited"].status == "http_error" and "HTTP 429" in by["limited"].error
    assert by["fine"].ok
    assert calls.filter(pl.col("status") != "ok")["error"].is_not_null().all()
    assert calls["attempts"].to_list() == [3, 1, 3, 3, 1]


def test_malformed_replies_become_parse_errors_with_raw_text(fake_llm, data_dir):
    server = fake_llm(plan={"cut": [ok('{"echo": "cu', finish_reason="length")], "shape": [ok('{"answer": 1}')],
                            "empty": [ok("")], "fenced": [ok('```json\n{"echo": "fenced"}\n```')]})
    results, calls, _ = run(server, data_dir, reqs("cut", "shape", "empty", "fenced"), repair_retry=False)
    by = {r.item_id: r for r in results}
    assert by["cut"].status == "parse_error" and by["cut"].raw == '{"echo": "cu'
    assert "truncated at max_tokens" in by["cut"].error and "invalid JSON" in by["cut"].error
    assert by["shape"].status == "parse_error" and "wrong shape" in by["shape"].error and "echo" in by["shape"].error
    assert by["empty"].status == "parse_error" and by["empty"].error == "empty completion"
    assert by["fenced"].ok and by["fenced"].parsed.echo == "fenced"
    failed = calls.filter(pl.col("status") == "parse_error")
    assert failed["raw"].to_list() == ['{"echo": "cu', '{"answer": 1}', ""]
    assert calls.filter(pl.col("status") == "ok")["raw"].is_null().all()


def test_repair_retry_fixes_or_explains(fake_llm, data_dir):
    def script(body):
        user = body["messages"][-1]["content"]
        if body["messages"][1]["content"] == "hopeless":
            return ok('{"nope": true}')
        return ok('{"echo": "fix') if user == "fixable" else None

    server = fake_llm(script=script)
    results, calls, client = run(server, data_dir, reqs("fixable", "hopeless"))
    fixed, hopeless = results
    assert fixed.ok and fixed.attempts == 2
    assert hopeless.status == "parse_error" and "after repair" in hopeless.error
    assert calls["repaired"].to_list() == [True, False]
    # the repair request carries the bad reply and the reason back to the model
    repair_msgs = [m for m, _ in server.log if m.startswith("Your reply above is not valid")]
    assert len(repair_msgs) == 2 and "invalid JSON" in repair_msgs[0]


def test_failures_are_not_cached_successes_are(fake_llm, data_dir):
    server = fake_llm(plan={"flaky": [error(500)] * 5})
    first, _, _ = run(server, data_dir, reqs("flaky", "steady"), max_retries=0)
    assert [r.status for r in first] == ["http_error", "ok"]
    second, calls, client = run(server, data_dir, reqs("flaky", "steady"), max_retries=0)
    assert [(r.status, r.cached) for r in second] == [("http_error", False), ("ok", True)]
    assert client.network_calls == 1  # only the failure is asked again
    assert Warehouse(data_dir).shard_ids("llm_calls", "fp") == ["t-s1", "t-s1.r1"]


def test_spread_over_replicas_and_bounded_concurrency(fake_llm, data_dir):
    a, b = fake_llm(latency_s=0.02), fake_llm(latency_s=0.02)
    dead = fake_llm()
    dead.kill()
    settings = {**FAST, "base_urls": [a.base_url, b.base_url, dead.base_url], "max_concurrency": 6}
    wh = Warehouse(data_dir)
    client = LLMClient(LLMSettings(model="fake-model", **settings), wh)
    results = client.run(reqs(*[f"q{i}" for i in range(60)]), stage="t", fingerprint="fp", shard="s1")
    assert all(r.ok for r in results)
    assert a.completions() > 10 and b.completions() > 10
    assert a.max_inflight <= 6 and b.max_inflight <= 6  # max_concurrency is per endpoint
    calls = wh.read_shard("llm_calls", "fp", "t-s1")
    assert set(calls["base_url"]) == {a.base_url, b.base_url}


def test_server_killed_mid_shard_and_restarted(fake_llm, data_dir):
    server = fake_llm(latency_s=0.03)
    names = [f"q{i}" for i in range(40)]
    out: dict = {}
    worker = threading.Thread(target=lambda: out.update(res=run(server, data_dir, reqs(*names), max_retries=12,
                                                                backoff_max_s=0.2)))
    worker.start()
    while server.completions() < 8:
        time.sleep(0.01)
    server.kill()
    time.sleep(0.4)
    server.restart()
    worker.join(60)
    results, calls, _ = out["res"]
    assert [r.item_id for r in results] == names and all(r.ok for r in results)
    assert [r.parsed.echo for r in results] == names
    assert calls.height == 40 and calls["item_id"].n_unique() == 40
    assert calls["attempts"].max() > 1  # some requests were cut or refused and then retried
    assert calls.filter(pl.col("attempts") > 1)["status"].to_list() == ["ok"] * int((calls["attempts"] > 1).sum())


CLIENT_SCRIPT = textwrap.dedent("""
    import sys, pydantic
    from tasks.llm_client import LLMClient, LLMRequest, LLMSettings
    from warehouse import Warehouse
    class Echo(pydantic.BaseModel):
        echo: str
    url, root, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    reqs = [LLMRequest(f"q{i}", [{"role": "system", "content": "Echo."}, {"role": "user", "content": f"q{i}"}], Echo)
            for i in range(n)]
    LLMClient(LLMSettings(base_urls=[url], model="fake-model", max_concurrency=2), Warehouse(root)).run(
        reqs, stage="t", fingerprint="fp", shard="s1")
""")


def test_killed_client_resumes_without_repeating_or_duplicating(fake_llm, data_dir):
    server = fake_llm(latency_s=0.02)
    n = 60
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-c", CLIENT_SCRIPT, server.base_url, str(data_dir), str(n)], cwd=root)
    journal_path = data_dir / "_cache" / "llm_journal" / "fp" / "t-s1.jsonl"
    while not (journal_path.exists() and len(ShardJournal(journal_path).load()) >= 10):
        assert proc.poll() is None, "the client finished before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = ShardJournal(journal_path).load()
    asked_before = server.completions()
    assert 10 <= len(done_before) < n
    assert not Warehouse(data_dir).has_shard("llm_calls", "fp", "t-s1")

    # the rerun: journalled requests are restored, the rest are asked (in-flight ones again)
    results, calls, client = run(server, data_dir, reqs(*[f"q{i}" for i in range(n)]))
    assert all(r.ok for r in results) and [r.parsed.echo for r in results] == [f"q{i}" for i in range(n)]
    assert client.network_calls == n - len(done_before)
    restored = {json.loads(json.dumps(e))["row"]["item_id"] for e in done_before.values()}
    assert calls.height == n and calls["item_id"].n_unique() == n
    assert set(calls.filter(~pl.col("cached"))["item_id"]) >= restored  # original rows kept as they were
    assert server.completions() - asked_before == client.network_calls
    assert not journal_path.exists()


def test_concurrent_shards_in_threads_share_the_concurrency_limit(fake_llm, tmp_path):
    server = fake_llm(latency_s=0.02)
    settings = server.settings(**{**FAST, "max_concurrency": 3})
    out = {}

    def shard(k: int) -> None:
        client = LLMClient(settings, Warehouse(tmp_path / "wh"))
        out[k] = client.run(reqs(*[f"s{k}-{i}" for i in range(15)]), stage="t", fingerprint="fp", shard=str(k))

    threads = [threading.Thread(target=shard, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r.ok for k in range(3) for r in out[k])
    assert server.max_inflight <= 3


def test_server_gone_for_good_stops_the_run_and_a_rerun_resumes(fake_llm, data_dir):

    from tasks.llm_client import ServerUnavailable

    server = fake_llm(latency_s=0.02)
    names = [f"q{i}" for i in range(40)]
    settings = {**FAST, "max_retries": 1000, "server_down_after_s": 0.5}
    out: dict = {}

    def shard() -> None:
        try:
            run(server, data_dir, reqs(*names), **settings)
        except ServerUnavailable as exc:
            out["error"] = exc

    worker = threading.Thread(target=shard)
    worker.start()
    while server.completions() < 8:
        time.sleep(0.01)
    server.kill()
    worker.join(60)
    assert "webinstruct serve" in str(out["error"])  # fails fast, says what to start
    journal = ShardJournal(data_dir / "_cache" / "llm_journal" / "fp" / "t-s1.jsonl").load()
    assert 1 <= len(journal) < 40 and all(e["status"] == "ok" for e in journal.values())

    server.restart()
    results, calls, client = run(server, data_dir, reqs(*names), **settings)
    assert all(r.ok for r in results) and client.network_calls == 40 - len(journal)
    assert calls.height == 40 and calls["item_id"].n_unique() == 40 and (calls["status"] == "ok").all()


def test_api_key_comes_from_the_environment_and_is_never_stored(fake_llm, data_dir, monkeypatch):
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("MY_LLM_KEY", secret)
    server = fake_llm()
    results, calls, _ = run(server, data_dir, reqs("a"), api_key_env="MY_LLM_KEY")
    assert results[0].ok and f"Bearer {secret}" in server.authorizations
    assert "api_key" not in server.settings().model_dump()  # settings (and so forms) have no key field
    stored = [p.read_bytes() for p in Warehouse(data_dir).root.rglob("*") if p.is_file()]
    assert stored and not any(secret.encode() in b for b in stored)
