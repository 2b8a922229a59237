"""A scripted OpenAI-compatible server on loopback, for fault injection and benchmarks.

Raw HTTP/1.1 over asyncio streams (not a web framework) so a test can do what real servers
do on bad days: drop a connection without a reply, stall past the client's timeout, send a
garbled 200, answer 429 with Retry-After, or vanish entirely and come back on the same port.

    server = FakeLLMServer(plan={"q3": [error(500), error(500)]}).start()
    settings = server.settings(timeout_s=0.5)        # LLMSettings pointing at it
    server.kill(); server.restart()                  # a crash and a restart, same port

By default every chat completion answers `{"echo": "<last user message>"}`. `plan` maps a
last-user-message to the actions its successive arrivals get (then the default); `script`
(a callable of the request JSON) decides for every request instead; `responder=always({...})`
gives every request one reply. `python -m
tests.fake_llm_server --port P --latency-ms 50` runs one as a process (bench/llm_client.py).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

REASONS = {200: "OK", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable", 400: "Bad Request"}


@dataclass
class Action:
    kind: str = "ok"  # ok | status | drop | garbled
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content: str | None = None  # completion text; None = the default responder's
    delay_s: float = 0.0  # wait before answering (past the client's timeout = a timeout)
    finish_reason: str = "stop"


def ok(content: str | None = None, finish_reason: str = "stop", delay_s: float = 0.0) -> Action:
    return Action("ok", content=content, finish_reason=finish_reason, delay_s=delay_s)


def error(status: int, retry_after: float | None = None) -> Action:
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
    return Action("status", status=status, headers=headers)


def stall(seconds: float) -> Action:
    return Action("ok", delay_s=seconds)


def drop() -> Action:
    return Action("drop")


def garbled() -> Action:
    return Action("garbled")


def last_user(body: dict) -> str:
    return next((m.get("content", "") for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")


def echo(body: dict) -> str:
    return json.dumps({"echo": last_user(body)})


def always(reply: dict) -> Callable[[dict], str]:
    """A responder that gives every request the same JSON reply (a model that stopped reading)."""
    text = json.dumps(reply)
    return lambda body: text


class FakeLLMServer:
    def __init__(self, *, plan: dict[str, list[Action]] | None = None,
                 script: Callable[[dict], Action | None] | None = None,
                 responder: Callable[[dict], str] = echo, model: str = "fake-model",
                 latency_s: float = 0.0, host: str = "127.0.0.1", port: int = 0):
        self.plan = {k: list(v) for k, v in (plan or {}).items()}
        self.script, self.responder, self.model = script, responder, model
        self.latency_s, self.host, self.port = latency_s, host, port
        self.log: list[tuple[str, str]] = []  # (last user message, action kind) per completion request
        self.arrivals: dict[str, int] = defaultdict(int)
        self.authorizations: set[str] = set()  # Authorization headers seen
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task] = set()
        self._inflight, self._busy, self._t_first, self._t_last, self._t_mark = 0, 0.0, None, None, 0.0
        self.max_inflight = 0

    # ---- lifecycle (called from the test's thread) ------------------------------------------
    def start(self) -> "FakeLLMServer":
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-llm", daemon=True)
        self._thread.start()
        return self.restart()

    def restart(self) -> "FakeLLMServer":
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def kill(self) -> None:
        """Stop listening and cut every open connection, like a crashed server."""
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)

    def stop(self) -> None:
        if self._thread is None:
            return
        self.kill()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def settings(self, **overrides):
        from tasks.llm_client import LLMSettings

        return LLMSettings(base_urls=[self.base_url], model=self.model, **overrides)

    def completions(self, kind: str | None = None) -> int:
        with self._lock:
            return sum(1 for _, k in self.log if kind is None or k == kind)

    # ---- the server (runs in its own thread's loop) -----------------------------------------
    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port, reuse_address=True,
                                                  backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._conns.add(task)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        except asyncio.CancelledError:
            writer.transport.abort()  # killed: the client sees the connection reset
            raise
        finally:
            self._conns.discard(task)
            writer.close()

    async def _one_request(self, reader, writer) -> bool:
        line = await reader.readline()
        if not line:
            return False
        method, path, _ = line.decode("latin-1").split(" ", 2)
        headers = {}
        while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
            k, _, v = h.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        body = await reader.readexactly(int(headers.get("content-length", 0) or 0))
        self.authorizations.add(headers.get("authorization", ""))
        path = path.split("?", 1)[0].rstrip("/")
        if path.endswith("/models"):
            return await self._send(writer, 200, {"object": "list", "data": [{"id": self.model, "object": "model"}]})
        if path == "/health":
            return await self._send(writer, 200, {"status": "ok"})
        if path == "/stats":
            return await self._send(writer, 200, self.stats())
        if path == "/reset":  # answers the stats up to now, then starts over
            before = self.stats()
            self.reset_stats()
            return await self._send(writer, 200, before)
        if not path.endswith("/chat/completions") or method != "POST":
            return await self._send(writer, 404, {"error": {"message": f"no route {method} {path}"}})
        return await self._completion(writer, json.loads(body))

    async def _completion(self, writer, body: dict) -> bool:
        msg = last_user(body)
        with self._lock:
            self.arrivals[msg] += 1
            queue = self.plan.get(msg)
            action = (self.script(body) if self.script else None) or (queue.pop(0) if queue else None) or Action()
            self.log.append((msg, action.kind if action.kind != "status" else str(action.status)))
        self._enter()
        try:
            if action.delay_s or self.latency_s:
                await asyncio.sleep(action.delay_s or self.latency_s)
            if action.kind == "drop":
                writer.transport.abort()
                return False
            if action.kind == "garbled":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"id\": [1")
                await writer.drain()
                return True
            if action.kind == "status":
                return await self._send(writer, action.status, {"error": {"message": f"scripted {action.status}"}},
                                        action.headers)
            content = action.content if action.content is not None else self.responder(body)
            return await self._send(writer, 200, {
                "id": f"chatcmpl-{len(self.log)}", "object": "chat.completion", "created": int(time.time()),
                "model": self.model,
                "choices": [{"index": 0, "finish_reason": action.finish_reason,
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": len(json.dumps(body["messages"])) // 4,
                          "completion_tokens": len(content) // 4,
                          "total_tokens": len(json.dumps(body["messages"])) // 4 + len(content) // 4},
            })
        finally:
            self._leave()

    async def _send(self, writer, status: int, payload: dict, headers: dict | None = None) -> bool:
        data = json.dumps(payload).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\n{extra}\r\n".encode() + data)
        await writer.drain()
        return True

    # ---- busy accounting: time-weighted requests in flight (bench: how full the client keeps it)
    def _tick(self) -> float:
        now = time.perf_counter()
        self._busy += self._inflight * (now - self._t_mark)
        self._t_mark = now
        return now

    def _enter(self) -> None:
        now = self._tick()
        self._t_first = self._t_first or now
        self._inflight += 1
        self.max_inflight = max(self.max_inflight, self._inflight)

    def _leave(self) -> None:
        self._t_last = self._tick()
        self._inflight -= 1

    def reset_stats(self) -> None:
        self._busy, self._t_first, self._t_last, self.max_inflight = 0.0, None, None, self._inflight

    def stats(self) -> dict:
        span = (self._t_last - self._t_first) if self._t_first and self._t_last else 0.0
        return {"completions": len(self.log), "busy_s": self._busy, "span_s": span,
                "mean_inflight": self._busy / span if span else 0.0, "max_inflight": self.max_inflight}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--model", default="fake-model")
    args = ap.parse_args()
    server = FakeLLMServer(port=args.port, latency_s=args.latency_ms / 1000, model=args.model).start()
    print(server.base_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
