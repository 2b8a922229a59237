"""Several endpoints behind one LLM client: spread by load, prefix affinity, a dead replica, send order."""
from __future__ import annotations

import collections

import pydantic
import pytest

from tasks.llm_client import LLMClient, LLMRequest, LLMSettings, request_key
from tasks.llm_replicas import preference, prefix_key, send_order
from warehouse import Warehouse
from webinstruct.llm_server import free_port

FAST = dict(timeout_s=2.0, backoff_base_s=0.01, backoff_max_s=0.05, max_retries=4, model="fake-model")


class Echo(pydantic.BaseModel):
    echo: str


def req(prefix: int, name: str) -> LLMRequest:
    return LLMRequest(name, [{"role": "system", "content": f"Fixed instructions number {prefix}. Echo."},
                             {"role": "user", "content": name}], Echo)


def run(data_dir, urls, requests, shard="s1", **settings):
    wh = Warehouse(data_dir)
    client = LLMClient(LLMSettings(base_urls=urls, **{**FAST, **settings}), wh)
    results = client.run(requests, stage="t", fingerprint="fp", shard=shard)
    return results, wh.read_shard("llm_calls", "fp", f"t-{shard}"), client


def winner(request: LLMRequest, urls: list[str]) -> str:
    return preference(prefix_key(request.messages), tuple((u, 1.0) for u in urls))[0]


def test_load_spreads_by_requests_in_flight(fake_llm, data_dir):
    fast, slow = fake_llm(latency_s=0.01), fake_llm(latency_s=0.5)
    # one prefix for all: without load, every request would prefer the same replica
    results, calls, _ = run(data_dir, [slow.base_url, fast.base_url], [req(0, f"q{i}") for i in range(40)],
                            max_concurrency=2)
    assert all(r.ok for r in results)
    assert fast.completions() + slow.completions() == 40
    assert 1 <= slow.completions() and fast.completions() >= 3 * slow.completions()
    assert fast.max_inflight <= 2 and slow.max_inflight <= 2  # the limit is per endpoint
    assert set(calls["base_url"]) == {fast.base_url, slow.base_url}


def test_weights_scale_an_endpoints_limit(fake_llm, data_dir):
    big, small = fake_llm(latency_s=0.05), fake_llm(latency_s=0.05)
    results, _, _ = run(data_dir, [big.base_url, small.base_url], [req(i % 4, f"q{i}") for i in range(40)],
                        max_concurrency=2, base_url_weights=[3, 1])
    assert all(r.ok for r in results)
    assert (big.max_inflight, small.max_inflight) == (6, 2)
    assert big.completions() > small.completions()
    with pytest.raises(pydantic.ValidationError, match="base_url_weights"):
        LLMSettings(base_urls=["http://a/v1", "http://b/v1"], base_url_weights=[1.0])


def test_a_prefix_sticks_to_one_endpoint_while_load_allows(fake_llm, data_dir):
    a, b = fake_llm(), fake_llm()
    urls = [a.base_url, b.base_url]
    by_name = {}
    for k in range(16):  # one small shard per prompt prefix: far below the limit
        shard = [req(k, f"p{k}-{j}") for j in range(3)]
        results, calls, _ = run(data_dir, urls, shard, shard=f"s{k}", max_concurrency=8)
        assert all(r.ok for r in results)
        assert set(calls["base_url"]) == {winner(shard[0], urls)}  # all three on the prefix's replica
        by_name.update({r.item_id: winner(shard[0], urls) for r in shard})
    served = {a.base_url: [m for m, _ in a.log], b.base_url: [m for m, _ in b.log]}
    assert all(name in served[url] for name, url in by_name.items())
    assert a.log and b.log  # rendezvous hashing gives each replica its share of the prefixes


def test_a_dead_endpoint_s_requests_move_to_the_live_one(fake_llm, data_dir):
    live = fake_llm(latency_s=0.01)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    requests = [req(i % 8, f"q{i}") for i in range(32)]
    assert any(winner(r, [dead, live.base_url]) == dead for r in requests)  # some prefer the dead one
    results, calls, _ = run(data_dir, [dead, live.base_url], requests, max_concurrency=4)
    assert [r.item_id for r in results] == [r.item_id for r in requests] and all(r.ok for r in results)
    assert set(calls["base_url"]) == {live.base_url} and live.completions() == 32
    assert calls["attempts"].max() > 1  # the first ones tried the dead replica, then moved


def test_a_dead_endpoint_beside_the_real_server(llm_server, data_dir):
    from tests.test_llm_client import capital_requests

    dead = f"http://127.0.0.1:{free_port()}/v1"
    settings = llm_server.model_copy(update={"base_urls": [dead, *llm_server.base_urls], "backoff_base_s": 0.01,
                                             "backoff_max_s": 0.05})
    wh = Warehouse(data_dir)
    requests = capital_requests(["France", "Japan"])
    results = LLMClient(settings, wh).run(requests, stage="geo", fingerprint="fp", shard="0")
    assert [r.item_id for r in results] == [r.item_id for r in requests]
    assert all(r.status != "connection_error" for r in results) and any(r.ok for r in results)
    assert set(wh.read_shard("llm_calls", "fp", "geo-0")["base_url"]) == set(llm_server.base_urls)


def test_send_order_groups_prefixes_results_and_keys_keep_input_order(fake_llm, data_dir):
    server = fake_llm()
    requests = [req(i % 3, f"q{i}") for i in range(12)]  # prefixes interleaved: 0 1 2 0 1 2 ...
    results, calls, client = run(data_dir, [server.base_url], requests, max_concurrency=1)
    sent = [m for m, _ in server.log]
    assert sent == [f"q{i}" for k in range(3) for i in range(k, 12, 3)]  # grouped by prefix, stable inside
    assert [r.item_id for r in results] == [r.item_id for r in requests]
    assert [r.parsed.echo for r in results] == [r.item_id for r in requests]
    settings = client.settings
    assert calls["item_id"].to_list() == [r.item_id for r in requests]
    assert calls["request_key"].to_list() == [request_key(settings, r) for r in requests]
    # the cache is keyed by request, not by order or replica: a rerun in another order asks nothing
    again, _, client2 = run(data_dir, [server.base_url], requests[::-1], shard="s2", max_concurrency=1)
    assert client2.network_calls == 0 and all(r.cached for r in again)
    assert send_order([prefix_key(r.messages) for r in requests], list(range(12))) == [
        i for k in range(3) for i in range(k, 12, 3)]
    assert collections.Counter(sent) == collections.Counter(r.item_id for r in requests)
