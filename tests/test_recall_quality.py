"""Recall measured where it matters: on the shipped labelled real pages (never trained on).

Metrics against brute force, the labelled-set loader, the training examples (seeds dressed as
pages, language scope, positive-unlabelled cleaning), domain labels used only with evidence, and
the two rounds' quality on the shipped set, with a degenerate labeller and with none.
"""
from __future__ import annotations

import itertools
import json
from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest

from tasks import recall_examples as rx
from tasks.labelled_pages import SHIPPED_DIR, LabelledSetError, load_labelled
from tasks.recall_eval import best_f1_threshold, cv_f1, page_metrics, pr_auc, prf, roc_auc
from tasks.recall_score import ScoringModel, score_shard, scores_fingerprint
from tasks.recall_train import TrainParams, labelled_scores, model_file, select_examples, train_round


# ---- metrics -------------------------------------------------------------------------------------
def test_metrics_match_brute_force():
    rng = np.random.default_rng(7)
    for _ in range(100):
        n = int(rng.integers(3, 30))
        y, s = rng.integers(0, 2, n), np.round(rng.random(n), 1)  # many ties on purpose
        if y.min() == y.max():
            continue
        pairs = [(a, b) for a, b in itertools.product(s[y == 1], s[y == 0])]
        assert roc_auc(y, s) == pytest.approx(np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs]))
        t = best_f1_threshold(y, s)
        assert prf(y, s, t)[2] == pytest.approx(max(prf(y, s, c)[2] for c in np.unique(s)))
    y = np.array([1, 0, 1, 0])
    assert pr_auc(y, np.array([0.9, 0.8, 0.7, 0.1])) == pytest.approx((1 + 2 / 3) / 2)
    assert roc_auc(np.array([1, 1]), np.array([0.1, 0.2])) is None  # one class: undefined, not 0.5


def test_threshold_search_resolves_scores_packed_near_one_half():
    y = np.array([1] * 10 + [0] * 30)
    s = np.r_[np.linspace(0.5021, 0.5030, 10), np.linspace(0.4980, 0.5020, 30)]  # perfectly ranked
    t = best_f1_threshold(y, s)
    assert prf(y, s, t)[2] == 1.0 and 0.502 < t <= 0.5021  # a 0.01 grid could only say 0.50
    m = page_metrics(y, s, t)
    assert m["roc_auc"] == 1.0 and m["f1"] == 1.0 and m["f1_cv"] >= 0.8 and m["kept"] == 10


# ---- the labelled page set -----------------------------------------------------------------------
def test_shipped_set_is_big_enough_and_disjoint_from_the_sample(sample_crawl):
    from tasks.warc_reader import ReadStats, iter_pages, open_input

    pages, set_id = load_labelled()
    assert set_id.startswith("shipped:") and pages.height >= 150 and pages["label"].sum() >= 40
    assert pages["domain"].filter(pages["label"] == 1).n_unique() >= 5  # positives from several sites
    assert (pages["text"].str.len_chars() > 0).mean() > 0.95
    sample_urls = set()
    for f in sample_crawl.glob("*.warc*"):
        with open_input(str(f)) as stream:
            sample_urls |= {p.url for p in iter_pages(stream, ReadStats())}
    assert not sample_urls & set(pages["url"])  # never in the crawl the demo trains on
    rules = (SHIPPED_DIR / "README.md").read_text()
    assert "edu_qa" in rules and "licen" in rules.lower()


def test_users_own_labelled_set_in_tsv_or_jsonl(tmp_path):
    shipped, _ = load_labelled()
    a, b = shipped.filter(pl.col("label") == 1)["url"][0], shipped.filter(pl.col("label") == 0)["url"][0]
    warc = str(SHIPPED_DIR / "pages.warc.gz")
    (tmp_path / "mine.tsv").write_text(f"url\tlabel\n{a}\tpositive\n{b}\t0\n")
    pages, set_id = load_labelled(str(tmp_path / "mine.tsv"), [warc])
    assert pages["label"].to_list() == [1, 0] and set_id.startswith("mine.tsv:")
    (tmp_path / "mine.jsonl").write_text(json.dumps({"url": a, "label": "edu_qa", "warc": warc}) + "\n")
    assert load_labelled(str(tmp_path / "mine.jsonl"))[0]["text"][0] == shipped.filter(pl.col("url") == a)["text"][0]
    bad = {"missing.tsv": "url\tlabel\nhttps://nowhere.example/\t1\n", "label.tsv": f"url\tlabel\n{a}\tmaybe\n",
           "dup.tsv": f"url\tlabel\n{a}\t1\n{a}\t0\n", "cols.tsv": "address\tverdict\nx\t1\n"}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(LabelledSetError):
            load_labelled(str(tmp_path / name), [warc])


