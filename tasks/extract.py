"""Stage `extract`: recalled pages -> `qa_extracted` (the Q-A pairs an LLM finds on each page).

Input is the `documents` rows that recall kept (the newest recall round by default; every
document when no recall has run). Each page is pre-cleaned and cut into chunks
(tasks/page_clean.py); each chunk is one LLM request built from prompts/extract.md, whose
instructions and few-shot turns come first and are the same bytes in every request (the
server's prefix cache serves them), with the page last.

Every chunk leaves at least one row, so one query explains each document's fate:
    ok        a pair found on the page
    no_pairs  the model found none (or the page was empty after cleaning: see `error`)
    failed    the call failed or its reply did not validate (`error` says why)
    rejected  a pair the model returned that is not on the page (`grounding`, the lower of the
              question's and the answer's share of words found in the chunk, below the
              threshold: an invented question or answer), a copy of one of the prompt's
              few-shot examples, a "question" that asks nothing (a statement, a user name),
              a one-word answer, or a question already taken from this page (`error` says
              whether the model repeated itself, two chunks overlap, or the page asks it twice)
A long page is cut into chunks and only the `max_chunks` with the most question-and-answer
signs are sent (tasks/page_clean.select_chunks), so the model sees exercises and replies rather
than the start of the page. A reply cut off at `max_tokens` keeps the complete pairs before the
cut (the client salvages them; the call's finish_reason says `length`).
One output shard per input `documents` shard, named like it; a shard already written is skipped.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Callable

import polars as pl
import pydantic

from prompts import load_prompt
from tasks.llm_client import LLMClient, LLMRequest, LLMResult, LLMSettings
from tasks.page_clean import CleanParams, prepare_page
from tasks.refine_verify import asks_something
from warehouse import Warehouse, content_hash, fingerprint
from warehouse.schemas import TABLES

STAGE = "extract"
CODE_VERSION = "2"
MAX_PAIRS_PER_CHUNK = 8  # bounds the reply; a chunk of a few thousand characters rarely holds more


# ---- structured output ------------------------------------------------------------------------
class QAPair(pydantic.BaseModel):
    question: str
    answer: str


class ExtractReply(pydantic.BaseModel):
    pairs: list[QAPair] = pydantic.Field(default_factory=list, max_length=MAX_PAIRS_PER_CHUNK)

    @classmethod
    def from_truncated(cls, raw: str) -> "ExtractReply | None":
        """The complete pairs of a reply cut off at max_tokens (None when not even one is whole)."""
        start = raw.find("[", raw.find('"pairs"'))
        if start < 0:
            return None
        decoder, pairs, pos = json.JSONDecoder(), [], start + 1
        while len(pairs) < MAX_PAIRS_PER_CHUNK:
            while pos < len(raw) and raw[pos] in " \t\r\n,":
                pos += 1
            try:
                obj, pos = decoder.raw_decode(raw, pos)
                pairs.append(QAPair.model_validate(obj))
            except (ValueError, pydantic.ValidationError):
                break  # the cut (or garbage) starts here
        return cls(pairs=pairs) if pairs else None


# ---- prompt files -----------------------------------------------------------------------------
_FIELD = re.compile(r"\{\{(\w+)\}\}")
_ROLE = re.compile(r"^<!-- role: (system|user|assistant) -->[ \t]*\n", re.M)


@dataclass(frozen=True)
class ChatPrompt:
    """A prompt file: fixed messages (instructions, few-shot turns) + the last user turn's template.

    Placeholders are `{{name}}`, so JSON braces in the examples need no escaping.
    """

    text: str
    prefix: tuple[tuple[str, str], ...]
    template: str

    @classmethod
    def load(cls, name: str) -> "ChatPrompt":
        text = load_prompt(name)
        parts = _ROLE.split(text)[1:]  # [role, body, role, body, ...]
        turns = [(parts[i], parts[i + 1].strip("\n")) for i in range(0, len(parts), 2)]
        if not turns or turns[-1][0] != "user":
            raise ValueError(f"prompt {name!r}: must end with a `<!-- role: user -->` template turn")
        return cls(text=text, prefix=tuple(turns[:-1]), template=turns[-1][1])

    @property
    def fingerprint(self) -> str:
        return content_hash(self.text)

    def example_questions(self) -> frozenset[str]:
        """Normalized questions of the few-shot replies: a pair that repeats one is copied, not found."""
        out = set()
        for role, body in self.prefix:
            if role == "assistant":
                try:
                    out |= {_norm(p.get("question", "")) for p in json.loads(body).get("pairs", [])}
                except (ValueError, AttributeError):
                    continue  # a user's prompt may show other reply shapes
        return frozenset(out - {""})

    def render(self, **fields: str) -> list[dict[str, str]]:
        # One pass over the template: page text that holds "{{text}}" or role markers stays text.
        body = _FIELD.sub(lambda m: (fields.get(m.group(1)) or "") if m.group(1) in fields else m.group(0),
                          self.template)
        return [{"role": r, "content": c} for r, c in self.prefix] + [{"role": "user", "content": body}]


# ---- parameters -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExtractParams:
    clean: CleanParams = field(default_factory=CleanParams)
    prompt: str = "extract"  # a name under prompts/ or a path to the user's own file
    min_grounding: float = 0.5  # share of the question's words that must occur in the chunk

    def fingerprint(self, settings: LLMSettings, upstream: list[str]) -> str:
        return fingerprint(
            STAGE, code_version=CODE_VERSION, upstream=upstream, prompt=ChatPrompt.load(self.prompt).text,
            model=settings.model,
            params={"clean": self.clean.as_dict(), "min_grounding": self.min_grounding,
                    "temperature": settings.temperature,
                    "max_tokens": settings.max_tokens},
        )


def params_from_settings(s) -> ExtractParams:
    """ExtractParams from the flows' ExtractSettings form (duck-typed: tasks do not import flows)."""
    return ExtractParams(clean=CleanParams(chunk_chars=s.chunk_chars, overlap_chars=s.overlap_chars,
                                           max_chunks=s.max_chunks, require_question=s.require_question),
                         prompt=s.prompt, min_grounding=s.min_grounding)


