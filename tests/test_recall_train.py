"""Recall round 1 on real data: seeds, normalization, training, metrics, scoring, fingerprints."""
from __future__ import annotations

import json

import polars as pl
import pytest

from tasks.recall_score import ScoringModel, score_shard, scores_fingerprint
from tasks.recall_train import TrainParams, load_model, model_file, predict_pos, select_examples, train_round
from tasks.seeds import DEFAULT_SEEDS, load_seeds, record_text, seeds_fingerprint
from tasks.text_norm import normalize_expr, normalize_texts, tokens


def _source(col: str = "source_file") -> pl.Expr:
    return pl.col(col).str.split("/").list.last()


# ---- seeds and normalization ---------------------------------------------------------------------
def test_bundled_seeds_join_question_and_answer_fields():
    seeds = load_seeds()
    counts = dict(seeds.group_by("source").len().iter_rows())
    assert counts == {"gsm8k_train.jsonl": 7473, "aqua_rat_dev.json": 254, "aqua_rat_test.json": 254, "svamp.json": 1000}
    gsm = seeds.filter(pl.col("source") == "gsm8k_train.jsonl")["text"][0]
    assert gsm.startswith("Natalia sold clips") and gsm.endswith("#### 72")  # question then answer
    svamp = seeds.filter(pl.col("source") == "svamp.json")["text"][0]
    assert svamp.splitlines() == ["Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack",
                                  "How much do you have to pay to buy each pack?", "51.0"]  # Body, Question, Answer
    aqua = seeds.filter(pl.col("source") == "aqua_rat_dev.json")["text"][0]
    assert "A)32400 B)6000" in aqua and "Correct answer - A" in aqua  # options and rationale


def test_seed_formats(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "What is 2+2? 4"}\n\n{"problem": "P", "solution": "S"}\n')
    (tmp_path / "b.json").write_text(json.dumps([{"Question": "Q?", "Answer": 3}, {"other": 1}]))
    pl.DataFrame({"text": ["from parquet"]}).write_parquet(tmp_path / "c.parquet")
    (tmp_path / "d.txt").write_text("line one\n\nline two\n")
    seeds = load_seeds([str(tmp_path / n) for n in ("a.jsonl", "b.json", "c.parquet", "d.txt")])
    assert seeds["text"].to_list() == ["What is 2+2? 4", "P\nS", "Q?\n3", "from parquet", "line one", "line two"]
    assert record_text({"text": "t", "question": "q"}) == "t"
    fp = seeds_fingerprint([str(tmp_path / "a.jsonl")])
    (tmp_path / "a.jsonl").write_text('{"text": "changed"}\n')
    assert seeds_fingerprint([str(tmp_path / "a.jsonl")]) != fp
    with pytest.raises(FileNotFoundError):
        load_seeds([str(tmp_path / "missing.jsonl")])


def test_normalization_is_one_definition():
    texts = ["Natalia sold 48/2 = 24 clips.\n\nIn  MAY?", "Grüße, Straße:\u00a03.14", None, "南生论坛，你好"]
    out = normalize_texts(texts)
    assert tokens(out[0]) == "natalia sold 48 / 2 = 24 clips . in may ?".split()
    assert tokens(out[1]) == ["grüße", ",", "straße", ":", "3", ".", "14"] and out[2] == ""
    assert tokens(out[3]) == ["南生论坛", "，", "你好"]
    assert all("\n" not in t and "\u00a0" not in t for t in out)  # fastText reads one example per line
    frame = pl.DataFrame({"text": texts}).select(normalize_expr("text")).to_series().to_list()
    assert frame == out  # training (list) and scoring (frame) paths agree
    assert len(normalize_texts(["x " * 10_000], max_chars=100)[0]) <= 100


# ---- training set and model ----------------------------------------------------------------------
def test_training_set_sizes_follow_the_settings(ingested_sample):
    wh = ingested_sample
    doc_fps = wh.current_fingerprints("documents")
    in_scope = wh.scan("documents").filter(pl.col("language") == "en").select(pl.col("doc_id").n_unique()).collect().item()
    ex = select_examples(wh, 1, TrainParams(), doc_fps, None).rows
    n_neg, n_pos = (ex["label"] == 0).sum(), (ex["label"] == 1).sum()
    assert n_neg + ex["label"].null_count() == in_scope and n_pos == in_scope  # every page in scope, balanced
    test = ex.filter(pl.col("split") == "test")
    assert 0.15 < test.height / ex.height < 0.25 and set(test["label"]) == {0, 1}
    small = select_examples(wh, 1, TrainParams(neg_sample=20, pos_neg_ratio=2.0, pu_drop_score=None), doc_fps, None)
    assert ((small.rows["label"] == 0).sum(), (small.rows["label"] == 1).sum()) == (20, 40)
    half = select_examples(wh, 1, TrainParams(max_neg_fraction=0.5, pu_drop_score=None), doc_fps, None)
    assert (half.rows["label"] == 0).sum() == in_scope // 2