# ---- training examples -----------------------------------------------------------------------------
def test_round1_examples_are_pages_against_pages(ingested_sample):
    wh = ingested_sample
    doc_fps = wh.current_fingerprints("documents")
    docs = wh.scan("documents").select("doc_id", "language", "text").collect()
    english = set(docs.filter(pl.col("language") == "en")["doc_id"])
    ex = select_examples(wh, 1, TrainParams(), doc_fps, None).rows
    pos, neg = ex.filter(pl.col("label") == 1), ex.filter(pl.col("label") == 0)
    dropped = ex.filter(pl.col("label").is_null())
    assert set(pos["origin"]) == {"seed"} and set(neg["origin"]) == {"random_doc"}
    assert set(neg["item_id"]) | set(dropped["item_id"]) <= english  # negatives in the seeds' language only
    assert dropped.height <= 0.05 * (neg.height + dropped.height)  # likely positives left out, capped
    assert set(dropped["origin"]) <= {"likely_positive"} and set(dropped["split"]) <= {"dropped"}
    assert pos.height == neg.height + dropped.height  # balanced before cleaning
    assert not pos["text"].str.contains("<<").any() and not pos["text"].str.contains("####").any()
    # a dressed seed carries page text around it: page furniture is no longer a class signal
    frames = sum(t.split("\n")[0] != "" for t in pos["text"].to_list())
    assert frames > 0.5 * pos.height
    again = select_examples(wh, 1, TrainParams(), doc_fps, None).rows
    assert again["item_id"].to_list() == ex["item_id"].to_list()  # seeded


def test_domain_labels_are_used_only_with_evidence():
    labels = pl.DataFrame({
        "domain": ["edu-agrees.org", "edu-disagrees.com", "other-agrees.net", "other-disagrees.io", "forced.edu"],
        "label": ["educational", "educational", "other", "other", "educational"],
        "label_source": ["llm", "llm", "llm", "llm", "override"],
        "docs_seen": [4, 4, 4, 4, 4], "docs_recalled": [3, 0, 0, 4, 0]})
    edu, other, notes = rx.trusted_labels(labels, alarm=None)
    assert sorted(edu) == ["edu-agrees.org", "forced.edu"] and other == ["other-agrees.net"]
    assert notes["domain_labels_skipped"] == 2 and "disagree" in notes["domain_labels"]
    edu, other, notes = rx.trusted_labels(labels, alarm="degenerate domain labeller: all 9 are 'educational'. x")
    assert edu == ["forced.edu"] and other == []  # a degenerate labeller is ignored; overrides stay
    assert notes["domain_labels"].startswith("LLM labels ignored: degenerate")


# ---- the rounds on the shipped labelled pages ---------------------------------------------------
def _score_all(wh, row, doc_fps):
    m = ScoringModel.from_row(row)
    out = scores_fingerprint(m.fingerprint, doc_fps)
    for fp in doc_fps:
        for shard in wh.shard_ids("documents", fp):
            score_shard(wh, m, fp, shard, out)
    return out


def _degenerate_domains(wh, scores_fp, doc_fps):
    """A `domains` version where the LLM called every domain educational, with no reasons."""
    from tasks.domains import domain_stats

    stats = domain_stats(wh, scores_fp, doc_fps, 5)
    rows = stats.with_columns(round=pl.lit(1, pl.Int32), scores_fingerprint=pl.lit(scores_fp),
                              label=pl.lit("educational"), reason=pl.lit(""), label_source=pl.lit("llm"),
                              model=pl.lit("degenerate"), labelled_at=pl.lit(datetime(2026, 1, 1, tzinfo=timezone.utc)))
    wh.write_shard("domains", "degenerate", "00000", rows)
    return "degenerate"


def test_round2_finds_labelled_qa_pages_and_ignores_a_degenerate_labeller(recall_r1, copy_warehouse):
    src, r1, scores1 = recall_r1
    wh = copy_warehouse(src)
    doc_fps = wh.current_fingerprints("documents")
    no_domains = train_round(wh, 2, TrainParams(), doc_fps, None, prev_scores_fp=scores1)
    bad_fp = _degenerate_domains(wh, scores1, doc_fps)
    bad = train_round(wh, 2, TrainParams(), doc_fps, None, domains_fp=bad_fp, prev_scores_fp=scores1)
    notes = json.loads(bad["params"])["notes"]
    assert notes["domain_labels"].startswith("LLM labels ignored: degenerate domain labeller")
    for row in (r1, no_domains, bad):
        assert row["eval_set"].startswith("shipped:") and row["threshold_source"] == "labelled_best_f1"
        assert row["eval_roc_auc"] >= 0.85, row  # round 1 on seeds alone already ranks real pages
    assert no_domains["eval_roc_auc"] >= 0.9 and no_domains["eval_f1_cv"] >= 0.75
    assert bad["eval_roc_auc"] >= no_domains["eval_roc_auc"] - 0.02  # bad labels cost (almost) nothing
    assert no_domains["eval_roc_auc"] >= r1["eval_roc_auc"] - 0.02  # round 2 does not lose what round 1 had
    # the recall_models columns are the labelled-set scores of that model
    y, s, _ = labelled_scores(model_file(wh, bad["model_path"]), 4000, ("en",))
    assert roc_auc(y, s) == pytest.approx(bad["eval_roc_auc"]) and cv_f1(y, s) == pytest.approx(bad["eval_f1_cv"])
    # the scored crawl: pages outside the seeds' language are never recalled
    scores2 = _score_all(wh, bad, doc_fps)
    joined = wh.scan("recall_scores", scores2).join(wh.scan("documents").select("doc_id", "language"),
                                                     on="doc_id").collect()
    assert joined.filter(pl.col("language") != "en")["score"].max() == 0.0
    assert not joined.filter(pl.col("language") != "en")["kept"].any()