# ---- input selection --------------------------------------------------------------------------
@dataclass
class ExtractInput:
    documents_fps: list[str]
    recall_fp: str | None  # the recall_scores version used; None = every document
    # out shard -> (docs fp, docs shard, doc_ids, only these "doc_id#chunk" (None: all), attempt)
    shards: dict[str, tuple[str, str, list[str], list[str] | None, int]] = field(default_factory=dict)
    pending: int = 0  # recalled documents not extracted yet, this run's budget included
    warning: str | None = None

    @property
    def upstream(self) -> list[str]:
        return self.documents_fps + ([self.recall_fp] if self.recall_fp else [])

    @property
    def n_docs(self) -> int:
        return sum(len(v[2]) for v in self.shards.values())


def resolve_recall(wh: Warehouse, recall_fingerprint: str | None) -> str | None:
    """The recall_scores version to use: the one named (version or model fingerprint), else the
    current version with the highest round; None when no recall has run."""
    versions = wh.versions("recall_scores")
    if recall_fingerprint:
        if recall_fingerprint in versions:
            return recall_fingerprint
        hits = (pl.concat([wh.scan("recall_scores", v).select("model_fingerprint", "fingerprint").unique().collect()
                           for v in versions]) if versions else pl.DataFrame())
        hits = hits.filter(pl.col("model_fingerprint") == recall_fingerprint) if hits.height else hits
        if not hits.height:
            raise ValueError(f"no recall_scores version or model {recall_fingerprint!r}; known versions: {versions}")
        return hits["fingerprint"][0]
    if not versions:
        return None
    rounds = (wh.scan("recall_scores").group_by("fingerprint").agg(pl.col("round").max())
              .sort(["round", "fingerprint"]).collect())
    return rounds["fingerprint"][-1] if rounds.height else None


def resolve_input(wh: Warehouse, recall_fingerprint: str | None = None) -> ExtractInput:
    """The versions extraction reads: current documents and a recall_scores version."""
    recall_fp = resolve_recall(wh, recall_fingerprint)
    warning = "no recall_scores yet: extracting from every ingested document" if recall_fp is None else None
    return ExtractInput(wh.current_fingerprints("documents"), recall_fp, warning=warning)


