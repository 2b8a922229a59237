"""How well decontamination works, measured on a calibration set (data/eval/decontam, `webinstruct eval-decontam`).

Probes that must be caught, each naming the benchmark item it came from:
  * verbatim    - GSM8K and MATH test items inside a sentence of chat (the n-gram rule's job);
  * rephrased   - GSM8K test reworded by GPT-4 (LMSYS llm-decontaminator), MMLU abstract algebra
                  reworded (LMSYS); MATH test reworded when rephrase_math.jsonl exists;
  * renumbered, distracted - GSM-Plus style perturbations of GSM8K test, made here: every number
                  changed; an unrelated sentence inserted;
  * reversed    - GSM8K test turned around (the answer given, a quantity asked), when
                  reversed_gsm8k.jsonl exists (both files: build_llm_variants.py with a capable model);
  * translated  - MMLU abstract algebra in Chinese (LMSYS): reported, not expected of an English model.
Controls that must not be flagged (pair level), and pages (document level):
  * GSM8K train (question + worked answer), AQuA-RAT and SVAMP problems;
  * each GSM8K train problem planted in a real page (the labelled evaluation pages).
The stop n-grams come from those same seed sets, so a control is always checked with an index
whose stop list was built without it (two folds for GSM8K train): no control grades itself.
"""
from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

from tasks import semantic_decontam as sem
from tasks.benchmarks import BENCHMARK_DIR, build_index
from tasks.decontaminate import DecontamParams, contaminated_pairs, find_contamination
from tasks.seeds import DEFAULT_SEED_DIR, load_seeds

CAL_DIR = Path(__file__).resolve().parents[1] / "data" / "eval" / "decontam"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _probe(kind: str, benchmark: str, item_ids: list[str], questions: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"kind": kind, "benchmark": benchmark, "item_id": item_ids, "question": questions},
                        schema={"kind": pl.String, "benchmark": pl.String, "item_id": pl.String, "question": pl.String})


