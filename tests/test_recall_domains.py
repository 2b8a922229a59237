"""Domain aggregation and LLM labelling: overrides, failures recorded, the real embedded server."""
from __future__ import annotations

import json

import polars as pl
import pydantic
import pytest

from tasks import domains as dom
from tasks.llm_client import LLMClient, LLMResult


def _stats(recall_r1) -> pl.DataFrame:
    wh, _, scores_fp = recall_r1
    return dom.domain_stats(wh, scores_fp, wh.current_fingerprints("documents"), n_samples=3)


def test_domain_stats_match_the_scores(recall_r1):
    wh, _, scores_fp = recall_r1
    stats = _stats(recall_r1)
    joined = (wh.scan("recall_scores", scores_fp).collect()
              .join(wh.scan("documents").select("doc_id", "domain", "url").collect(), on="doc_id"))
    per = joined.filter(pl.col("domain").is_not_null()).group_by("domain").agg(
        seen=pl.len(), kept=pl.col("kept").sum(), mean=pl.col("score").mean(), best=pl.col("url").sort_by(["score", "doc_id"], descending=[True, False]).first())
    both = stats.join(per, on="domain")
    assert both.height == stats.height == per.height
    assert (both["docs_seen"] == both["seen"]).all() and (both["docs_recalled"] == both["kept"]).all()
    assert ((both["mean_score"] - both["mean"]).abs() < 1e-6).all()
    assert (both["sample_urls"].list.first() == both["best"]).all()  # top-scoring page first
    assert stats["sample_urls"].list.len().max() == 3
    assert stats.filter(pl.col("domain") == "uraharajuku.st")["docs_seen"].item() == 29  # the CC spam site


def test_overrides_csv_and_json(tmp_path):
    (tmp_path / "o.csv").write_text("domain,label\nWWW.Math.StackExchange.com,educational\nspam.example,no\n")
    (tmp_path / "o.json").write_text(json.dumps([{"domain": "a.org", "label": "other"}]))
    assert dom.load_overrides(str(tmp_path / "o.csv")) == {"math.stackexchange.com": "educational",
                                                           "spam.example": "other"}
    assert dom.load_overrides(str(tmp_path / "o.json")) == {"a.org": "other"}
    (tmp_path / "bad.json").write_text(json.dumps({"a.org": "maybe"}))
    with pytest.raises(ValueError, match="maybe"):
        dom.load_overrides(str(tmp_path / "bad.json"))
    assert dom.load_overrides(None) == {}


class FakeClient:
    """Stands in for LLMClient: a scripted result per domain, and a record of what was asked."""

    def __init__(self, results: dict[str, LLMResult]):
        self.results, self.asked = results, []

    def run(self, requests, *, stage, fingerprint, shard):
        self.asked += requests
        return [self.results[r.item_id] for r in requests]


def test_labels_overrides_and_failures_are_rows_not_errors(recall_r1):
    stats = _stats(recall_r1).filter(pl.col("domain").is_in(
        ["uraharajuku.st", "stackexchange.com", "baidu.com", "commoncrawl.org"]))
    stats = stats.with_columns(docs_recalled=pl.when(pl.col("domain") == "commoncrawl.org").then(0).otherwise(5))
    fake = FakeClient({
        "stackexchange.com": LLMResult("stackexchange.com", "ok", dom.DomainLabel(reason="Q&A on science",
                                                                                 label="educational"), "{}", None),
        "baidu.com": LLMResult("baidu.com", "parse_error", None, "{not json", "Expecting property name"),
    })
    rows = dom.label_rows(fake, stats, rnd=1, scores_fp="s", fp="f", shard="00000", min_domain_docs=2,
                          overrides={"uraharajuku.st": "other"}, model="m")
    got = {r["domain"]: (r["label"], r["label_source"]) for r in rows.iter_rows(named=True)}
    assert got == {"uraharajuku.st": ("other", "override"), "stackexchange.com": ("educational", "llm"),
                   "baidu.com": ("failed", "failed"), "commoncrawl.org": ("unlabelled", "below_min_docs")}
    assert sorted(r.item_id for r in fake.asked) == ["baidu.com", "stackexchange.com"]  # override: no call
    assert "Expecting property name" in rows.filter(pl.col("domain") == "baidu.com")["reason"].item()
    prefix = {json.dumps(r.messages[0]) for r in fake.asked}
    assert len(prefix) == 1 and all(r.messages[1]["content"].startswith("Website: ") for r in fake.asked)
    assert rows["round"].unique().to_list() == [1]