def test_seed_model_ranks_forum_qa_above_common_crawl_spam(recall_r1):
    wh, row, scores_fp = recall_r1
    scores = wh.scan("recall_scores", scores_fp).collect()
    docs = wh.scan("documents").select("doc_id", "source_file").collect()
    assert scores.height == docs.height  # every document row gets a score
    mean = dict(scores.join(docs, on="doc_id").group_by(_source()).agg(pl.col("score").mean()).iter_rows())
    assert mean["forum_pages.warc.gz"] > mean["resiliparse_warcfile.warc.gz"]
    assert scores["kept"].to_list() == (scores["score"] >= row["threshold"]).to_list()


def test_metrics_row_and_model_file(recall_r1):
    wh, row, _ = recall_r1
    models = wh.scan("recall_models").collect()
    assert models.height == 1
    m = models.row(0, named=True)
    assert m["fingerprint"] == row["fingerprint"] and m["round"] == 1
    assert 0.0 <= m["precision"] <= 1.0 and 0.0 <= m["recall"] <= 1.0 and m["f1"] > 0.5  # seeds vs crawl
    assert 0.0 < m["threshold"] < 1.0 and m["threshold_source"] == "labelled_best_f1"
    curve = json.loads(m["pr_curve"])
    assert len(curve) == 101 and curve[0][2] == 1.0  # threshold 0 recalls every positive
    params = json.loads(m["params"])
    assert params["dim"] == 256 and params["epoch"] == 5 and params["examples_by_origin"]["seed"] == m["n_pos"]
    assert params["notes"]["dressed_seeds"] == m["n_pos"] and params["languages"] == ["en"]
    model = load_model(model_file(wh, m["model_path"]))
    assert m["train_key"] in m["model_path"] and model.get_dimension() == 256
    examples = wh.scan("recall_examples").collect()
    dropped = params["notes"]["negatives_dropped_as_likely_positive"]
    assert examples.height == m["n_pos"] + m["n_neg"] + dropped
    assert examples.filter(pl.col("split") == "test")["score"].null_count() == 0


def test_batched_predict_matches_single_predictions(recall_r1):
    wh, row, _ = recall_r1
    model = load_model(model_file(wh, row["model_path"]))
    texts = normalize_texts(wh.scan("documents").select("text").head(20).collect()["text"])
    batch = predict_pos(model, texts)
    for text, score in zip(texts, batch):
        label, prob = model.predict(text, k=2)
        assert abs(dict(zip(label, prob))["__label__pos"] - score) < 1e-4  # fastText adds 1e-5 to each prob


def test_new_dim_or_threshold_makes_new_versions_beside_old(recall_r1, copy_warehouse):
    src, row, scores_fp = recall_r1
    wh = copy_warehouse(src)
    doc_fps = wh.current_fingerprints("documents")
    same = train_round(wh, 1, TrainParams(), doc_fps, None)
    assert same["skipped"] and same["fingerprint"] == row["fingerprint"]

    loose = train_round(wh, 1, TrainParams(threshold=0.3), doc_fps, None)
    assert loose["fingerprint"] != row["fingerprint"] and not loose["skipped"]
    assert loose["train_key"] == row["train_key"] and loose["model_path"] == row["model_path"]  # not retrained
    assert loose["threshold"] == 0.3 and loose["recall"] >= row["recall"]
    small = train_round(wh, 1, TrainParams(dim=32), doc_fps, None)
    assert small["train_key"] != row["train_key"] and load_model(model_file(wh, small["model_path"])).get_dimension() == 32

    assert set(wh.versions("recall_models")) == {row["fingerprint"], loose["fingerprint"], small["fingerprint"]}
    old = wh.scan("recall_models", row["fingerprint"]).collect().row(0, named=True)
    assert old["threshold"] == row["threshold"] and old["f1"] == row["f1"]  # old row untouched

    m = ScoringModel.from_row(loose)
    out_fp = scores_fingerprint(m.fingerprint, doc_fps)
    assert out_fp != scores_fp
    for fp in doc_fps:
        for shard in wh.shard_ids("documents", fp):
            assert not score_shard(wh, m, fp, shard, out_fp)["skipped"]
            assert score_shard(wh, m, fp, shard, out_fp)["skipped"]  # second pass: nothing to do
    new, old = wh.scan("recall_scores", out_fp).collect(), wh.scan("recall_scores", scores_fp).collect()
    assert new["kept"].sum() >= old["kept"].sum()
    assert new.sort("doc_id")["score"].to_list() == old.sort("doc_id")["score"].to_list()  # same model


def test_seeds_path_defaults_are_bundled():
    assert all(p.endswith(("jsonl", "json")) for p in DEFAULT_SEEDS)
