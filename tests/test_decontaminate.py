"""Decontamination with the real benchmarks: planted items are caught, clean text is not flagged."""
from __future__ import annotations

import json
import re

import polars as pl
import pytest

from tasks.benchmarks import build_index, load_benchmarks, resolve_sources, tokens
from tasks.decontaminate import (DecontamParams, contaminated_pairs, decontaminate_shard, find_contamination,
                                 get_index, pending)
from tests.fixtures.curate import BENCH


@pytest.fixture(scope="module")
def index():
    return get_index(DecontamParams())


@pytest.fixture(scope="module")
def page_texts(ingested_sample) -> list[str]:
    return ingested_sample.scan("documents").select("text").collect()["text"].to_list()


def ids(prefix: str, n: int) -> pl.Series:
    return pl.Series([f"{prefix}{i}" for i in range(n)])


def test_normalization_matches_latex_and_plain_variants():
    t = tokens(pl.Series(["$x^2$", "x^2", "x ^ 2", "\\(\\dfrac{1}{2}\\)", "\\frac12", "1/2",
                          "1,000,000", "\\left( 5\\text{cm} \\right)"])).to_list()
    assert t[0] == t[1] == t[2] == ["x", "2"]
    assert t[3] == t[4] == t[5] == ["1", "2"]
    assert t[6] == ["1000000"] and t[7] == ["5", "cm"]


def test_every_gsm8k_test_question_planted_in_a_real_page_is_caught(index, page_texts):
    qs = pl.read_ndjson(BENCH / "gsm8k_test.jsonl")["question"]
    # each question wrapped inside (a slice of) real page text
    texts = pl.Series([f"{page_texts[i % len(page_texts)][:1500]}\n{q}\n{page_texts[(i + 7) % len(page_texts)][-800:]}"
                       for i, q in enumerate(qs)])
    found = find_contamination(index, ids("page", len(qs)), texts, field="text", level="document")
    gsm = found.filter(pl.col("benchmark") == "gsm8k")
    assert gsm["id"].n_unique() == len(qs)  # 100%
    assert (gsm["level"] == "document").all() and (gsm["rule"] == "ngram").all()
    # the reported item is the planted one (or an identical duplicate question of the test set)
    norm = dict(zip(map(str, range(len(qs))), tokens(qs).list.join(" ").to_list()))
    first = gsm.unique("id").sort("id")
    assert all(norm[r["benchmark_item"]] == norm[r["id"][4:]] for r in first.iter_rows(named=True))


def test_every_math_problem_is_caught_in_a_pair_even_reformatted(index):
    probs = pl.read_ndjson(BENCH / "math_test.jsonl")["problem"]
    # LaTeX re-rendered the way a site might: delimiters changed, \frac -> \dfrac, extra spaces
    variants = (probs.str.replace_all(r"\$", " \\(", literal=True).str.replace_all(r"\\frac", r"\\dfrac")
                .str.replace_all(" ", "  ", literal=True))
    pairs = pl.DataFrame({"refined_id": ids("q", len(probs)), "question": "Can someone help? " + variants,
                          "answer": pl.Series(["The answer is 4."] * len(probs))})
    found = contaminated_pairs(index, pairs).filter(pl.col("benchmark") == "math")
    assert found["id"].n_unique() == len(probs)  # 100%, by 10-gram or (short problems) exact match
    assert set(found["rule"]) == {"ngram", "exact"} and set(found["field"]) == {"question"}
    # and in the answer field
    swapped = pairs.select("refined_id", pl.col("answer").alias("question"), pl.col("question").alias("answer"))
    found = contaminated_pairs(index, swapped[:500]).filter(pl.col("benchmark") == "math")
    assert found["id"].n_unique() == 500 and set(found["field"]) == {"answer"}


def test_short_bbh_item_is_caught_by_the_exact_rule_only_when_whole(index):
    item = json.loads((BENCH / "bbh" / "boolean_expressions.json").read_text())["examples"][0]["input"]
    assert 3 <= len(item.split()) - item.count("(") - item.count(")") < 10  # a short item
    texts = pl.Series([f"Quick logic quiz: {item} ? Think step by step.", "Quick logic quiz: not ( True ) and",
                       f"Some{item}"])
    found = find_contamination(index, ids("t", 3), texts, field="question")
    assert found["id"].to_list() == ["t0"]
    row = found.row(0, named=True)
    assert row["rule"] == "exact" and row["benchmark"] == "bbh" and row["matched_ngram"] == "not true and true is"
    assert row["benchmark_item"].startswith("boolean_expressions/")