class Impossible(pydantic.BaseModel):
    """A reply the schema allows but validation never accepts: every reply is malformed."""
    reason: str
    label: str

    @pydantic.field_validator("label")
    @classmethod
    def never(cls, v: str) -> str:
        raise ValueError("no label is ever good enough")


def test_real_llm_labels_domains_and_bad_replies_are_recorded(recall_r1, llm_server, copy_warehouse):
    wh = copy_warehouse(recall_r1[0])
    stats = _stats(recall_r1).filter(pl.col("domain").is_in(["stackexchange.com", "uraharajuku.st"]))
    client = LLMClient(llm_server, wh)
    rows = dom.label_rows(client, stats, rnd=1, scores_fp="s", fp="fp-real", shard="00000", min_domain_docs=0,
                          overrides={}, model=llm_server.model)
    assert rows.height == 2
    for r in rows.iter_rows(named=True):
        assert r["label_source"] in ("llm", "failed") and r["model"] == llm_server.model
        assert r["label"] in ("educational", "other") if r["label_source"] == "llm" else r["label"] == "failed"
        assert r["reason"]
    calls = wh.scan("llm_calls", "fp-real").collect()
    assert calls.height == 2 and set(calls["stage"]) == {"domains"}

    bad = dom.label_rows(client, stats.head(1), rnd=1, scores_fp="s", fp="fp-bad", shard="00000",
                         min_domain_docs=0, overrides={}, model=llm_server.model, response_model=Impossible)
    row = bad.row(0, named=True)
    assert (row["label"], row["label_source"]) == ("failed", "failed")
    assert "parse_error" in row["reason"]


def test_llm_budget_keeps_the_domains_with_most_recalled_docs():
    import polars as pl

    from tasks.domains import over_budget

    stats = pl.DataFrame({"domain": ["a.org", "b.org", "c.org", "www.d.org", "e.org"],
                          "docs_recalled": [5, 1, 3, 9, 0], "mean_score": [0.9, 0.8, 0.7, 0.6, 0.1]})
    assert over_budget(stats, min_domain_docs=1, overrides={}, max_llm_domains=None) == set()
    # d.org is forced by an override, e.org is below min_domain_docs: neither counts against the budget.
    assert over_budget(stats, min_domain_docs=1, overrides={"d.org": "other"}, max_llm_domains=2) == {"b.org"}
    assert over_budget(stats, min_domain_docs=1, overrides={}, max_llm_domains=1) == {"a.org", "b.org", "c.org"}


def test_a_degenerate_labeller_is_noticed():
    import polars as pl

    from tasks.domains import labeller_alarm

    def rows(labels, reasons, source="llm"):
        return pl.DataFrame({"domain": [f"d{i}.org" for i in range(len(labels))], "label": labels,
                             "reason": reasons, "label_source": [source] * len(labels)})

    varied = [f"worked solutions to exam problem set {i}" for i in range(10)]
    assert labeller_alarm(rows(["educational", "other"] * 5, varied)) is None
    same = labeller_alarm(rows(["educational"] * 10, varied))
    assert same.startswith("degenerate domain labeller: all 10 domains the LLM labelled are 'educational'. ")
    # almost all: counted with the share; below 95% is a (skewed) judgement, not an alarm
    most = labeller_alarm(rows(["educational"] * 57 + ["other"] * 2, [f"reason number {i}" for i in range(59)]))
    assert "57 of 59 (97%) domains the LLM labelled are 'educational'" in most
    assert labeller_alarm(rows(["educational"] * 18 + ["other"] * 2, varied * 2)) is None
    silent = labeller_alarm(rows(["educational", "other"] * 5, [""] * 4 + ["edu site", None] + varied[:4]))
    assert "6 of 10 (60%) reasons are empty or shorter than 3 words" in silent
    # one sentence for every domain, or one template with the site's name swapped in: a parrot
    parrot = labeller_alarm(rows(["educational", "other"] * 5, ["This site has lots of content."] * 9 + varied[:1]))
    assert "9 of 10 (90%) reasons are the same text ('this site has lots of content')" in parrot
    template = labeller_alarm(rows(["educational", "other"] * 5, [f"d{i}.org: a site with content" for i in range(10)]))
    assert "all 10 reasons are the same text ('a site with content')" in template
    assert labeller_alarm(rows(["educational"] * 3, [""] * 3)) is None  # too few to judge
    assert labeller_alarm(rows(["other"] * 10, [""] * 10, source="override")) is None  # the user's word
    assert "." not in silent.split(". ")[0]  # round 2's note keeps the first sentence whole
