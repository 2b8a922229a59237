"""Second decontamination check: benchmark items rephrased, found by sentence embeddings (and an LLM judge).

The n-gram rule (tasks/decontaminate.py) catches copied text but not a reworded item: 1 of 100
LLM-rephrased GSM8K test questions. Here every pair the n-gram rule did not flag is embedded
(all-MiniLM-L6-v2, tasks/sentence_encoder.py) twice, its question and its question+answer (the
latter catches a pair whose question only says "solve this" and whose answer restates the
problem), and compared with every benchmark item (tasks/benchmark_vectors.py). A field whose
nearest item is at cosine >= `threshold` is contaminated (method `embedding`).

With `judge`, every pair whose nearest item is at >= `judge_floor` goes to an LLM instead, which
answers whether the two are the same problem (prompts/decontam_judge.md); its verdict decides
(method `llm_judge`). A failed judge call falls back to the embedding decision, with the reason.

The threshold was calibrated on data/eval/decontam (tasks/decontam_eval.py, `webinstruct
eval-decontam`, docs/decontamination.md): GPT-4 rephrasings of GSM8K test and MMLU items, GSM-Plus
style perturbations, against GSM8K train, AQuA-RAT and SVAMP as controls. At 0.82: 94.2% of the
1,415 rephrased items caught, 0.88% of GSM8K train problems flagged (n-gram flags included).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl
import pydantic

from prompts import load_prompt
from tasks.benchmark_vectors import BenchmarkVectors, cached_vectors
from tasks.benchmarks import BenchmarkSource, load_benchmarks
from tasks.sentence_encoder import MODEL_NAME, MODEL_PACKAGE, get_encoder

JUDGE_PROMPT = "decontam_judge"
THRESHOLD = 0.82  # calibrated: docs/decontamination.md
JUDGE_FLOOR = 0.70
FIELDS = ("question", "question+answer")


@dataclass(frozen=True)
class SemanticParams:
    threshold: float = THRESHOLD
    fields: tuple[str, ...] = FIELDS
    exclude: tuple[str, ...] = ("bbh",)  # templated puzzles: rephrasing is not the risk, n-grams cover them
    judge: bool = False
    judge_floor: float = JUDGE_FLOOR
    judge_model: str = ""  # part of the version: another judge may decide otherwise
    max_tokens: int = 128  # per embedded text; a question is ~60 on average
    ann_min_items: int = 200_000

    def settings(self) -> dict:
        s = {"model": MODEL_NAME, "package": MODEL_PACKAGE, "threshold": self.threshold, "fields": list(self.fields),
             "exclude": list(self.exclude), "max_tokens": self.max_tokens, "judge": self.judge}
        if self.judge:
            s.update(judge_floor=self.judge_floor, judge_model=self.judge_model, judge_prompt=load_prompt(JUDGE_PROMPT))
        return s

    @property
    def floor(self) -> float:
        return min(self.judge_floor, self.threshold) if self.judge else self.threshold


class JudgeVerdict(pydantic.BaseModel):
    reason: str = pydantic.Field(max_length=400)
    same_problem: bool


@lru_cache(maxsize=2)
def _vectors(sources: tuple[BenchmarkSource, ...], exclude: tuple[str, ...], cache_dir: str | None,
             ann_min_items: int) -> BenchmarkVectors:
    items = load_benchmarks(list(sources)).filter(~pl.col("benchmark").is_in(list(exclude)))
    vecs = cached_vectors(items["text"].to_list(), get_encoder(), Path(cache_dir) if cache_dir else None)
    return BenchmarkVectors(items, vecs, ann_min_items)


def benchmark_vectors(sources: list[BenchmarkSource], params: SemanticParams,
                      cache_dir: Path | None) -> BenchmarkVectors:
    """Built once per process and settings (the shipped vectors load in well under a second)."""
    return _vectors(tuple(sources), params.exclude, str(cache_dir) if cache_dir else None, params.ann_min_items)


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema={"id": pl.String, "field": pl.String, "benchmark": pl.String,
                                "benchmark_item": pl.String, "similarity": pl.Float64})


def field_texts(pairs: pl.DataFrame, name: str) -> list[str]:
    if name == "question":
        return pairs["question"].fill_null("").to_list()
    return (pairs["question"].fill_null("") + "\n" + pairs["answer"].fill_null("")).to_list()


def nearest_items(bv: BenchmarkVectors, pairs: pl.DataFrame, params: SemanticParams) -> pl.DataFrame:
    """(id, field, benchmark, benchmark_item, similarity) for each field of `pairs` (refined_id, question,
    answer) whose nearest benchmark item is at or above the floor."""
    if pairs.is_empty() or bv.items.is_empty():
        return _empty()
    encoder = get_encoder()
    out = [_empty()]
    for name in params.fields:
        ids = encoder.token_ids(field_texts(pairs, name))
        vecs = encoder.encode_ids([t[:params.max_tokens - 1] + t[-1:] if len(t) > params.max_tokens else t
                                   for t in ids])  # cut, keeping the closing [SEP]
        sims, rows = bv.nearest(vecs)
        hit = np.flatnonzero(sims >= params.floor)
        if len(hit):
            items = bv.items[rows[hit]]
            out.append(pl.DataFrame({"id": pairs["refined_id"].gather(hit), "field": name,
                                     "benchmark": items["benchmark"], "benchmark_item": items["item_id"],
                                     "similarity": np.round(sims[hit].astype(np.float64), 4)}))
    return pl.concat(out)


def embedding_rows(near: pl.DataFrame, params: SemanticParams) -> pl.DataFrame:
    """qa_contamination rows (method `embedding`) for the nearest-item matches."""
    return near.select(
        "id", pl.lit("pair").alias("level"), "benchmark", "benchmark_item", "field",
        pl.lit(None, pl.String).alias("matched_ngram"), pl.lit("cosine").alias("rule"),
        pl.lit(None, pl.Int32).alias("hits"), pl.lit("embedding").alias("method"), "similarity",
        pl.lit(None, pl.String).alias("verdict"),
        ((pl.col("similarity") >= params.threshold) & pl.lit(not params.judge)).alias("flagged"))


def judge_requests(near: pl.DataFrame, pairs: pl.DataFrame, bv: BenchmarkVectors) -> tuple[pl.DataFrame, list]:
    """One request per pair: its best match (highest similarity over the fields)."""
    from tasks.llm_client import LLMRequest  # the HTTP client only where a judge is asked

    best = near.sort(["id", "similarity", "field"], descending=[False, True, False]).unique("id", keep="first",
                                                                                          maintain_order=True)
    best = (best.join(pairs.select(pl.col("refined_id").alias("id"), "question", "answer"), on="id", how="left")
            .join(bv.items.select("benchmark", pl.col("item_id").alias("benchmark_item"), pl.col("text").alias("item")),
                  on=["benchmark", "benchmark_item"], how="left"))
    system = load_prompt(JUDGE_PROMPT)
    reqs = [LLMRequest(item_id=r["id"], response_model=JudgeVerdict, max_tokens=200, messages=[
        {"role": "system", "content": system},
        {"role": "user", "content": f"BENCHMARK ITEM:\n{r['item'][:3000]}\n\nCANDIDATE QUESTION:\n"
                                    f"{(r['question'] or '')[:3000]}\n\nCANDIDATE ANSWER (excerpt):\n"
                                    f"{(r['answer'] or '')[:1500]}"}])
            for r in best.iter_rows(named=True)]
    return best, reqs


def judge_rows(best: pl.DataFrame, results: list, params: SemanticParams) -> pl.DataFrame:
    """qa_contamination rows (method `llm_judge`): the verdict decides; a failed call falls back."""
    verdict, flagged = [], []
    for r, res in zip(best.iter_rows(named=True), results):
        if res.ok:
            verdict.append(("same: " if res.parsed.same_problem else "different: ") + res.parsed.reason)
            flagged.append(res.parsed.same_problem)
        else:
            verdict.append(f"failed: {res.error}")
            flagged.append(r["similarity"] >= params.threshold)
    return best.select(
        "id", pl.lit("pair").alias("level"), "benchmark", "benchmark_item", "field",
        pl.lit(None, pl.String).alias("matched_ngram"), pl.lit("judge").alias("rule"),
        pl.lit(None, pl.Int32).alias("hits"), pl.lit("llm_judge").alias("method"), "similarity",
        pl.Series("verdict", verdict, pl.String), pl.Series("flagged", flagged, pl.Boolean))
