"""Seed documents: the user's positive examples for the first recall round.

Accepted files: JSON lines (`.jsonl`, or `.json` holding one object per line), a JSON list
(`.json`), Parquet (`.parquet`) and plain text (`.txt`: one example per non-empty line).
A record's text is its `text` field when it has one; otherwise the problem-like fields
(body, question, options, ...) followed by the answer-like ones (rationale, solution,
answer, ...) joined with newlines, so GSM8K, AQuA-RAT, SVAMP, MATH-style files all work as-is.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from warehouse import content_hash

SEEDS_VERSION = "1"
DEFAULT_SEED_DIR = Path(__file__).resolve().parents[1] / "data" / "seeds"
DEFAULT_SEEDS = [
    str(DEFAULT_SEED_DIR / name)
    for name in ("gsm8k_train.jsonl", "aqua_rat_dev.json", "aqua_rat_test.json", "svamp.json")
]

# Field names (case-insensitive) in the order they are joined: context, then the problem,
# then choices, then the worked answer. `text` alone wins over all of them.
FIELD_ORDER = ("title", "body", "context", "question", "problem", "instruction", "input", "prompt",
               "options", "choices", "rationale", "solution", "explanation", "answer", "output",
               "response", "target")


def record_text(rec: Any) -> str:
    """The seed text of one record (a dict, or a plain string)."""
    if isinstance(rec, str):
        return rec.strip()
    if not isinstance(rec, dict):
        return ""
    by_name = {str(k).lower(): v for k, v in rec.items()}
    if by_name.get("text"):
        return str(by_name["text"]).strip()
    parts = []
    for name in FIELD_ORDER:
        v = by_name.get(name)
        if v is None or v == "":
            continue
        parts.append(" ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))
    return "\n".join(p.strip() for p in parts if str(p).strip())


def _read_records(path: Path) -> list[Any]:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return pl.read_parquet(path).to_dicts()
    text = path.read_text(encoding="utf-8")
    if name.endswith(".txt"):
        return [line for line in text.splitlines() if line.strip()]
    stripped = text.lstrip()
    if name.endswith(".json") and stripped.startswith("["):
        return json.loads(stripped)
    if name.endswith((".json", ".jsonl", ".ndjson")):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    raise ValueError(f"seed file {path}: unsupported format (use .jsonl, .json, .parquet or .txt)")


def load_seeds(paths: list[str] | None = None) -> pl.DataFrame:
    """All seed examples as rows (seed_id, source, text); empty texts are dropped."""
    rows = []
    for p in paths or DEFAULT_SEEDS:
        path = Path(p).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"seed file not found: {p}")
        for i, rec in enumerate(_read_records(path)):
            text = record_text(rec)
            if text:
                rows.append((f"seed:{path.name}:{i}", path.name, text))
    if not rows:
        raise ValueError(f"no seed examples found in {paths or DEFAULT_SEEDS}")
    return pl.DataFrame(rows, schema={"seed_id": pl.String, "source": pl.String, "text": pl.String}, orient="row")


def seeds_fingerprint(paths: list[str] | None = None) -> str:
    """Content hash of the seed files: editing a seed file makes new recall versions."""
    digests = sorted(content_hash(Path(p).expanduser().read_bytes()) for p in (paths or DEFAULT_SEEDS))
    return content_hash(json.dumps({"files": digests, "version": SEEDS_VERSION}))
