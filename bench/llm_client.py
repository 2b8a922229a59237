"""Bench: our LLM client vs a bare AsyncOpenAI gather loop, on the scripted server in a process.

1. A fast server (no latency): requests/s of LLMClient.run (cache misses: cache writes, journal,
   validation and the llm_calls shard included) vs a bare semaphore + asyncio.gather loop with the
   same concurrency. Target: ratio >= 0.9.
2. A server with 50 ms latency per request: the time-weighted mean of requests in flight, as
   measured by the server, over the concurrency limit. Target: >= 95% busy. Every reply comes
   back at the same moment, so the client handles them one after another: each slot waits for
   the client CPU spent on the replies ahead of it (about c/2 x the CPU per request, printed in 1).

    .venv/bin/python bench/llm_client.py [--n 2000] [--concurrency 8]
"""
from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pydantic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import add_results_arg, row, write_results  # noqa: E402
from tasks.llm_client import LLMClient, LLMRequest, LLMSettings, response_format  # noqa: E402
from warehouse import Warehouse  # noqa: E402

PREFIX = {"role": "system", "content": "Repeat the user's text as {\"echo\": ...}. " * 8}


class Echo(pydantic.BaseModel):
    echo: str


def requests(n: int, tag: str) -> list[LLMRequest]:
    return [LLMRequest(f"{tag}{i}", [PREFIX, {"role": "user", "content": f"{tag} item {i}"}], Echo) for i in range(n)]


@contextmanager
def fake_server(latency_ms: float):
    proc = subprocess.Popen([sys.executable, "-m", "tests.fake_llm_server", "--latency-ms", str(latency_ms)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(10)


def stats(url: str, action: str) -> dict:
    return httpx.get(url.removesuffix("/v1") + f"/{action}", timeout=10).json()


async def bare_loop(url: str, reqs: list[LLMRequest], concurrency: int) -> int:
    client = openai.AsyncOpenAI(base_url=url, api_key="local", max_retries=0,
                                http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency)))
    sem = asyncio.Semaphore(concurrency)

    async def one(r: LLMRequest) -> str | None:
        async with sem:
            resp = await client.chat.completions.create(model="fake-model", messages=r.messages, temperature=0.0,
                                                        max_tokens=768, response_format=response_format(Echo))
            return resp.choices[0].message.content

    out = await asyncio.gather(*(one(r) for r in reqs))
    await client.close()
    return len(out)


def ours(url: str, reqs: list[LLMRequest], concurrency: int, tag: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        client = LLMClient(LLMSettings(base_urls=[url], model="fake-model", max_concurrency=concurrency), Warehouse(tmp))
        res = client.run(reqs, stage="bench", fingerprint=tag, shard="0")
        assert all(r.ok for r in res), [r.error for r in res if not r.ok][:3]
        return len(res)


def timed(fn, cpu: list | None = None) -> float:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    if cpu is not None:
        cpu.append(time.process_time() - c0)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    add_results_arg(ap)
    args = ap.parse_args()
    c = args.concurrency

    with fake_server(0) as url:
        asyncio.run(bare_loop(url, requests(50, "warm"), c))
        ours(url, requests(50, "warm"), c, "warm")
        cpu: list[float] = []
        t_bare = timed(lambda: asyncio.run(bare_loop(url, requests(args.n, "bare"), c)), cpu)
        t_ours = timed(lambda: ours(url, requests(args.n, "ours"), c, "ours"), cpu)
    bare_rps, ours_rps = args.n / t_bare, args.n / t_ours
    print(f"fast server, {args.n} requests, concurrency {c}: bare AsyncOpenAI {bare_rps:.0f} req/s, "
          f"LLMClient {ours_rps:.0f} req/s, ratio {ours_rps / bare_rps:.2f} (target >= 0.90); client CPU per "
          f"request: bare {cpu[0] / args.n * 1e3:.2f} ms, LLMClient {cpu[1] / args.n * 1e3:.2f} ms")

    n_slow = max(c * 40, 200)
    with fake_server(args.latency_ms) as url:
        ours(url, requests(c, "warm"), c, "warm")
        stats(url, "reset")
        t = timed(lambda: ours(url, requests(n_slow, "slow"), c, "slow"))
        s_ours = stats(url, "reset")
        asyncio.run(bare_loop(url, requests(n_slow, "bslow"), c))
        s_bare = stats(url, "stats")
    busy, busy_bare = s_ours["mean_inflight"] / c, s_bare["mean_inflight"] / c
    ideal = n_slow / c * args.latency_ms / 1000
    print(f"{args.latency_ms:.0f} ms server, {n_slow} requests, concurrency {c}: LLMClient keeps {busy:.1%} of the "
          f"limit busy (bare loop {busy_bare:.1%}; target >= 95%), wall {t:.2f}s vs ideal {ideal:.2f}s, "
          f"max in flight {s_ours['max_inflight']}")
    write_results(args.results, "llm_client", "LLM client: throughput and busy slots vs a bare AsyncOpenAI loop", [
        row(f"requests/s, fast local server, concurrency {c}", ours_rps, "bare AsyncOpenAI gather loop", bare_rps,
            "req/s", ">= 0.9x"),
        row("client CPU per request", cpu[1] / args.n * 1e3, "bare AsyncOpenAI gather loop", cpu[0] / args.n * 1e3,
            "ms (lower is better)"),
        row(f"share of the concurrency limit busy, {args.latency_ms:.0f} ms server", 100 * busy,
            "bare AsyncOpenAI gather loop", 100 * busy_bare, "%", ">= 95%"),
    ], [f"{args.n} requests to a local fake server (tests/fake_llm_server.py, its own process) with no latency, "
        f"then {n_slow} to one answering after {args.latency_ms:.0f} ms; busy = the server's time-weighted mean of "
        "requests in flight over the limit",
        "ours includes the response cache and journal writes, pydantic validation and the llm_calls shard",
        "every reply of a batch arrives at once and is handled one after another; each slot then waits for the "
        "client CPU of the replies ahead of it, and the server shares the 2 cores with the client"])


if __name__ == "__main__":
    main()
