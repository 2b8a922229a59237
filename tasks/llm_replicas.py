"""Several OpenAI-compatible endpoints behind one LLM client: slots, spread, prefix affinity.

Every base URL is an endpoint with its own in-flight limit, `max_concurrency` x its weight
(`base_url_weights`), shared by all shards of the process (Prefect runs shards in threads), so
N data-parallel vLLM replicas take N x max_concurrency requests at once. A request goes to the
endpoint its prompt prefix prefers (weighted rendezvous hashing of the fixed messages over the
live endpoints), so that replica's prefix cache serves it, unless the preferred one has
noticeably more in flight (per unit of weight) than the least loaded one with a free slot:
then the least loaded takes it. An endpoint that refused a connection is avoided for DOWN_S
seconds unless every endpoint is. A request that finds no free slot waits in line (FIFO, so
the send order the client chose is kept).

Each slot is a lane: an openai.AsyncOpenAI client (max_retries=0: the LLM client retries itself)
over an httpx client holding one keep-alive connection. httpcore's pool checks every pooled
connection on each request (a poll() per connection); one connection per lane keeps that
constant (measured with bench/llm_client.py: ~1 ms less client CPU per request). The client
posts the JSON-encoded body to `chat_url` with cast_to=httpx.Response, which skips openai's
typed request transform and response parsing (the expensive part with a schema attached) and
parses the JSON reply itself.
"""
from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import json
import math
import threading
import time

import httpx
import openai

DOWN_S = 2.0  # how long an endpoint that refused a connection is avoided
POLL_S = 0.003  # waiters look this often for slots freed by other threads' shards


class Endpoint:
    """Process-wide state of one endpoint at one limit: requests in flight, when it last refused."""

    def __init__(self, url: str, capacity: int):
        self.url, self.capacity = url, capacity
        self.inflight = 0
        self.down_until = 0.0


_ENDPOINTS: dict[tuple[str, int], Endpoint] = {}
_LOCK = threading.Lock()  # guards every Endpoint's counters (shards in threads share them)


def endpoint(url: str, capacity: int) -> Endpoint:
    with _LOCK:
        return _ENDPOINTS.setdefault((url, capacity), Endpoint(url, capacity))


