"""Durable state of the LLM client: the response cache and the per-shard journal.

The cache (one SQLite file in WAL mode under <warehouse>/_cache/llm/) maps a request key to a
reply that parsed and validated; it never holds failures, so a rerun retries them. Several
processes (Dask workers on one host) may share it: WAL lets readers run beside one writer.

The journal (<warehouse>/_cache/llm_journal/<fingerprint>/<shard>.jsonl) gets one line per
finished request of the shard in flight, flushed as it finishes. A process killed mid-shard
loses only its in-flight requests: the rerun restores the journalled results and their
`llm_calls` rows as they were, so nothing is asked twice or logged twice. The journal is
deleted once the shard's `llm_calls` rows are published.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator


class ResponseCache:
    def __init__(self, path: Path, batch: int = 64):
        path.parent.mkdir(parents=True, exist_ok=True)
        # puts are committed in batches (one fsync-free WAL commit each); a crash loses at most a
        # batch of cache entries, and the shard journal still has those replies
        self.batch, self._pending = batch, []
        self.db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self._init_schema()

    def _init_schema(self, tries: int = 200) -> None:
        # Switching to WAL ignores the busy timeout: shards starting together (threads, workers)
        # get "database is locked" while one of them creates the file, so wait and try again.
        for attempt in range(tries):
            try:
                if self.db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.execute(
                    "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, raw TEXT NOT NULL,"
                    " prompt_tokens INTEGER, completion_tokens INTEGER, finish_reason TEXT, created_at REAL)"
                )
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == tries - 1:
                    raise
                time.sleep(0.05)

    def get(self, key: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT raw, prompt_tokens, completion_tokens, finish_reason FROM responses WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        return dict(raw=row[0], prompt_tokens=row[1], completion_tokens=row[2], finish_reason=row[3])

    def put(self, key: str, model: str, raw: str, prompt_tokens: int | None, completion_tokens: int | None,
            finish_reason: str | None) -> None:
        self._pending.append((key, model, raw, prompt_tokens, completion_tokens, finish_reason, time.time()))
        if len(self._pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            with self.db:  # one transaction
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)", self._pending)
            self._pending = []

    def __len__(self) -> int:
        self.flush()
        return self.db.execute("SELECT count(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self.flush()
        self.db.close()


class ShardJournal:
    """Append-only JSONL of finished requests of one shard, keyed by their slot in the shard."""

    def __init__(self, path: Path):
        self.path = path
        self._fh = None

    def load(self) -> dict[str, dict[str, Any]]:
        """Entries by slot; a line cut short by a crash is ignored (its request runs again)."""
        if not self.path.exists():
            return {}
        entries: dict[str, dict[str, Any]] = {}
        for line in self._lines():
            try:
                entry = json.loads(line)
                entries[entry["slot"]] = entry
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
        return entries

    def _lines(self) -> Iterator[str]:
        with open(self.path, encoding="utf-8") as fh:
            yield from fh

    def append(self, entry: dict[str, Any]) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
        self._fh.flush()  # a killed process keeps what reached the OS; fsync is not worth its cost here

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        try:
            os.rmdir(self.path.parent)
        except OSError:
            pass
