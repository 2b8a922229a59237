"""Prompt files, one per LLM call. Their text is part of each stage's fingerprint."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

PROMPT_DIR = Path(__file__).resolve().parent


@lru_cache(maxsize=None)
def load_prompt(name: str) -> str:
    """Text of prompts/<name>.md (or a path to a user's own prompt file)."""
    path = Path(name) if name.endswith((".md", ".txt")) else PROMPT_DIR / f"{name}.md"
    if not path.exists():
        raise FileNotFoundError(f"prompt not found: {path}")
    return path.read_text(encoding="utf-8")