def _doc_shards(wh: Warehouse, doc_fps: list[str]) -> pl.LazyFrame:
    """doc_id -> (documents version, shard): reads only the doc_id column of each shard."""
    frames = [pl.scan_parquet(str(wh.version_dir("documents", fp) / "part-*.parquet"), include_file_paths="_path")
              .select("doc_id", pl.lit(fp).alias("_fp"),
                      pl.col("_path").str.extract(r"part-(.+)\.parquet$").alias("_shard"))
              for fp in doc_fps if wh.shard_ids("documents", fp)]
    if not frames:
        return pl.LazyFrame(schema={"doc_id": pl.String, "_fp": pl.String, "_shard": pl.String})
    return pl.concat(frames).unique("doc_id", keep="first")


def select_pending(wh: Warehouse, inp: ExtractInput, fp: str, max_docs: int | None = None) -> ExtractInput:
    """This run's documents: the recalled ones not yet extracted into version `fp`, highest recall
    score first (doc_id breaks ties), at most `max_docs`; the rest stay pending for the next run.

    Output shards are named by their documents shard and the hash of their doc ids, so a killed
    run that picks the same documents again resumes the same shards (and their LLM journals)."""
    located = _doc_shards(wh, inp.documents_fps)
    if inp.recall_fp is None:
        wanted = located.select("doc_id", pl.lit(None, pl.Float32).alias("score"))
    else:
        wanted = (wh.scan("recall_scores", inp.recall_fp).filter(pl.col("kept"))
                  .group_by("doc_id").agg(pl.col("score").max()))
    if fp in wh.versions("qa_extracted"):
        wanted = wanted.join(wh.scan("qa_extracted", fp).select("doc_id").unique(), on="doc_id", how="anti")
    todo = (wanted.join(located, on="doc_id", how="inner")
            .sort(["score", "doc_id"], descending=[True, False], nulls_last=True).collect())
    pending = todo.height
    if max_docs is not None:
        todo = todo.head(max_docs)
    shards: dict = {}
    for (dfp, dshard), grp in todo.sort("doc_id").group_by(["_fp", "_shard"], maintain_order=True):
        ids = grp["doc_id"].to_list()
        shards[f"{_prefix(inp, dfp, dshard)}-{content_hash(chr(10).join(ids), 8)}"] = (dfp, dshard, ids, None, 1)
    return ExtractInput(inp.documents_fps, inp.recall_fp, shards, pending, inp.warning)


def _prefix(inp: ExtractInput, dfp: str, dshard: str) -> str:
    return dshard if len(inp.documents_fps) == 1 else f"{dfp[:8]}-{dshard}"


def newest_failed(lf: pl.LazyFrame, key: list[str], carry: list[str] = ()) -> pl.LazyFrame:
    """The units (`key`) of a retried table whose newest attempt failed, with that attempt's number
    and the first value of each `carry` column (rows from before `attempt` existed are attempt 1)."""
    att = pl.col("attempt").fill_null(1)
    return (lf.with_columns(att.alias("attempt")).group_by(key)
            .agg(*[pl.col(c).first() for c in carry], pl.col("attempt").max(),
                 failed=(pl.col("status") == "failed").filter(att == att.max()).all())
            .filter(pl.col("failed")))


def select_failed(wh: Warehouse, inp: ExtractInput, fp: str) -> ExtractInput:
    """`--retry-failed`: the chunks of version `fp` whose newest attempt failed (a dead server,
    a broken reply), as retry shards beside the first ones. Only those chunks are sent again;
    named by the chunks they retry, so a killed retry resumes its own journal."""
    if fp not in wh.versions("qa_extracted"):
        return ExtractInput(inp.documents_fps, inp.recall_fp, {}, 0, inp.warning)
    failed = newest_failed(wh.scan("qa_extracted", fp), ["doc_id", "chunk"])
    todo = failed.join(_doc_shards(wh, inp.documents_fps), on="doc_id", how="inner").sort("doc_id", "chunk").collect()
    shards: dict = {}
    for (dfp, dshard), grp in todo.group_by(["_fp", "_shard"], maintain_order=True):
        only = [f"{d}#{c}" for d, c in zip(grp["doc_id"], grp["chunk"])]
        attempt = int(grp["attempt"].max()) + 1
        shards[f"{_prefix(inp, dfp, dshard)}-retry{attempt}-{content_hash(chr(10).join(only), 8)}"] = (
            dfp, dshard, grp["doc_id"].unique(maintain_order=True).to_list(), only, attempt)
    return ExtractInput(inp.documents_fps, inp.recall_fp, shards, todo.height, inp.warning)


