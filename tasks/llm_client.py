"""The LLM layer every LLM stage uses: one OpenAI-compatible client for one or many servers.

`LLMClient.run(requests, stage=, fingerprint=, shard=)` sends a shard's requests grouped by prompt
prefix, with a concurrency limit per endpoint, to the endpoint each prefix prefers unless it is
busier than the others (tasks/llm_replicas.py); retries 429/5xx/timeouts/
dropped connections with exponential backoff and jitter (honouring Retry-After); asks for
structured output (`response_format` json_schema) and validates it with pydantic; serves
repeated requests from a response cache; journals finished requests so a killed shard resumes;
and logs one `llm_calls` row per request. A per-request failure is a result with a reason,
never an exception.

Requests go out through openai.AsyncOpenAI (one client per slot, each over one keep-alive
connection; max_retries=0, since retries, backoff and failover to another replica happen here).
They are posted with `client.post(url, cast_to=httpx.Response, content=json_bytes)` rather than
`chat.completions.create`: that skips openai's typed request transform and response model,
which cost more client CPU per request than everything else here; the reply is parsed here.
"""
from __future__ import annotations

import asyncio
import email.utils
import functools
import hashlib
import json
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import openai
import polars as pl
import pydantic

from tasks.json_repair import repair_escapes
from tasks.llm_cache import ResponseCache, ShardJournal
from tasks.llm_replicas import Replica, ReplicaPool, prefix_key, send_order
from tasks.llm_settings import DEFAULT_BASE_URL, DEFAULT_MODEL, LLMSettings  # noqa: F401 - re-exported
from warehouse import Warehouse, content_hash, now_utc

RETRYABLE_STATUS = {408, 409, 425, 429}  # and every 5xx
TRANSIENT = {"http_error", "timeout", "connection_error", "bad_response"}
REPAIR_PROMPT = ("Your reply above is not valid: {error}. Reply again with only one JSON object "
                 "that matches the requested schema, and nothing else.")


@dataclass
class LLMRequest:
    item_id: str
    messages: list[dict[str, str]]
    response_model: type[pydantic.BaseModel]
    max_tokens: int | None = None


@dataclass
class LLMResult:
    item_id: str
    status: str
    parsed: pydantic.BaseModel | None
    raw: str | None
    error: str | None
    cached: bool = False
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class ServerUnavailable(RuntimeError):
    pass


def unavailable_message(problems: list[str]) -> str:
    return ("No usable LLM server: " + "; ".join(problems) + ". Start one with `webinstruct serve` "
            "(an embedded model on CPU) or `webinstruct serve --engine vllm --model MODEL`, or point the "
            "stage at a running OpenAI-compatible server with --base-url URL (and --model NAME).")


def check_servers(settings: LLMSettings, timeout_s: float = 5.0) -> None:
    problems = []
    for url in settings.base_urls:
        try:
            r = httpx.get(url.rstrip("/") + "/models", timeout=timeout_s,
                          headers={"Authorization": f"Bearer {settings.api_key()}"})
            r.raise_for_status()
            data = r.json().get("data", [])
            # llama.cpp lists extra names of one model under `aliases`
            served = [m.get("id") for m in data] + [a for m in data for a in m.get("aliases") or []]
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            problems.append(f"{url} does not answer ({type(exc).__name__}: {exc})")
            continue
        if served and settings.model not in served:
            problems.append(f"{url} serves {served}, not {settings.model!r}")
    if problems:
        raise ServerUnavailable(unavailable_message(problems))