def test_gsm8k_train_is_rarely_flagged(index, gsm8k_train):
    """GSM8K train (disjoint from test) vs all shipped benchmarks: measured 0.19% (14 of 7,473) flagged;
    4 share 3+ 10-grams with a GSM8K test near-twin, the rest one generic 10-gram."""
    pairs = gsm8k_train.with_row_index("refined_id").with_columns(pl.col("refined_id").cast(pl.String))
    found = contaminated_pairs(index, pairs)
    rate = found["id"].n_unique() / pairs.height
    assert rate <= 0.005, rate
    assert found.filter(pl.col("hits") >= 5)["benchmark"].unique().to_list() == ["gsm8k"]


def test_real_pages_are_mostly_clean(index, page_texts):
    found = find_contamination(index, ids("d", len(page_texts)), pl.Series(page_texts), field="text",
                               level="document")
    assert found["id"].n_unique() == 0  # none of the 270 real sample pages (pagination n-grams are not indexed)


def test_user_benchmark_files_jsonl_and_parquet(tmp_path):
    q = "A farmer has 17 sheep and all but 9 run away; how many sheep does the farmer have left now?"
    (tmp_path / "mine.jsonl").write_text(json.dumps({"prompt": q, "id": 1}) + "\n")
    pl.DataFrame({"text": ["Compute the area of a circle of radius 3 using pi times r squared."]}).write_parquet(
        tmp_path / "other.parquet")
    sources = resolve_sources([f"farm={tmp_path / 'mine.jsonl'}:prompt", f"{tmp_path / 'other.parquet'}:text"])
    assert [s.name for s in sources] == ["farm", "other"]
    assert load_benchmarks(sources).height == 2
    idx = build_index(sources)
    found = find_contamination(idx, ids("x", 2), pl.Series([f"Riddle: {q.upper()}", "A circle of radius 3."]),
                               field="question")
    assert found["id"].to_list() == ["x0"] and found["benchmark"][0] == "farm"
    with pytest.raises(ValueError):
        resolve_sources(["nonsense"])


def test_stage_writes_pair_and_document_shards(curate_wh, real_pairs):
    wh = curate_wh
    gsm = pl.read_ndjson(BENCH / "gsm8k_test.jsonl")[:5]
    reworded = pl.DataFrame({"question": [  # GSM8K test #0 in other words: no shared 10-gram
        "Every day the ducks that Janet owns lay 16 eggs. Three of them are her breakfast each morning and "
        "four go into the muffins she bakes for friends. She sells the rest at the farmers' market at $2 each. "
        "How many dollars does she make there per day?"], "answer": ["16 - 3 - 4 = 9 eggs; 9 * 2 = 18. #### 18"]})
    rows = wh.add_refined(pl.concat([real_pairs[:50], gsm.select("question", "answer"), reworded]), "s1")
    params = DecontamParams(documents=True)
    doc_fps = wh.versions("documents")
    fp = params.fingerprint(["refinedfp000001", *doc_fps])
    todo = pending(wh, fp, ["refinedfp000001"], doc_fps)
    assert todo[0] == ("pair", "refinedfp000001", "s1") and {k for k, _, _ in todo} == {"pair", "document"}
    for kind, f, s in todo:
        decontaminate_shard(wh, params, fp, kind, f, s)
    assert pending(wh, fp, ["refinedfp000001"], doc_fps) == []
    got = wh.scan("qa_contamination", fp).collect()
    flagged = got.filter(pl.col("flagged"))
    pair_ids = set(flagged.filter(pl.col("level") == "pair")["id"])
    assert set(rows["refined_id"][50:]) <= pair_ids and len(pair_ids) <= 6 + 1
    assert re.fullmatch(r"[a-z0-9 ]+", flagged.filter(pl.col("method") == "ngram")["matched_ngram"][0])
    semantic = got.filter(pl.col("id") == rows["refined_id"][55], pl.col("flagged"))
    assert semantic["method"].unique().to_list() == ["embedding"]  # the n-gram rule missed it
    assert semantic.filter(pl.col("field") == "question").select("benchmark", "benchmark_item").row(0) == ("gsm8k", "0")
    assert semantic["similarity"].min() >= DecontamParams().semantic.threshold
