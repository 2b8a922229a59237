"""Benchmark texts for decontamination, and the text normalization shared by dedup and decontamination.

Normalization (`normalize`, NORM_VERSION) — chosen so that the same problem written in
plain text, Markdown or LaTeX gives the same tokens:
  * Unicode NFKC (full-width digits, ligatures, non-breaking spaces) and lower case;
  * LaTeX commands that only format (`\\text`, `\\mathrm`, `\\left`, `\\displaystyle`, `\\boxed`, ...)
    or that plain text writes as punctuation (`\\frac`/`\\dfrac`/`\\tfrac`, `\\cdot`, `\\times`, `\\le`,
    ...) are dropped, so `$\\dfrac{1}{2}$`, `\\(\\frac12\\)` and `1/2` all read `1 2`; other commands keep
    their name as a word (`\\pi` -> `pi`, `\\sqrt{2}` -> `sqrt 2`, like `sqrt(2)` in plain text);
  * thousands separators between digits are removed (`1,000` == `1000`);
  * tokens are runs of letters or runs of digits (`x^2` -> `x 2`, `5cm` -> `5 cm`); each CJK
    character is its own token. All punctuation, math delimiters (`$`, `\\(`, `\\[`), braces,
    operators and whitespace are separators, so `$x^2$`, `x^2` and `x ^ 2` match.
Why drop symbols: a copied benchmark item is rewrapped by every site (MathJax vs Unicode vs ASCII
math, smart quotes, spacing); words and numbers survive that, symbols do not. A 10-gram of words and
numbers is still specific enough (see tests/test_decontaminate.py for the measured false-positive rate).
Benchmark 10-grams made only of numbers and single letters ("1 2 3 ... 10", "a 1 a 2 a 3 ...") are not
indexed: pagination and enumerations on unrelated pages contain them (7 of the 270 sample pages did).
Only one of the 16,648 shipped items (an all-formula MMLU question) has no other 10-gram.
LaTeX markup does not count as a word either: command and environment names and array column
specs ("a b c d e f g h i end", a matrix on a MathJax help page, matched a MATH problem).
Stop n-grams: benchmark 10-grams that occur in STOP_MIN_TEXTS or more texts of a general corpus
(by default the bundled seed sets: GSM8K train, AQuA-RAT, SVAMP, about 9k problems with worked
answers) are phrasing shared by many problems ("the original price what was the original price
of the"), not evidence of a copied item, and are not indexed, unless that would leave an item
with no n-gram at all.

Benchmark sources: the bundled test sets (data/benchmarks) or user files given as
`[name=]path:field[+field...]` (JSONL, JSON list or Parquet). The text of an item is its question
(MMLU: question + choices, BBH: the input); solutions are not indexed by default because their
10-grams include boilerplate ("so the answer is ...") that would flag innocent pairs.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

NORM_VERSION = "1"
BENCHMARK_DIR = Path(__file__).resolve().parents[1] / "data" / "benchmarks"
TOKEN_RE = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]|\p{L}+|\p{N}+"
WORD_RE = r"^(?:\p{L}{2,}|[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}])$"
HASH_SEED = 0x5EED
_MUL = np.uint64(0x9E3779B97F4A7C15)
STOP_MIN_TEXTS = 2

# Markup, not words: LaTeX environment and command names that survive normalization, and array
# column specs (`{ccc}`, `{lcr}`), for the "has a word" test of an n-gram.
LATEX_WORDS = frozenset((
    "begin end array matrix pmatrix bmatrix vmatrix smallmatrix cases align aligned gather gathered "
    "split eqnarray tabular multline equation sqrt sin cos tan cot sec csc arcsin arccos arctan sinh cosh "
    "tanh log ln exp lim sum prod int iint oint infty partial nabla alpha beta gamma delta epsilon "
    "varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi pi rho sigma tau upsilon phi varphi chi "
    "psi omega overline underline hat bar vec tilde dot ddot binom choose mod pmod bmod gcd lcm max min "
    "det dim ker deg arg sup inf lfloor rfloor lceil rceil langle rangle mid in notin subset subseteq "
    "cup cap emptyset forall exists neg wedge vee to rightarrow leftarrow implies iff angle triangle "
    "perp parallel cong sim equiv propto ldots vdots ddots prime circ").split())
_COLUMN_SPEC_RE = r"^[lcr]{2,}$"

# LaTeX commands dropped entirely (formatting, or written as punctuation in plain text).
LATEX_DROP = (
    "dfrac tfrac cfrac frac text textbf textit textrm mathrm mathbf mathit mathbb mathcal mathsf "
    "operatorname displaystyle textstyle scriptstyle left right bigl bigr big bigg biggl biggr "
    "boxed mbox hbox quad qquad cdot cdots ldots dots times div pm mp le leq ge geq ne neq approx "
    "circ degree limits nolimits hline"
).split()
_LATEX_NAMES = "|".join(sorted(LATEX_DROP, key=len, reverse=True))
_LATEX_DROP_RE = r"\\(?:" + _LATEX_NAMES + r")\b"  # \b: `\displaystyle\frac` drops both
_LATEX_DROP_DIGIT_RE = r"\\(?:" + _LATEX_NAMES + r")(\d)"  # `\cdot5` (no word boundary before 5)


def normalize(texts: pl.Series) -> pl.Series:
    """Normalized text (still with punctuation); tokens come from `tokens`."""
    s = texts.cast(pl.String).fill_null("")
    wide = s.str.contains(r"[^\x00-\x7f]")  # NFKC is the slowest step; ASCII text needs none
    if wide.any():
        idx = wide.arg_true()
        s = s.scatter(idx, s.gather(idx).str.normalize("NFKC"))
    return pl.select(
        pl.lit(s).str.to_lowercase()
        .str.replace_all(r"\\[dtc]?frac(\d)(\d)", " ${1} ${2}")  # \frac12 is 1/2
        .str.replace_all(r"\\[dt]binom\b", "\\binom")
        .str.replace_all(_LATEX_DROP_DIGIT_RE, " ${1}")
        .str.replace_all(_LATEX_DROP_RE, " ")
        .str.replace_all(r"(\d),(\d{3})", "${1}${2}")
        .str.replace_all(r"(\d),(\d{3})", "${1}${2}")  # twice: matches cannot overlap
    ).to_series().alias(texts.name)


def tokens(texts: pl.Series) -> pl.Series:
    """List of normalized tokens (letter runs, digit runs, single CJK characters) per text."""
    return normalize(texts).str.extract_all(TOKEN_RE)


def padded(texts: pl.Series) -> pl.Series:
    """Tokens joined by single spaces and padded (` a b c `), for whole-token substring tests."""
    return " " + tokens(texts).list.join(" ") + " "


# ---- vectorised token and n-gram hashes ---------------------------------------------------

@dataclass
class FlatTokens:
    """All tokens of a column of texts, flattened: row i owns tokens[offsets[i]:offsets[i+1]]."""
    tokens: pl.Series  # String
    lists: pl.Series  # List(String), one list per row
    hashes: np.ndarray  # uint64, one per token
    offsets: np.ndarray  # int64, len(rows) + 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def flat_tokens(texts: pl.Series) -> FlatTokens:
    lists = tokens(texts)
    lengths = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    toks = lists.explode().drop_nulls() if len(lists) else pl.Series("tok", [], pl.String)
    hashes = toks.hash(seed=HASH_SEED).to_numpy() if len(toks) else np.zeros(0, np.uint64)
    return FlatTokens(toks, lists, hashes, offsets)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer (on a copy): spreads the bits of a polynomial hash."""
    x = x.copy()
    for shift, mul in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        x ^= x >> np.uint64(shift)
        x *= np.uint64(mul)
    x ^= x >> np.uint64(31)
    return x


