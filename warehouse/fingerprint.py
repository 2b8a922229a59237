"""Fingerprints name stage output versions: same inputs and settings => same fingerprint => skip."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable


def content_hash(text: str | bytes, n: int = 16) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:n]


def fingerprint(
    stage: str,
    *,
    params: dict[str, Any],
    code_version: str,
    upstream: Iterable[str] = (),
    prompt: str | None = None,
    model: str | None = None,
) -> str:
    """Hash of everything that determines a stage's output.

    `upstream` is the fingerprints of the input versions; `prompt` is the full prompt text
    (so editing a prompt file makes a new version); `model` the served model name.
    """
    payload = json.dumps(
        {
            "stage": stage,
            "params": params,
            "code_version": code_version,
            "upstream": sorted(upstream),
            "prompt": content_hash(prompt) if prompt is not None else None,
            "model": model,
        },
        sort_keys=True,
        default=str,
    )
    return content_hash(payload)