# ---- rows -------------------------------------------------------------------------------------
_WORDS = re.compile(r"[^\W_]{3,}", re.U)
_URL = re.compile(r"https?://\S+|www\.\S+")


def grounding(question: str, chunk: str) -> float:
    """Share of the question's words (3+ letters) that occur in the chunk: 1.0 = all copied."""
    words = {w.lower() for w in _WORDS.findall(question)}
    if not words:
        return 0.0
    page = {w.lower() for w in _WORDS.findall(chunk)}
    return len(words & page) / len(words)


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def qa_id(doc_id: str, chunk: int, index: int | None) -> str:
    return content_hash(f"{doc_id}#{chunk}#{'-' if index is None else index}")


def reply_budget(chunk: str, max_tokens: int) -> int:
    """max_tokens for one chunk: a reply copies at most the chunk (~3 characters per token for
    prose, code and maths) plus its JSON; asking for more only lets a looping model run on."""
    return max(64, min(max_tokens, len(chunk) // 3 + 96))


def _duplicate_reason(first: tuple[str, int, str], chunk: int, question: str) -> str:
    qa, first_chunk, first_text = first
    if first_chunk == chunk:
        return f"the model returned this question twice (first as {qa})"
    if abs(first_chunk - chunk) == 1 and _norm(question)[:60] in _norm(first_text):
        return f"found again where chunks {first_chunk} and {chunk} overlap (kept as {qa})"
    return f"the page asks this question again (first in chunk {first_chunk}, kept as {qa})"


def chunk_rows(doc_id: str, chunk: int, chunk_text: str, result: LLMResult, model: str, prompt_fp: str,
               min_grounding: float, seen: dict[str, tuple[str, int, str]],
               examples: frozenset[str] = frozenset()) -> list[dict]:
    """The qa_extracted rows of one chunk's LLM result.

    `seen` (normalized question -> (qa_id, chunk, chunk text)) spans the page: one question is
    kept once per page. `examples` are the prompt's few-shot questions (normalized)."""
    base = dict(doc_id=doc_id, chunk=chunk, model=model, prompt_fingerprint=prompt_fp)
    if not result.ok or result.parsed is None:
        return [dict(base, qa_id=qa_id(doc_id, chunk, None), question=None, answer=None, grounding=None,
                     status="failed", error=f"{result.status}: {result.error}")]
    rows = []
    for i, pair in enumerate(result.parsed.pairs):  # type: ignore[attr-defined]
        q, a = pair.question.strip(), pair.answer.strip()
        if not q or not a:
            continue
        gq, ga = grounding(q, chunk_text), grounding(a, chunk_text)
        key = _norm(q)
        row = dict(base, qa_id=qa_id(doc_id, chunk, i), question=q, answer=a, grounding=round(min(gq, ga), 4),
                   status="rejected", error=None)
        if key in examples:
            row["error"] = "copies a few-shot example of the prompt, not the page"
        elif gq < min_grounding:
            row["error"] = f"question not found on the page (grounding {gq:.2f} < {min_grounding})"
        elif ga < min_grounding:
            row["error"] = f"answer not found on the page (grounding {ga:.2f} < {min_grounding})"
        elif not asks_something(q, cloze=False):
            row["error"] = f"the question asks nothing (a statement, a name or a fragment): {q[:60]!r}"
        elif len(a.split()) < 2 and not re.search(r"[\d=<>^$\\]", a):
            row["error"] = f"the answer is too short to answer anything: {a[:40]!r}"
        elif len("".join(_URL.findall(a))) * 2 > len(a):
            row["error"] = f"the answer is mostly links: {a[:60]!r}"
        elif key in seen:
            row["error"] = _duplicate_reason(seen[key], chunk, q)
        else:
            seen[key] = (row["qa_id"], chunk, chunk_text)
            row["status"] = "ok"
        rows.append(row)
    if not rows:
        rows.append(dict(base, qa_id=qa_id(doc_id, chunk, None), question=None, answer=None, grounding=None,
                         status="no_pairs", error=None))
    return rows


def extract_pages(client: LLMClient, settings: LLMSettings, params: ExtractParams, docs: pl.DataFrame, *,
                  fp: str, shard: str, stage: str = STAGE, only: list[str] | None = None,
                  attempt: int = 1) -> tuple[pl.DataFrame, list[LLMResult]]:
    """The qa_extracted rows of some pages (doc_id, url, title, text) and the LLM results behind them;
    with `only` ("doc_id#chunk"), of those chunks alone (a retry of failed ones)."""
    wanted = set(only) if only is not None else None
    prompt = ChatPrompt.load(params.prompt)
    rows: list[dict] = []
    requests: list[LLMRequest] = []
    chunks_of: list[tuple[str, int, str]] = []
    for d in docs.iter_rows(named=True):
        chunks, reason = prepare_page(d["text"], params.clean, d["title"] or "")
        if wanted is not None:  # cleaning is deterministic: chunk i is the chunk that failed
            chunks, reason = [(i, t) for i, t in chunks if f"{d['doc_id']}#{i}" in wanted], None
        if reason:
            rows.append(dict(qa_id=qa_id(d["doc_id"], 0, None), doc_id=d["doc_id"], chunk=0, question=None,
                             answer=None, model=settings.model, prompt_fingerprint=prompt.fingerprint,
                             grounding=None, status="no_pairs", error=f"not sent: {reason}"))
        for i, text in chunks:
            chunks_of.append((d["doc_id"], i, text))
            requests.append(LLMRequest(
                item_id=f"{d['doc_id']}#{i}", response_model=ExtractReply,
                messages=prompt.render(title=d["title"] or "", url=d["url"] or "", text=text),
                max_tokens=reply_budget(text, settings.max_tokens)))
    results = client.run(requests, stage=stage, fingerprint=fp, shard=shard)
    seen: dict[str, dict] = {}
    examples = prompt.example_questions()
    for (doc_id, i, text), res in zip(chunks_of, results):
        rows += chunk_rows(doc_id, i, text, res, settings.model, prompt.fingerprint, params.min_grounding,
                           seen.setdefault(doc_id, {}), examples)
    df = pl.DataFrame(rows, schema=TABLES["qa_extracted"].schema).with_columns(attempt=pl.lit(attempt, pl.Int16))
    return df, results


def extract_shard(wh: Warehouse, settings: LLMSettings, params: ExtractParams, fp: str, shard: str,
                  documents_fp: str, documents_shard: str, doc_ids: list[str], only: list[str] | None = None,
                  attempt: int = 1, client_factory: Callable[[LLMSettings, Warehouse], LLMClient] = LLMClient) -> dict:
    """Extract pairs from the selected docs of one documents shard; returns counters."""
    if wh.has_shard("qa_extracted", fp, shard):
        return {"shard": shard, "skipped": True, "docs": len(doc_ids)}
    docs = (pl.scan_parquet(str(wh.shard_path("documents", documents_fp, documents_shard)))
            .select("doc_id", "url", "title", "text")
            .join(pl.LazyFrame({"doc_id": doc_ids}), on="doc_id", how="semi", maintain_order="left").collect())
    client = client_factory(settings, wh)
    df, results = extract_pages(client, settings, params, docs, fp=fp, shard=shard, only=only, attempt=attempt)
    wh.write_shard("qa_extracted", fp, shard, df)
    counts = df["status"].value_counts()
    by = dict(zip(counts["status"].to_list(), counts["count"].to_list()))
    return {"shard": shard, "skipped": False, "docs": docs.height, "chunks": len(results),
            "calls": client.network_calls, "cached": sum(r.cached for r in results),
            "pairs": by.get("ok", 0), "no_pairs": by.get("no_pairs", 0), "failed": by.get("failed", 0),
            "rejected": by.get("rejected", 0), "rows": df.height}
