"""Text normalization shared by recall training and scoring (the two must never drift apart).

fastText splits tokens on whitespace only, so we lowercase, put spaces around punctuation (so
"clips." and "clips" are one word), keep digits (numbers are what exam problems are made of),
turn every whitespace character into a plain space, newlines included (fastText reads one
example per line), and cut long pages: the first `max_chars` characters decide the score,
which bounds scoring cost on pages of hundreds of kB.

Runs of spaces are not squeezed: fastText already reads any run of ASCII whitespace as one
separator, so the tokens are those of a collapsed text, and skipping a collapsing regex makes
normalization ~40% cheaper (it runs on every crawled page). Unicode spaces (NBSP, ideographic
space, ...) that fastText would keep inside a token are mapped to a space explicitly.
"""
from __future__ import annotations

import polars as pl

NORM_VERSION = "2"  # part of every recall fingerprint: changing the rules invalidates models
DEFAULT_MAX_CHARS = 4000

# Any character that is neither a word character nor whitespace becomes its own token.
_PUNCT = r"([^\w\s])"
# Whitespace fastText does not split on by itself, plus the newline it must never see.
_SPACES = r"[\n\x0b\x0c\r\x85\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"


def normalize_expr(col: str | pl.Expr, max_chars: int = DEFAULT_MAX_CHARS) -> pl.Expr:
    """A polars expression normalizing a text column (vectorised, multi-threaded)."""
    e = pl.col(col) if isinstance(col, str) else col
    return (
        e.fill_null("")
        .str.slice(0, max_chars)
        .str.to_lowercase()
        .str.replace_all(_PUNCT, " $1 ")
        .str.replace_all(_SPACES, " ")
        .str.strip_chars()
    )


def tokens(text: str) -> list[str]:
    """The tokens fastText reads from a normalized text (for tests and inspection)."""
    return text.split()


def normalize_texts(texts: list[str] | pl.Series, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """The same normalization for a list of strings (same expression, so identical output)."""
    s = texts if isinstance(texts, pl.Series) else pl.Series("text", texts, dtype=pl.String)
    return s.to_frame("text").select(normalize_expr("text", max_chars)).to_series().to_list()