def ngram_hashes(ft: FlatTokens, n: int, whole_if_shorter: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """64-bit hashes of every token n-gram that lies inside one row, in row order.

    Returns (row, start, hash): `start` indexes `ft.tokens`. With `whole_if_shorter`, a row of
    1..n-1 tokens yields one hash of all its tokens (used for MinHash shingles of short texts).
    """
    h, offsets = ft.hashes, ft.offsets
    total = len(h)
    lengths = np.diff(offsets)
    e = np.zeros(0, np.int64)
    r, s, hh = e, e, np.zeros(0, np.uint64)
    if total >= n:
        m = total - n + 1
        acc = h[:m].copy()
        for j in range(1, n):  # polynomial hash, wrapping uint64 arithmetic, in place
            np.multiply(acc, _MUL, out=acc)
            np.add(acc, h[j:m + j], out=acc)
        # an n-gram is valid when it ends inside its row: mark the last n-1 starts of every row
        bad = np.zeros(total + 1, np.int64)
        np.add.at(bad, np.maximum(offsets[1:] - (n - 1), offsets[:-1]), 1)
        np.add.at(bad, offsets[1:], -1)
        s = np.flatnonzero(np.cumsum(bad[:m]) == 0)
        r = np.repeat(np.arange(len(lengths), dtype=np.int64), np.maximum(lengths - n + 1, 0))
        hh = _mix(acc[s])
    if whole_if_shorter:
        short = np.flatnonzero((lengths > 0) & (lengths < n))
        if len(short):
            acc = np.zeros(len(short), dtype=np.uint64)
            for j in range(n - 1):
                take = j < lengths[short]
                idx = np.minimum(offsets[short] + j, max(total - 1, 0))
                acc = np.where(take, acc * _MUL + h[idx], acc)
            at = np.searchsorted(r, short)  # merge, keeping row order (short rows have no n-gram)
            r, s, hh = np.insert(r, at, short), np.insert(s, at, offsets[short]), np.insert(hh, at, _mix(acc))
    return r, s, hh


def ngram_text(ft: FlatTokens, starts: np.ndarray, n: int) -> pl.Series:
    """The normalized text (space-joined tokens) of n-grams starting at `starts`."""
    if len(starts) == 0:
        return pl.Series([], dtype=pl.String)
    idx = (starts[:, None] + np.arange(n)[None, :]).ravel()
    words = ft.tokens.gather(idx).to_numpy().reshape(len(starts), n)
    return pl.Series([" ".join(w) for w in words], dtype=pl.String)


# ---- benchmark sources -------------------------------------------------------------------

@dataclass(frozen=True)
class BenchmarkSource:
    name: str
    path: str
    text_fields: tuple[str, ...]
    id_field: str | None = None
    kind: str = "auto"  # auto (by suffix) | bbh (folder of {"examples": [{"input", "target"}]})


BUILTIN: dict[str, BenchmarkSource] = {
    "gsm8k": BenchmarkSource("gsm8k", str(BENCHMARK_DIR / "gsm8k_test.jsonl"), ("question",)),
    "math": BenchmarkSource("math", str(BENCHMARK_DIR / "math_test.jsonl"), ("problem",), "idx"),
    "mmlu_stem": BenchmarkSource("mmlu_stem", str(BENCHMARK_DIR / "mmlu_stem_test.jsonl"), ("question", "choices")),
    "theoremqa": BenchmarkSource("theoremqa", str(BENCHMARK_DIR / "theoremqa_test.json"), ("Question",), "id"),
    "bbh": BenchmarkSource("bbh", str(BENCHMARK_DIR / "bbh"), ("input",), kind="bbh"),
}


def resolve_sources(specs: list[str] | None) -> list[BenchmarkSource]:
    """None -> every bundled benchmark; else names of bundled ones or `[name=]path:field[+field]`."""
    if not specs:
        return list(BUILTIN.values())
    out = []
    for spec in specs:
        if spec in BUILTIN:
            out.append(BUILTIN[spec])
            continue
        name, _, rest = spec.rpartition("=") if "=" in spec else ("", "", spec)
        path, sep, fields = rest.rpartition(":")
        if not sep or not path or not fields:
            raise ValueError(f"benchmark {spec!r}: expected a bundled name ({', '.join(BUILTIN)}) "
                             "or [name=]path:field[+field]")
        if not Path(path).exists():
            raise FileNotFoundError(f"benchmark file not found: {path}")
        out.append(BenchmarkSource(name or Path(path).stem, str(Path(path).resolve()), tuple(fields.split("+"))))
    return out


def _scalar(v):
    return v if v is None or isinstance(v, (str, list)) else str(v)


def _read_records(src: BenchmarkSource) -> pl.DataFrame:
    p = Path(src.path)
    if src.kind == "bbh":
        rows = []
        for f in sorted(p.glob("*.json")):
            for i, ex in enumerate(json.loads(f.read_text())["examples"]):
                rows.append({"item_id": f"{f.stem}/{i}", "input": ex["input"]})
        return pl.DataFrame(rows, schema={"item_id": pl.String, "input": pl.String})
    if p.suffix == ".parquet":
        df = pl.read_parquet(p)
    elif p.suffix == ".jsonl":
        df = pl.read_ndjson(p, infer_schema_length=None)
    elif (raw := p.read_text()).lstrip().startswith("["):  # a JSON list; other fields may mix types
        keep = [*src.text_fields, *([src.id_field] if src.id_field else [])]
        df = pl.DataFrame([{k: _scalar(r.get(k)) for k in keep} for r in json.loads(raw)], infer_schema_length=None)
    else:  # JSON lines despite the name
        df = pl.read_ndjson(p, infer_schema_length=None)
    if src.id_field and src.id_field in df.columns:
        return df.with_columns(pl.col(src.id_field).cast(pl.String).alias("item_id"))
    return df.with_row_index("item_id").with_columns(pl.col("item_id").cast(pl.String))


def load_benchmarks(sources: list[BenchmarkSource]) -> pl.DataFrame:
    """(benchmark, item_id, text) for every item; list fields (choices) are joined with newlines."""
    frames = []
    for src in sources:
        df = _read_records(src)
        missing = [f for f in src.text_fields if f not in df.columns]
        if missing:
            raise ValueError(f"benchmark {src.name}: fields {missing} not in {src.path} (has {df.columns})")
        parts = [pl.col(f).list.eval(pl.element().cast(pl.String)).list.join("\n")
                 if isinstance(df.schema[f], pl.List) else pl.col(f).cast(pl.String) for f in src.text_fields]
        frames.append(df.select(pl.lit(src.name).alias("benchmark"), pl.col("item_id"),
                                pl.concat_str(parts, separator="\n", ignore_nulls=True).alias("text")))
    return pl.concat(frames) if frames else pl.DataFrame(
        schema={"benchmark": pl.String, "item_id": pl.String, "text": pl.String})


def sources_fingerprint(sources: list[BenchmarkSource]) -> list[dict]:
    """Name, fields and content hash of each source: editing a benchmark file changes the version."""
    out = []
    for src in sources:
        p = Path(src.path)
        files = sorted(p.glob("*.json")) if p.is_dir() else [p]
        digest = hashlib.sha256()
        for f in files:
            digest.update(f.name.encode()); digest.update(f.read_bytes())
        out.append({"name": src.name, "fields": list(src.text_fields), "sha256": digest.hexdigest()[:16]})
    return out


# ---- the index ---------------------------------------------------------------------------

@dataclass
class BenchmarkIndex:
    """Benchmark n-gram hashes (long items) and whole normalized strings (short items)."""
    n: int
    min_tokens: int
    ngrams: pl.DataFrame  # hash u64, benchmark, item_id, start (into tokens.tokens)
    short: pl.DataFrame  # pattern (` a b c `), benchmark, item_id
    tokens: FlatTokens  # benchmark tokens, to spell out (and verify) matched n-grams
    items: int

    @cached_property
    def hash_set(self) -> pl.Series:
        return self.ngrams["hash"].unique().implode()

    def ngram_at(self, starts: np.ndarray) -> pl.Series:
        return ngram_text(self.tokens, starts, self.n)


def _markup_free_words(toks: pl.Series) -> np.ndarray:
    return (toks.str.contains(WORD_RE) & ~toks.is_in(list(LATEX_WORDS)) & ~toks.str.contains(_COLUMN_SPEC_RE)).to_numpy()


def common_ngrams(texts: pl.Series, n: int, min_texts: int = STOP_MIN_TEXTS) -> pl.Series:
    """Hashes of the n-grams that occur in at least `min_texts` of `texts` (the stop n-grams)."""
    rows, _, hashes = ngram_hashes(flat_tokens(texts), n)
    grams = pl.DataFrame({"row": rows, "hash": hashes}).unique()
    return grams.group_by("hash").len().filter(pl.col("len") >= min_texts)["hash"]


def build_index(sources: list[BenchmarkSource], n: int = 10, min_tokens: int = 3,
                stop_texts: pl.Series | None = None, stop_min_texts: int = STOP_MIN_TEXTS) -> BenchmarkIndex:
    texts = load_benchmarks(sources)
    ft = flat_tokens(texts["text"])
    lengths = ft.lengths
    rows, starts, hashes = ngram_hashes(ft, n)
    # An n-gram of only numbers, single letters and markup ("1 2 3 ... 10", "a 1 a 2 a 3", "a b c d e f
    # g h i end") is not evidence: pagination, enumerations and LaTeX help pages contain them.
    words = np.concatenate([[0], np.cumsum(_markup_free_words(ft.tokens))]) if len(ft.tokens) \
        else np.zeros(1, np.int64)
    informative = words[starts + n] > words[starts]
    rows, starts, hashes = rows[informative], starts[informative], hashes[informative]
    ngrams = pl.DataFrame({
        "hash": hashes,
        "benchmark": texts["benchmark"].gather(rows),
        "item_id": texts["item_id"].gather(rows),
        "start": starts,
    }).unique(["hash", "benchmark", "item_id"], keep="first", maintain_order=True)
    if stop_texts is not None and len(stop_texts):
        common = ngrams["hash"].is_in(common_ngrams(stop_texts, n, stop_min_texts).implode())
        # an item whose every n-gram is common keeps them all: dropping it would make it invisible
        keep_all = ngrams.with_columns(common=common).group_by("benchmark", "item_id").agg(pl.col("common").all())
        keep_all = keep_all.filter(pl.col("common")).select("benchmark", "item_id", pl.lit(True).alias("keep"))
        ngrams = (ngrams.with_columns(common=common).join(keep_all, on=["benchmark", "item_id"], how="left",
                                                          maintain_order="left")
                  .filter(~pl.col("common") | pl.col("keep").fill_null(False)).drop("common", "keep"))
    is_short = (lengths >= min_tokens) & (lengths < n)
    short = texts.filter(pl.Series(is_short))
    short = short.select(padded(short["text"]).alias("pattern"), "benchmark", "item_id")
    return BenchmarkIndex(n=n, min_tokens=min_tokens, ngrams=ngrams, short=short, tokens=ft, items=texts.height)
