"""Semantic decontamination: the encoder, the benchmark vectors, rephrased items caught, controls clean."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tasks import semantic_decontam as sem
from tasks.benchmark_vectors import BenchmarkVectors, cached_vectors, text_keys
from tasks.benchmarks import build_index, load_benchmarks, resolve_sources
from tasks.decontam_eval import probes
from tasks.decontaminate import DecontamParams, contaminated_pairs, find_contamination, get_index
from tasks.sentence_encoder import get_encoder

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def vectors():
    params = DecontamParams()
    return sem.benchmark_vectors(params.sources(), params.semantic, None)


def test_numpy_encoder_matches_sentence_transformers():
    ref = json.loads((FIXTURES / "minilm_reference.json").read_text())
    got = get_encoder().encode(ref["texts"])
    cos = (got * np.array(ref["vectors"], np.float32)).sum(1)
    assert cos.min() > 0.9999, cos  # same weights, same arithmetic (GELU in tanh form)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_shipped_benchmark_vectors_are_the_encoders(vectors):
    items = vectors.items
    assert set(items["benchmark"]) == {"gsm8k", "math", "mmlu_stem", "theoremqa"}  # bbh left to the n-gram rule
    pick = np.linspace(0, items.height - 1, 12).astype(int)
    fresh = get_encoder().encode(items["text"].gather(pick).to_list())
    assert ((fresh * vectors.vectors[pick]).sum(1) > 0.998).all()  # int8 storage moves cosines by < 0.002


def test_user_benchmark_is_embedded_once_then_cached(tmp_path, monkeypatch):
    enc = get_encoder()
    texts = ["A snail climbs 3 m up a 10 m well each day and slips 2 m each night; on which day does it get out?",
             "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
             "How many clips did Natalia sell altogether in April and May?"]  # GSM8K train: not in the shipped file
    first = cached_vectors(texts, enc, tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    monkeypatch.setattr(enc, "encode", lambda t: (_ for _ in ()).throw(AssertionError(f"encoded again: {t}")))
    again = cached_vectors(texts, enc, tmp_path)
    assert (first * again).sum(1).min() > 0.998
    assert text_keys(texts) != text_keys(texts, "another-model")  # a new model never reads old vectors


def test_rephrased_gsm8k_caught_train_controls_not(vectors, gsm8k_train):
    """120 GPT-4 rephrasings of GSM8K test (LMSYS) and 200 GSM8K train problems with their worked answers.
    The whole calibration set is graded by `webinstruct eval-decontam` (docs/decontamination.md)."""
    params = sem.SemanticParams()
    reph = probes().filter(pl.col("kind") == "rephrased", pl.col("benchmark") == "gsm8k").gather_every(11)[:120]
    pairs = reph.with_columns(refined_id=pl.format("r{}", pl.col("item_id")))
    index = get_index(DecontamParams())
    assert contaminated_pairs(index, pairs)["id"].n_unique() <= 3  # the n-gram rule misses them...
    near = sem.nearest_items(vectors, pairs, params)
    caught = near.filter(pl.col("similarity") >= params.threshold)
    assert caught["id"].n_unique() >= 0.9 * pairs.height  # ...the embedding check does not
    right = caught.filter(pl.col("benchmark") == "gsm8k").join(
        pairs.select(pl.col("refined_id").alias("id"), "item_id"), on="id").filter(
        pl.col("benchmark_item") == pl.col("item_id"))
    assert right["id"].n_unique() >= 0.9 * caught["id"].n_unique()  # and names the item it came from
    controls = gsm8k_train.gather_every(37)[:200].with_row_index("refined_id").with_columns(
        pl.col("refined_id").cast(pl.String))
    flagged = sem.nearest_items(vectors, controls, params)
    assert flagged["id"].n_unique() <= 2  # <= 1% of benchmark-train problems


def test_ann_search_agrees_with_exact(vectors):
    exact = BenchmarkVectors(vectors.items[:3000], vectors.vectors[:3000])
    queries = exact.vectors[::29] + np.float32(0.02) * np.random.default_rng(0).standard_normal(
        (len(exact.vectors[::29]), exact.vectors.shape[1]), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact_sim, exact_row = exact.nearest(queries)
    ann = BenchmarkVectors(exact.items, exact.vectors, ann_min_items=0)
    assert ann.uses_ann and not exact.uses_ann
    sim, row = ann.nearest(queries)
    assert (row == exact_row).mean() >= 0.99 and np.allclose(sim[row == exact_row], exact_sim[row == exact_row], atol=1e-5)


def test_mathjax_matrix_is_not_math_contamination(ingested_sample):
    index = get_index(DecontamParams())
    page = ("MathJax TeX and LaTeX support. Arrays and matrices are written with the array environment: "
            "$$\\left( \\begin{array}{ccc} a & b & c \\\\ d & e & f \\\\ g & h & i \\end{array} \\right)$$ "
            "and \\begin{pmatrix} a & b \\\\ c & d \\end{pmatrix} gives a matrix with parentheses.")
    assert find_contamination(index, pl.Series(["mathjax"]), pl.Series([page]), field="text").is_empty()
    # the markup rule drops only markup-and-letter n-grams: the MATH problem itself is still caught
    math = load_benchmarks(resolve_sources(["math"]))
    item = math.filter(pl.col("text").str.contains("g & h & i", literal=True))["text"][0]
    assert not find_contamination(index, pl.Series(["copy"]), pl.Series([f"See: {item}"]), field="text").is_empty()


def test_stock_phrase_is_not_evidence_but_the_problem_is():
    """'the original price what was the original price of the' is a GSM8K test 10-gram that many word
    problems share; the stop list (built from the seed problems) drops it."""
    text = ("A jacket is on sale for 25% off the original price. What was the original price of the jacket "
            "if Maria paid $60 for it?")
    without = build_index(resolve_sources(["gsm8k"]), stop_texts=None)
    assert find_contamination(without, pl.Series(["j"]), pl.Series([text]), field="question")["matched_ngram"].to_list() \
        == ["the original price what was the original price of the"]
    index = get_index(DecontamParams())
    assert find_contamination(index, pl.Series(["j"]), pl.Series([text]), field="question").is_empty()
    gsm = pl.read_ndjson(Path(__file__).parents[1] / "data" / "benchmarks" / "gsm8k_test.jsonl")["question"]
    item = gsm.filter(gsm.str.contains("original price of the", literal=True))[0]
    assert find_contamination(index, pl.Series(["c"]), pl.Series([item]), field="question").height == 1


JANET = ("Every day the ducks that Janet owns lay 16 eggs. Three of them are her breakfast each morning and four go "
         "into the muffins she bakes for friends. She sells the rest at the farmers' market at $2 each. How many "
         "dollars does she make there per day?")


def _judged(wh, pairs: pl.DataFrame, llm, floor: float = 0.5) -> pl.DataFrame:
    from tasks.decontaminate import semantic_check
    params = DecontamParams(semantic=sem.SemanticParams(judge=True, judge_floor=floor, judge_model=llm.model))
    return semantic_check(wh, params, pairs, llm, fp="judgefp", shard="s1")


def test_judge_verdict_decides_and_a_failed_call_falls_back(tmp_path, fake_llm):
    from tests.fake_llm_server import Action, last_user
    from warehouse import Warehouse

    def script(body: dict):
        user = last_user(body).split("CANDIDATE QUESTION:")[-1]
        if "the ducks that Janet owns" in user:
            return Action(content=json.dumps({"reason": "same eggs and prices", "same_problem": True}))
        if "A snail climbs" in user:
            return Action("status", status=500)  # the judge is down for this one, on every retry
        return Action(content=json.dumps({"reason": "another unknown", "same_problem": False}))

    server = fake_llm(script=script)
    pairs = pl.DataFrame({"refined_id": ["janet", "train", "snail"], "answer": ["18", "", ""], "question": [
        JANET,
        "Janet's ducks lay 20 eggs a day. She eats 5 and sells the rest for $3 each. How much does she make in a week?",
        "A snail climbs 3 m up a 10 m well each day and slips 2 m each night; on which day does it get out?"]})
    rows = _judged(Warehouse(tmp_path / "wh"), pairs, server.settings(max_retries=0))
    judge = {r["id"]: r for r in rows.filter(pl.col("method") == "llm_judge").iter_rows(named=True)}
    assert judge["janet"]["flagged"] and judge["janet"]["verdict"] == "same: same eggs and prices"
    assert judge["janet"]["benchmark"] == "gsm8k" and judge["janet"]["benchmark_item"] == "0"
    assert "train" in judge and not judge["train"]["flagged"] and judge["train"]["verdict"].startswith("different: ")
    if "snail" in judge:  # near enough to some item to be judged: the embedding decides, with the reason
        assert judge["snail"]["verdict"].startswith("failed: ")
        assert judge["snail"]["flagged"] == (judge["snail"]["similarity"] >= sem.SemanticParams().threshold)
    assert not rows.filter(pl.col("method") == "embedding")["flagged"].any()  # with a judge, it decides


def test_judge_with_the_embedded_model(tmp_path, llm_server):
    """The real server: a verdict (whatever the small model says) or the reason it failed, per pair."""
    from warehouse import Warehouse

    pairs = pl.DataFrame({"refined_id": ["janet"], "question": [JANET], "answer": ["18"]})
    rows = _judged(Warehouse(tmp_path / "wh"), pairs, llm_server)
    judge = rows.filter(pl.col("method") == "llm_judge")
    assert judge.height == 1 and judge["verdict"][0].split(":")[0] in {"same", "different", "failed"}


@pytest.mark.slow
def test_calibration_set_targets():
    """A spread of up to 200 per kind of the whole calibration set (`webinstruct eval-decontam` grades it all):
    rephrased items >= 90% caught, verbatim 100%, benchmark-train controls <= 1% (pairs), <= 0.5% (pages)."""
    from tasks.decontam_eval import score, summarize
    from tasks.labelled_pages import load_labelled

    table = summarize(score(DecontamParams(), per_kind=200, pages=load_labelled()[0]), sem.SemanticParams().threshold)
    rate = {(r["kind"], r["benchmark"]): r["rate"] for r in table.iter_rows(named=True)}
    assert rate[("verbatim", "gsm8k")] == 1.0 and rate[("verbatim", "math")] == 1.0
    # the sample caps each kind at 200: weigh each benchmark's rate by its full size (1,319 GSM8K, 96 MMLU)
    full = probes().filter(pl.col("kind") == "rephrased").group_by("benchmark").len()
    weighted = table.filter(pl.col("kind") == "rephrased").join(full, on="benchmark")
    assert (weighted["rate"] * weighted["len"]).sum() / weighted["len"].sum() >= 0.9, weighted
    assert rate[("rephrased", "gsm8k")] >= 0.9 and rate[("rephrased", "mmlu_stem")] >= 0.7
    assert rate[("benchmark_train", "gsm8k_train")] <= 0.01
    assert rate[("page_with_train_problem", "gsm8k_train")] <= 0.005
    other = table.filter(pl.col("kind") == "unrelated_math")  # AQuA-RAT and SVAMP together (a few dozen each here)
    assert other["flagged"].sum() <= 0.01 * other["items"].sum(), other