def prefix_key(messages: list[dict]) -> str:
    """The fixed part of a prompt (every message but the last: instructions, few-shot turns), hashed."""
    text = json.dumps(messages[:-1], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def send_order(prefixes: list[str], todo: list[int]) -> list[int]:
    """The order to send `todo` in: grouped by prompt prefix (groups in order of first appearance),
    input order within a group (callers list a page's chunks together). Deterministic."""
    rank: dict[str, int] = {}
    for i in todo:
        rank.setdefault(prefixes[i], len(rank))
    return sorted(todo, key=lambda i: (rank[prefixes[i]], i))


@functools.lru_cache(maxsize=4096)
def preference(key: str, endpoints: tuple[tuple[str, float], ...]) -> tuple[str, ...]:
    """Endpoint URLs best first for a prefix: weighted rendezvous (highest random weight) hashing,
    so adding or removing one endpoint moves only the prefixes it wins or held."""
    def score(url: str, weight: float) -> float:
        h = int.from_bytes(hashlib.blake2b(f"{key}|{url}".encode(), digest_size=8).digest(), "big")
        return -weight / math.log((h + 0.5) / 2 ** 64)
    return tuple(u for u, _ in sorted(endpoints, key=lambda e: -score(*e)))


@functools.lru_cache(maxsize=1)
def _ssl_context():
    return httpx.create_ssl_context()  # loading the CA bundle costs ~0.2 s: once per process


class Replica:
    """One endpoint as seen by one run (one event loop): its lanes and its process-wide counters."""

    def __init__(self, url: str, weight: float, capacity: int, timeout_s: float, api_key: str):
        self.url, self.weight = url, weight
        self.ep = endpoint(url.rstrip("/"), capacity)
        self.chat_url = url.rstrip("/") + "/chat/completions"
        self._timeout, self._api_key = timeout_s, api_key
        self._idle: list[openai.AsyncOpenAI] = []
        self._lanes: list[openai.AsyncOpenAI] = []

    @property
    def load(self) -> float:
        return self.ep.inflight / self.weight

    def lane(self) -> openai.AsyncOpenAI:
        if self._idle:
            return self._idle.pop()
        http = httpx.AsyncClient(timeout=self._timeout, limits=httpx.Limits(max_connections=1,
                                 max_keepalive_connections=1),
                                 verify=_ssl_context() if self.url.startswith("https") else False)
        lane = openai.AsyncOpenAI(base_url=self.url, api_key=self._api_key, timeout=self._timeout,
                                  max_retries=0, http_client=http)
        self._lanes.append(lane)
        return lane

    def put_back(self, lane: openai.AsyncOpenAI) -> None:
        self._idle.append(lane)

    async def close(self) -> None:
        await asyncio.gather(*(lane.close() for lane in self._lanes), return_exceptions=True)


class ReplicaPool:
    """The endpoints of one run: `acquire` a slot (waits in line when all are busy), `release` it."""

    def __init__(self, settings):
        weights = settings.base_url_weights or [1.0] * len(settings.base_urls)
        key = settings.api_key()
        self.replicas = [Replica(u, w, max(1, round(settings.max_concurrency * w)), settings.timeout_s, key)
                         for u, w in zip(settings.base_urls, weights)]
        self._by_url = {r.url: r for r in self.replicas}
        self._spec = tuple((r.url, r.weight) for r in self.replicas)
        # "noticeably more in flight": a quarter of one endpoint's limit, at least 2 requests
        self.slack = max(2.0, settings.max_concurrency / 4)
        self._waiters: collections.deque[tuple[asyncio.Future, str, str | None]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def pick(self, key: str, prefer: str | None = None) -> Replica | None:
        """The endpoint for a request with prefix `key` (or one that should go to `prefer`), counted
        in flight; None when every usable endpoint is full."""
        now = time.monotonic()
        with _LOCK:
            live = [r for r in self.replicas if r.ep.down_until <= now] or self.replicas
            free = [r for r in live if r.ep.inflight < r.ep.capacity]
            if not free:
                return None
            least = min(free, key=lambda r: r.load)
            urls = {r.url for r in live}
            ranked = ((prefer,) if prefer in urls else ()) + preference(key, self._spec)
            best = self._by_url[next(u for u in ranked if u in urls)]
            rep = best if best in free and best.load - least.load <= self.slack else least
            rep.ep.inflight += 1
            return rep

    async def acquire(self, key: str, prefer: str | None = None) -> Replica:
        if not self._waiters and (rep := self.pick(key, prefer)) is not None:
            return rep
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((fut, key, prefer))
        self._dispatch()
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed a slot just as it was cancelled
                self.release(fut.result())
            raise

    def release(self, rep: Replica, lane: openai.AsyncOpenAI | None = None) -> None:
        if lane is not None:
            rep.put_back(lane)
        with _LOCK:
            rep.ep.inflight -= 1
        self._dispatch()

    def mark_down(self, rep: Replica) -> None:
        rep.ep.down_until = time.monotonic() + DOWN_S

    def _dispatch(self) -> None:
        """Hand free slots to the waiters in line; look again soon if some are left waiting."""
        while self._waiters:
            fut, key, prefer = self._waiters[0]
            if fut.done():  # cancelled while waiting
                self._waiters.popleft()
                continue
            rep = self.pick(key, prefer)
            if rep is None:
                break
            self._waiters.popleft()
            fut.set_result(rep)
        if self._waiters and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(POLL_S, self._poll)

    def _poll(self) -> None:
        self._timer = None
        self._dispatch()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await asyncio.gather(*(r.close() for r in self.replicas), return_exceptions=True)
