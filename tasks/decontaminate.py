"""Stage `decontaminate`: pairs (and optionally whole pages) that overlap a benchmark -> `qa_contamination`.

The DeepSeekMath rule, applied to the question and to the answer separately (`field`):
  * `ngram`: the text contains a token 10-gram (`n`) that also occurs in a benchmark item;
  * `exact`: a benchmark item of `min_tokens`..n-1 tokens occurs whole in the text (token-aligned).
Items under `min_tokens` tokens are ignored. Tokens and normalization: tasks.benchmarks.
Benchmark 10-grams are indexed as 64-bit hashes; a text's 10-gram hashes are joined to them in
polars, and every reported match is re-checked on the spelled-out n-gram (no hash false positives).
Short items are matched with one Aho-Corasick pass (polars `extract_many`) over ` tok tok ` strings.
One row per (id, field, benchmark, rule): the benchmark item sharing the most n-grams with the text
(`hits`), with the first matched n-gram. Benchmark n-grams also found in a general corpus (the
bundled seed problems by default: `stop_corpus`) are not indexed (tasks/benchmarks.py).

Pairs the n-gram rule leaves are then checked for rephrased items (tasks/semantic_decontam.py):
rows with method `embedding` (and `llm_judge`), a similarity and, for the judge, its verdict.
Only rows with `flagged` remove a pair from the dataset.

With `documents=True`, every ingested page's text is checked too and contaminated pages give
level='document' rows; the dataset then drops every pair extracted from such a page (the paper
removed whole pages). Measured against all shipped benchmarks (tests/test_decontaminate.py):
every GSM8K test question and MATH test problem planted in a page or a pair is caught (100%,
also with LaTeX re-rendered); GSM8K *train* questions+answers (disjoint from the test set):
14 of 7,473 flagged (0.19%), 4 of them sharing 3+ 10-grams with a GSM8K test near-twin, the others
one generic 10-gram ("how much money will she have left over after she").
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import polars as pl

from tasks import semantic_decontam as sem
from tasks.benchmarks import (NORM_VERSION, STOP_MIN_TEXTS, BenchmarkIndex, build_index, flat_tokens, ngram_hashes,
                              ngram_text, resolve_sources, sources_fingerprint)
from tasks.refine_verify import usable
from tasks.seeds import load_seeds, seeds_fingerprint
from warehouse import Warehouse, fingerprint
from warehouse.schemas.curate import QA_CONTAMINATION

STAGE = "decontaminate"
CODE_VERSION = "2"
TABLE = "qa_contamination"


@dataclass(frozen=True)
class DecontamParams:
    benchmarks: tuple[str, ...] | None = None  # None: every bundled benchmark
    n: int = 10
    min_tokens: int = 3
    documents: bool = False  # also check whole pages (level='document')
    keep_unrefined: bool = True  # also check pairs whose refinement failed verification (they may be kept)
    stop_corpus: tuple[str, ...] | None = None  # seed-format files of general text; None: bundled seeds; (): none
    semantic: sem.SemanticParams | None = sem.SemanticParams()  # None: the n-gram rule only

    def sources(self):
        return resolve_sources(list(self.benchmarks) if self.benchmarks else None)

    def stop_texts(self) -> pl.Series | None:
        if self.stop_corpus == ():
            return None
        return load_seeds(list(self.stop_corpus) if self.stop_corpus else None)["text"]

    def settings(self) -> dict:
        stop = None if self.stop_corpus == () else {
            "corpus": seeds_fingerprint(list(self.stop_corpus) if self.stop_corpus else None),
            "min_texts": STOP_MIN_TEXTS}
        return {"n": self.n, "min_tokens": self.min_tokens, "documents": self.documents,
                "unrefined_pairs": "keep" if self.keep_unrefined else "drop",
                "normalization": NORM_VERSION, "benchmarks": sources_fingerprint(self.sources()),
                "stop_ngrams": stop, "semantic": self.semantic.settings() if self.semantic else None}

    def fingerprint(self, upstream: list[str]) -> str:
        return fingerprint(STAGE, params=self.settings(), code_version=CODE_VERSION, upstream=upstream)


_index_lock = threading.Lock()


def get_index(params: DecontamParams) -> BenchmarkIndex:
    """Built once per process and settings (about a second for the shipped benchmarks)."""
    with _index_lock:  # shard tasks run in threads: build it once, not once per thread
        return _build_index(params)


@lru_cache(maxsize=4)
def _build_index(params: DecontamParams) -> BenchmarkIndex:
    return build_index(params.sources(), n=params.n, min_tokens=params.min_tokens, stop_texts=params.stop_texts())


def _empty() -> pl.DataFrame:
    return QA_CONTAMINATION.empty()


_NGRAM_COLUMNS = [pl.lit("ngram").alias("method"), pl.lit(None, pl.Float64).alias("similarity"),
                  pl.lit(None, pl.String).alias("verdict"), pl.lit(True).alias("flagged")]


def find_contamination(index: BenchmarkIndex, ids: pl.Series, texts: pl.Series, *, field: str,
                       level: str = "pair") -> pl.DataFrame:
    """qa_contamination rows for the texts that overlap a benchmark item."""
    if len(texts) == 0:
        return _empty()
    ft = flat_tokens(texts)
    out = [_empty().drop("method", "similarity", "verdict", "flagged")]  # added below
    rows, starts, hashes = ngram_hashes(ft, index.n)
    grams = pl.DataFrame({"row": rows, "start": starts, "hash": hashes})
    grams = grams.filter(pl.col("hash").is_in(index.hash_set))  # cheap semi-join first: hits are rare
    hits = grams.join(index.ngrams.rename({"start": "bstart"}), on="hash")
    if hits.height:
        best = (hits.group_by("row", "benchmark", "item_id")
                .agg(pl.len().alias("hits"), pl.col("start").first(), pl.col("bstart").first())
                .sort(["row", "benchmark", "hits", "item_id"], descending=[False, False, True, False])
                .unique(["row", "benchmark"], keep="first", maintain_order=True))
        text = ngram_text(ft, best["start"].to_numpy(), index.n)
        best = best.with_columns(text.alias("matched_ngram")).filter(
            pl.col("matched_ngram") == index.ngram_at(best["bstart"].to_numpy()))  # hash collisions out
        out.append(best.select(ids.gather(best["row"]).alias("id"), pl.lit(level).alias("level"),
                               "benchmark", pl.col("item_id").alias("benchmark_item"),
                               pl.lit(field).alias("field"), "matched_ngram", pl.lit("ngram").alias("rule"),
                               pl.col("hits").cast(pl.Int32)))
    if index.short.height:
        patterns = index.short["pattern"].unique()
        padded = " " + ft.lists.list.join(" ") + " "
        cand = np.flatnonzero(padded.str.contains_any(patterns.to_list()).fill_null(False).to_numpy())
        if len(cand):
            found = pl.DataFrame({"row": cand, "pattern": padded.gather(cand).str.extract_many(
                patterns.to_list(), overlapping=True)}).explode("pattern").unique()
            ex = (found.join(index.short, on="pattern")
                  .sort(["row", "benchmark", "item_id"]).unique(["row", "benchmark"], keep="first",
                                                               maintain_order=True))
            out.append(ex.select(ids.gather(ex["row"]).alias("id"), pl.lit(level).alias("level"),
                                 "benchmark", pl.col("item_id").alias("benchmark_item"),
                                 pl.lit(field).alias("field"),
                                 pl.col("pattern").str.strip_chars().alias("matched_ngram"),
                                 pl.lit("exact").alias("rule"), pl.lit(1, pl.Int32).alias("hits")))
    return pl.concat(out).with_columns(_NGRAM_COLUMNS)


def contaminated_pairs(index: BenchmarkIndex, pairs: pl.DataFrame) -> pl.DataFrame:
    """Check the question and the answer of each pair (refined_id, question, answer)."""
    return pl.concat([find_contamination(index, pairs["refined_id"], pairs[f], field=f)
                      for f in ("question", "answer")])


# ---- shards -------------------------------------------------------------------------------

def pair_shard(refined_fp: str, shard: str) -> str:
    return f"pair-{refined_fp}-{shard}"


def doc_shard(docs_fp: str, shard: str) -> str:
    return f"doc-{docs_fp}-{shard}"


def pending(wh: Warehouse, out_fp: str, refined_fps: list[str], doc_fps: list[str]) -> list[tuple[str, str, str]]:
    """(kind, upstream fingerprint, shard) for every input shard without its output yet."""
    done = set(wh.shard_ids(TABLE, out_fp))
    todo = [("pair", fp, s) for fp in sorted(refined_fps) for s in wh.shard_ids("qa_refined", fp)
            if pair_shard(fp, s) not in done]
    return todo + [("document", fp, s) for fp in sorted(doc_fps) for s in wh.shard_ids("documents", fp)
                   if doc_shard(fp, s) not in done]


def semantic_check(wh: Warehouse, params: DecontamParams, pairs: pl.DataFrame, llm=None, *, fp: str = "",
                   shard: str = "") -> pl.DataFrame:
    """Rows for the pairs that are rephrased benchmark items (embedding, then the judge if asked)."""
    sp = params.semantic
    bv = sem.benchmark_vectors(params.sources(), sp, wh.local / "embeddings")
    near = sem.nearest_items(bv, pairs, sp)
    rows = [sem.embedding_rows(near, sp)]
    if sp.judge and near.height:
        from tasks.llm_client import LLMClient
        from tasks.llm_settings import LLMSettings

        best, reqs = sem.judge_requests(near, pairs, bv)
        results = LLMClient(llm or LLMSettings(), wh).run(reqs, stage=STAGE, fingerprint=fp, shard=shard)
        rows.append(sem.judge_rows(best, results, sp))
    return pl.concat(rows)


def decontaminate_shard(wh: Warehouse, params: DecontamParams, out_fp: str, kind: str, fp: str, shard: str,
                        llm=None) -> dict:
    """Check one qa_refined (kind='pair') or documents (kind='document') shard; write its output shard."""
    index = get_index(params)
    if kind == "pair":
        rows = wh.read_shard("qa_refined", fp, shard).filter(usable(params.keep_unrefined))
        found = contaminated_pairs(index, rows)
        name = pair_shard(fp, shard)
        if params.semantic:
            rest = rows.join(found.select(pl.col("id").alias("refined_id")).unique(), on="refined_id", how="anti")
            found = pl.concat([found, semantic_check(wh, params, rest, llm, fp=out_fp, shard=name)])
    else:
        rows = wh.read_shard("documents", fp, shard, columns=["doc_id", "text"])
        found = find_contamination(index, rows["doc_id"], rows["text"], field="text", level="document")
        name = doc_shard(fp, shard)
    wh.write_shard(TABLE, out_fp, name, found)
    flagged = found.filter(pl.col("flagged"))
    return {"kind": kind, "rows_in": rows.height, "contaminated": flagged["id"].n_unique(),
            "rephrased": flagged.filter(pl.col("method") != "ngram")["id"].n_unique()}