# ---- pure helpers ----------------------------------------------------------------------------
@functools.lru_cache(maxsize=512)
def response_format(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """The json_schema response_format of a model (cached: schema generation is slow; do not mutate)."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", model.__name__)[:64]
    return {"type": "json_schema",
            "json_schema": {"name": name, "schema": model.model_json_schema(), "strict": True}}


def request_key(settings: LLMSettings, req: LLMRequest) -> str:
    """The cache key: everything that determines the reply (not which replica answers)."""
    payload = json.dumps({
        "model": settings.model, "messages": req.messages, "temperature": settings.temperature,
        "max_tokens": req.max_tokens or settings.max_tokens,
        "schema": response_format(req.response_model)["json_schema"],
    }, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)
def parse_reply(model: type[pydantic.BaseModel], raw: str | None,
                finish_reason: str | None) -> tuple[pydantic.BaseModel | None, str | None]:
    """Validate a completion; servers without constrained decoding may wrap JSON in fences.

    A reply cut off at max_tokens is salvaged when the model knows how (`from_truncated`: the
    complete items before the cut); the error then says what was kept."""
    if not raw or not raw.strip():
        return None, "empty completion"
    raw = repair_escapes(raw)
    candidates = [raw]
    if m := _FENCE.match(raw):
        candidates.append(m.group(1))
    if (a := raw.find("{")) >= 0 and (b := raw.rfind("}")) > a:
        candidates.append(raw[a:b + 1])
    first_error = None
    for text in candidates:
        try:
            return model.model_validate_json(text), None
        except pydantic.ValidationError as exc:
            first_error = first_error or exc
    salvage = getattr(model, "from_truncated", None)
    if finish_reason == "length" and salvage is not None and (kept := salvage(raw)) is not None:
        return kept, "truncated at max_tokens; kept the complete items before the cut"
    errs = first_error.errors(include_url=False, include_input=False)  # type: ignore[union-attr]
    detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in errs[:3])
    prefix = "truncated at max_tokens; " if finish_reason == "length" else ""
    kind = "invalid JSON" if any(e["type"] == "json_invalid" for e in errs) else "wrong shape"
    return None, f"{prefix}{kind}: {detail}"[:500]


def _retry_after(response: httpx.Response | None) -> float | None:
    value = response.headers.get("retry-after") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else None


def _run_sync(coro):
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:  # called from async code (notebook, async flow): own loop
        return pool.submit(asyncio.run, coro).result()


@dataclass
class _Reply:
    status: str
    raw: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
    base_url: str | None = None
    finish_reason: str | None = None


# ---- the client ------------------------------------------------------------------------------
class LLMClient:
    def __init__(self, settings: LLMSettings, wh: Warehouse):
        self.settings = settings
        self.wh = wh
        self.cache_path = wh.local / "_cache" / "llm" / "responses.sqlite"
        self.journal_root = wh.local / "_cache" / "llm_journal"
        self.network_calls = 0  # HTTP requests sent by this client (tests and benches read it)

    def check_server(self, timeout_s: float = 5.0) -> None:
        """Every base URL must answer /models and serve settings.model; else ServerUnavailable."""
        check_servers(self.settings, timeout_s)

    def run(self, requests: list[LLMRequest], *, stage: str, fingerprint: str, shard: str) -> list[LLMResult]:
        """Results in request order; one llm_calls row per request, published at the end of the shard."""
        if not requests:
            return []
        target = self._target_shard(fingerprint, f"{stage}-{shard}")
        journal = ShardJournal(self.journal_root / fingerprint / f"{target}.jsonl")
        keys = [request_key(self.settings, r) for r in requests]
        slots = [f"{i}:{k}" for i, k in enumerate(keys)]  # a changed request list never reuses an entry
        results: list[LLMResult | None] = [None] * len(requests)
        rows: list[dict | None] = [None] * len(requests)
        meta = dict(stage=stage, fingerprint=fingerprint, shard=target)

        cache = ResponseCache(self.cache_path)
        try:
            for i, entry in ((i, e) for i, e in enumerate(map(journal.load().get, slots)) if e):
                results[i], rows[i] = self._restore(requests[i], entry)
                if results[i].ok and not entry["cached"] and self.settings.use_cache:  # in case the batch was lost
                    row = rows[i]
                    cache.put(keys[i], self.settings.model, entry["raw"], row["prompt_tokens"],
                              row["completion_tokens"], row["finish_reason"])

            def finish(i: int, reply: _Reply, cached: bool, repaired: bool, parsed, latency: float) -> None:
                req = requests[i]
                res = LLMResult(req.item_id, reply.status, parsed, reply.raw, reply.error, cached, reply.attempts)
                row = self._row(meta, keys[i], req, reply, cached, repaired, latency)
                if res.ok and not cached and self.settings.use_cache:
                    cache.put(keys[i], self.settings.model, reply.raw, reply.prompt_tokens,
                              reply.completion_tokens, reply.finish_reason)
                journal.append({"slot": slots[i], "status": res.status, "raw": res.raw, "error": res.error,
                                "attempts": res.attempts, "cached": cached, "row": row})
                results[i], rows[i] = res, row

            todo = []
            for i, req in enumerate(requests):
                if results[i] is not None:
                    continue
                hit = cache.get(keys[i]) if self.settings.use_cache else None
                parsed = parse_reply(req.response_model, hit["raw"], hit["finish_reason"])[0] if hit else None
                if parsed is not None:
                    finish(i, _Reply("ok", hit["raw"], None, hit["prompt_tokens"], hit["completion_tokens"],
                                     0, None, hit["finish_reason"]), True, False, parsed, 0.0)
                else:
                    todo.append(i)
            if todo:
                _run_sync(self._send_all(requests, todo, finish))
        finally:
            cache.close()
            journal.close()

        df = pl.DataFrame(rows, schema=self.wh.spec("llm_calls").schema)
        self.wh.write_shard("llm_calls", fingerprint, target, df)
        journal.remove()
        return results  # type: ignore[return-value]

    # ---- internals ---------------------------------------------------------------------------
    def _target_shard(self, fingerprint: str, base: str) -> str:
        """A finished shard's rows are never overwritten: a rerun logs its calls beside them."""
        name, n = base, 0
        while self.wh.has_shard("llm_calls", fingerprint, name):
            n += 1
            name = f"{base}.r{n}"
        # journals of shards already published are leftovers of a crash just after publishing
        for old in (self.journal_root / fingerprint).glob(f"{base}*.jsonl"):
            if old.stem != name and self.wh.has_shard("llm_calls", fingerprint, old.stem):
                old.unlink(missing_ok=True)
        return name

    def _restore(self, req: LLMRequest, entry: dict) -> tuple[LLMResult, dict]:
        row = dict(entry["row"])
        parsed = (parse_reply(req.response_model, entry["raw"], row.get("finish_reason"))[0]
                  if entry["status"] == "ok" else None)
        row["created_at"] = datetime.fromisoformat(row["created_at"])
        return LLMResult(req.item_id, entry["status"], parsed, entry["raw"], entry["error"],
                         entry["cached"], entry["attempts"]), row

    def _row(self, meta: dict, key: str, req: LLMRequest, reply: _Reply, cached: bool, repaired: bool,
             latency: float) -> dict:
        return dict(
            call_id=content_hash(f"{meta['fingerprint']}|{meta['shard']}|{key}|{req.item_id}|{time.time_ns()}"),
            **meta, request_key=key, item_id=req.item_id, model=self.settings.model, base_url=reply.base_url,
            prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
            latency_s=round(latency, 6), attempts=reply.attempts, cached=cached, repaired=repaired,
            status=reply.status, finish_reason=reply.finish_reason, error=reply.error,
            raw=None if reply.status == "ok" else reply.raw, created_at=now_utc(),
        )

    async def _send_all(self, requests: list[LLMRequest], todo: list[int], finish) -> None:
        pool = ReplicaPool(self.settings)
        self._last_alive = time.monotonic()  # the last time any replica answered at all
        prefixes = {i: prefix_key(requests[i].messages) for i in todo}

        async def one(i: int) -> None:
            t0 = time.perf_counter()
            reply, parsed, repaired = await self._ask(pool, requests[i], prefixes[i])
            finish(i, reply, False, repaired, parsed, time.perf_counter() - t0)

        # a prefix's requests go out together (and to one replica while load allows): its prefix
        # is then still in that server's cache; results land in their input slots regardless
        tasks = [asyncio.ensure_future(one(i)) for i in send_order(prefixes, todo)]
        try:
            await asyncio.gather(*tasks)
        finally:  # on an abort, stop the others before their clients close under them
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await pool.close()

    async def _ask(self, pool: ReplicaPool, req: LLMRequest, prefix: str) -> tuple[_Reply, Any, bool]:
        """One request, plus at most one repair request when the reply does not validate."""
        reply = await self._complete(pool, req, req.messages, prefix)
        if reply.status != "ok":
            return reply, None, False
        parsed, error = parse_reply(req.response_model, reply.raw, reply.finish_reason)
        if parsed is not None:
            return _with(reply, error=error), parsed, False  # error: a salvage note, if any
        # A reply cut off at max_tokens would be cut off again: asking for a repair only doubles the cost.
        if not self.settings.repair_retry or reply.finish_reason == "length":
            return _with(reply, status="parse_error", error=error), None, False
        repair = req.messages + [{"role": "assistant", "content": reply.raw or ""},
                                 {"role": "user", "content": REPAIR_PROMPT.format(error=error)}]
        # the repair repeats the whole first request: the replica that answered has it cached
        second = await self._complete(pool, req, repair, prefix, prefer=reply.base_url)
        total = dict(attempts=reply.attempts + second.attempts,
                     prompt_tokens=reply.prompt_tokens + second.prompt_tokens,
                     completion_tokens=reply.completion_tokens + second.completion_tokens)
        if second.status != "ok":
            return _with(reply, status="parse_error", error=f"{error}; repair request failed: {second.error}",
                         **total), None, False
        parsed2, error2 = parse_reply(req.response_model, second.raw, second.finish_reason)
        if parsed2 is None:
            return _with(second, status="parse_error", error=f"{error}; after repair: {error2}", **total), None, False
        return _with(second, **total), parsed2, True

    async def _complete(self, pool: ReplicaPool, req: LLMRequest, messages: list[dict], prefix: str,
                        prefer: str | None = None) -> _Reply:
        """Send until a reply arrives, a non-retryable error, or the retries are spent."""
        s = self.settings
        # encoded once for all attempts, posted as bytes to the absolute URL: openai then neither
        # re-serialises the body nor merges the path into its base URL on every attempt
        body = json.dumps({"model": s.model, "messages": messages, "temperature": s.temperature,
                           "max_tokens": req.max_tokens or s.max_tokens,
                           "response_format": response_format(req.response_model)}).encode()
        attempt, unreachable_since = 0, None
        while True:
            attempt += 1
            rep: Replica = await pool.acquire(prefix, prefer)
            lane = rep.lane()
            self.network_calls += 1
            retry_after = None
            try:
                resp = await lane.post(rep.chat_url, cast_to=httpx.Response, content=body)
                self._last_alive = time.monotonic()
                data = resp.json()
                choice = data["choices"][0]
                usage = data.get("usage") or {}
                return _Reply("ok", choice["message"].get("content"), None, usage.get("prompt_tokens") or 0,
                              usage.get("completion_tokens") or 0, attempt, rep.url, choice.get("finish_reason"))
            except openai.APIStatusError as exc:
                self._last_alive = time.monotonic()
                code = exc.status_code
                status, error = "http_error", f"HTTP {code}: {str(exc.message)[:300]}"
                retryable = code >= 500 or code in RETRYABLE_STATUS
                retry_after = _retry_after(exc.response)
            except openai.APITimeoutError:
                status, error, retryable = "timeout", f"no reply within {s.timeout_s}s", True
            except openai.APIConnectionError as exc:  # refused, reset, closed without a reply
                cause = exc.__cause__ or exc
                status, error, retryable = "connection_error", f"{type(cause).__name__}: {cause}"[:300], True
                pool.mark_down(rep)
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - self._last_alive > s.server_down_after_s:
                    raise ServerUnavailable(unavailable_message(
                        [f"no connection to {', '.join(s.base_urls)} for {s.server_down_after_s:g}s ({error})"]))
            except Exception as exc:  # noqa: BLE001 - a garbled 200 (bad JSON envelope, no choices)
                status, error, retryable = "bad_response", f"{type(exc).__name__}: {exc}"[:300], True
            finally:
                pool.release(rep, lane)
            # A server that restarts (a model loads for a minute) costs no request: while it is
            # unreachable for less than server_down_after_s the retries do not run out.
            restarting = status == "connection_error" and time.monotonic() - unreachable_since < s.server_down_after_s
            if not retryable or (attempt > s.max_retries and not restarting):
                return _Reply(status, None, f"{error} (after {attempt} attempt{'s' * (attempt > 1)})",
                              attempts=attempt, base_url=rep.url)
            await asyncio.sleep(self._delay(attempt, retry_after))

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        s = self.settings
        if retry_after is not None:  # the server said when; a little jitter spreads the herd
            return min(retry_after, s.retry_after_max_s) + random.uniform(0, s.backoff_base_s / 4)
        ceiling = min(s.backoff_max_s, s.backoff_base_s * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def _with(reply: _Reply, **changes) -> _Reply:
    return _Reply(**{**reply.__dict__, **changes})