def _renumber(text: str, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return re.sub(r"\d+", lambda m: str(int(m.group()) + int(rng.integers(2, 9)) * (1 + int(m.group()) // 10)), text)


def probes(per_kind: int | None = None) -> pl.DataFrame:
    """(kind, benchmark, item_id, question, answer) for every probe that should be flagged."""
    gsm = pl.read_ndjson(BENCHMARK_DIR / "gsm8k_test.jsonl")["question"].to_list()
    math = pl.read_ndjson(BENCHMARK_DIR / "math_test.jsonl").select(pl.col("idx").cast(pl.String), "problem")
    mmlu = pl.read_ndjson(BENCHMARK_DIR / "mmlu_stem_test.jsonl").with_row_index("item_id")
    algebra = mmlu.filter(pl.col("type") == "abstract_algebra")["item_id"].cast(pl.String).to_list()
    train = pl.read_ndjson(DEFAULT_SEED_DIR / "gsm8k_train.jsonl")["question"].to_list()
    ids = [str(i) for i in range(len(gsm))]
    reph = [re.sub(r"^Question:\s*", "", r["text"]).split("\nAnswer:")[0].strip()
            for r in _jsonl(CAL_DIR / "rephrase_gsm8k.jsonl")]
    frames = [
        _probe("verbatim", "gsm8k", ids, [f"Can someone help me with this one? {q} Thanks!" for q in gsm]),
        _probe("verbatim", "math", math["idx"].to_list(), [f"Homework help: {p}" for p in math["problem"]]),
        _probe("rephrased", "gsm8k", ids, reph),
        _probe("renumbered", "gsm8k", ids, [_renumber(q, i) for i, q in enumerate(gsm)]),
        _probe("distracted", "gsm8k", ids, [_distract(q, train[(i * 7) % len(train)]) for i, q in enumerate(gsm)]),
    ]
    for name, kind in (("abstract_algebra_test_rephrase_english_filtered_question.jsonl", "rephrased"),
                       ("abstract_algebra_test_chinese_filtered_question.jsonl", "translated")):
        rows = [(algebra[i], r["text"]) for i, r in enumerate(_jsonl(CAL_DIR / name)) if r["text"].strip()]
        frames.append(_probe(kind, "mmlu_stem", [i for i, _ in rows], [t for _, t in rows]))
    for name in ("rephrase_math.jsonl", "reversed_gsm8k.jsonl"):
        if (CAL_DIR / name).exists():
            rows = _jsonl(CAL_DIR / name)
            for kind in sorted({r["kind"] for r in rows}):
                sel = [r for r in rows if r["kind"] == kind]
                frames.append(_probe(kind, sel[0]["benchmark"], [r["item_id"] for r in sel], [r["text"] for r in sel]))
    out = pl.concat(frames)
    if per_kind:  # an even spread over each (kind, benchmark)
        out = out.with_columns(n=pl.int_range(pl.len()).over("kind", "benchmark"),
                               m=pl.len().over("kind", "benchmark"))
        out = out.filter(pl.col("n") % (pl.col("m") // per_kind).clip(1) == 0).filter(
            pl.int_range(pl.len()).over("kind", "benchmark") < per_kind).drop("n", "m")
    return out.with_columns(pl.lit("").alias("answer"))


def _distract(question: str, other: str) -> str:
    """An unrelated sentence (the first of another problem) inserted before the final question."""
    sentences = re.split(r"(?<=[.!?])\s+", question.strip())
    noise = re.split(r"(?<=[.!?])\s+", other.strip())[0]
    return " ".join([*sentences[:-1], noise, sentences[-1]])


def controls(per_kind: int | None = None) -> pl.DataFrame:
    """(kind, fold, question, answer): real problems that are not benchmark items."""
    seeds = load_seeds()
    text = seeds["text"]
    first = text.str.split("\n").list.first()
    frame = pl.DataFrame({"source": seeds["source"], "question": first,
                          "answer": text.str.slice(first.str.len_chars() + 1)})
    frame = frame.with_columns(
        kind=pl.when(pl.col("source") == "gsm8k_train.jsonl").then(pl.lit("benchmark_train"))
        .otherwise(pl.lit("unrelated_math")),
        fold=pl.when(pl.col("source") == "gsm8k_train.jsonl")
        .then(pl.lit("gsm8k_train/") + (pl.int_range(pl.len()) % 2).cast(pl.String))
        .otherwise(pl.col("source")))
    if per_kind:
        frame = frame.with_columns(m=pl.len().over("kind")).filter(
            pl.int_range(pl.len()).over("kind") % (pl.col("m") // per_kind).clip(1) == 0).drop("m")
        frame = frame.filter(pl.int_range(pl.len()).over("kind") < per_kind)
    return frame.select("kind", "fold", "question", "answer")


def _stop_without(fold: str) -> pl.Series:
    """The stop corpus minus the control fold being graded."""
    seeds = load_seeds()
    is_train = seeds["source"] == "gsm8k_train.jsonl"
    if fold.startswith("gsm8k_train/"):
        half = int(fold.rsplit("/", 1)[1])
        keep = ~is_train | (pl.int_range(seeds.height, eager=True) % 2 != half)
    else:
        keep = seeds["source"] != fold
    return seeds.filter(keep)["text"]


def _with_ids(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_row_index("refined_id").with_columns(pl.col("refined_id").cast(pl.String))


def score(params: DecontamParams = DecontamParams(), per_kind: int | None = None,
          pages: pl.DataFrame | None = None, cache_dir: Path | None = None) -> pl.DataFrame:
    """One row per probe and control: set, kind, benchmark, ngram (flagged), similarity (nearest item over
    the fields), right (the nearest item, or an n-gram match, is the item the probe came from)."""
    sources = params.sources()
    sp = replace(params.semantic, threshold=0.0, judge=False) if params.semantic else None  # every similarity
    bv = sem.benchmark_vectors(sources, sp, cache_dir) if sp else None

    def check(df: pl.DataFrame, index) -> pl.DataFrame:
        df = _with_ids(df)
        ngram = contaminated_pairs(index, df).group_by("id").agg(
            ngram=pl.lit(True), ngram_items=pl.concat_str("benchmark", pl.lit(":"), "benchmark_item"))
        df = df.join(ngram, left_on="refined_id", right_on="id", how="left").with_columns(pl.col("ngram").fill_null(False))
        if not sp:
            return df.with_columns(similarity=pl.lit(None, pl.Float64), nearest=pl.lit(None, pl.String))
        near = (sem.nearest_items(bv, df, sp).sort("similarity", descending=True).unique("id", keep="first")
                .select("id", "similarity", nearest=pl.concat_str("benchmark", pl.lit(":"), "benchmark_item")))
        return df.join(near, left_on="refined_id", right_on="id", how="left")

    main_index = build_index(sources, n=params.n, min_tokens=params.min_tokens, stop_texts=params.stop_texts())
    target = pl.col("benchmark") + ":" + pl.col("item_id")
    p = check(probes(per_kind), main_index).with_columns(
        set=pl.lit("must catch"),
        ngram_right=pl.col("ngram_items").list.contains(target).fill_null(False),
        embedding_right=(pl.col("nearest") == target).fill_null(False))
    graded = [p.drop("ngram_items", "refined_id")]
    ctrl = controls(per_kind)
    for fold in ctrl["fold"].unique().sort():
        part = ctrl.filter(pl.col("fold") == fold)
        index = build_index(sources, n=params.n, min_tokens=params.min_tokens,
                            stop_texts=_stop_without(fold) if params.stop_texts() is not None else None)
        bench = fold.split("/")[0].removesuffix(".json").removesuffix(".jsonl")
        graded.append(check(part, index).drop("ngram_items", "refined_id", "fold").with_columns(
            set=pl.lit("must not flag"), benchmark=pl.lit(bench)))
        if pages is not None and fold.startswith("gsm8k_train/"):
            graded.append(_planted(index, part, pages).with_columns(set=pl.lit("must not flag"),
                                                                    benchmark=pl.lit(bench)))
    return pl.concat(graded, how="diagonal_relaxed")


def summarize(scored: pl.DataFrame, threshold: float | None) -> pl.DataFrame:
    """Per (set, kind, benchmark): items, flagged by n-gram / by embedding (>= threshold) / either, rate."""
    emb = (pl.col("similarity") >= threshold).fill_null(False) if threshold is not None else pl.lit(False)
    right = pl.col("ngram_right").fill_null(False) | (emb & pl.col("embedding_right").fill_null(False))
    return scored.group_by("set", "kind", "benchmark").agg(
        items=pl.len(), ngram=pl.col("ngram").sum(), embedding=emb.sum(), flagged=(pl.col("ngram") | emb).sum(),
        right_item=right.sum(),
    ).with_columns(rate=pl.col("flagged") / pl.col("items")).sort("set", "kind", "benchmark").select(
        "set", "kind", "benchmark", "items", "ngram", "embedding", "flagged", "rate", "right_item")


def calibrate(scored: pl.DataFrame, max_fp: float = 0.005) -> dict:
    """The lowest threshold keeping pair-level controls at or under `max_fp` (n-gram flags included), and
    the same choice made on one half of the controls and graded on the other (two folds)."""
    pairs = scored.filter((pl.col("set") == "must not flag") & pl.col("similarity").is_not_null())
    reph = scored.filter(pl.col("kind") == "rephrased")

    def pick(ctrl: pl.DataFrame) -> float:
        sims = np.sort(ctrl.filter(~pl.col("ngram"))["similarity"].to_numpy())[::-1]
        budget = int(max_fp * ctrl.height) - int(ctrl["ngram"].sum())
        return float(sims[max(budget, 0)]) + 1e-4 if len(sims) > max(budget, 0) else 0.0

    def rates(ctrl: pl.DataFrame, t: float) -> tuple[float, float]:
        fp = (ctrl["ngram"] | (ctrl["similarity"] >= t)).mean()
        return fp, (reph["ngram"] | (reph["similarity"] >= t).fill_null(False)).mean()

    halves = pairs.with_columns(h=pl.int_range(pl.len()) % 2)
    folds = []
    for h in (0, 1):
        t = pick(halves.filter(pl.col("h") == h))
        fp, recall = rates(halves.filter(pl.col("h") != h), t)
        folds.append({"threshold": round(t, 4), "held_out_fp": round(fp, 4), "rephrased_recall": round(recall, 4)})
    t = pick(pairs)
    fp, recall = rates(pairs, t)
    return {"max_fp": max_fp, "threshold": round(t, 4), "fp": round(fp, 4), "rephrased_recall": round(recall, 4),
            "folds": folds}


def _planted(index, part: pl.DataFrame, pages: pl.DataFrame) -> pl.DataFrame:
    """Each control problem (question + answer) inside a real page: the document-level check."""
    texts = pages["text"].to_list()
    docs = [f"{texts[i % len(texts)][:3000]}\n{q}\n{a}\n{texts[(i + 3) % len(texts)][-2000:]}"
            for i, (q, a) in enumerate(part.select("question", "answer").iter_rows())]
    found = find_contamination(index, pl.Series([str(i) for i in range(len(docs))]), pl.Series(docs), field="text",
                               level="document")
    flagged = set(found["id"].to_list())
    return pl.DataFrame({"kind": "page_with_train_problem", "ngram": [str(i) in flagged for i in range(len(docs))]},
                        schema={"kind": pl.String, "ngram": pl.Boolean}).with_columns(
        similarity=pl.lit(None, pl.Float64))  # pages get the n-gram check only


def markdown_report(table: pl.DataFrame, cal: dict, threshold: float, per_kind: int | None) -> str:
    """The results as a Markdown page (docs/decontamination.md)."""
    head = "| set | kind | benchmark | items | n-gram | embedding | flagged | rate | right item |\n|---|---|---|---|---|---|---|---|---|\n"
    body = "".join(f"| {r['set']} | {r['kind']} | {r['benchmark']} | {r['items']:,} | {r['ngram']:,} | {r['embedding']:,} "
                   f"| {r['flagged']:,} | {r['rate']:.2%} | {r['right_item']:,} |\n" for r in table.iter_rows(named=True))
    folds = "\n".join(f"- chosen on one half: cosine > {f['threshold']}; on the other half {f['held_out_fp']:.2%} of "
                      f"controls flagged, {f['rephrased_recall']:.1%} of rephrased items caught" for f in cal["folds"])
    return f"""# Decontamination, measured

Written by `webinstruct eval-decontam --markdown docs/decontamination.md`{f" --per-kind {per_kind}" if per_kind else ""}
(tasks/decontam_eval.py). What each kind is and where it comes from: data/eval/decontam/README.md.

`n-gram`: flagged by the 10-gram rule (stop n-grams on; each control is checked with a stop list
built without it). `embedding`: nearest benchmark item at cosine >= {threshold} (question or
question+answer, all-MiniLM-L6-v2). `flagged`: either. `right item`: the match names the benchmark
item the probe was made from. Pages get the n-gram check only.

{head}{body}
## The threshold

The lowest cosine that keeps pair-level controls at or under {cal['max_fp']:.1%} flagged (n-gram flags
counted): {cal['threshold']} ({cal['fp']:.2%} of controls, {cal['rephrased_recall']:.1%} of rephrased
items caught). Chosen on one half of the controls and graded on the other:

{folds}
"""
