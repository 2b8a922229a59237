"""Stage `refine`: two refiners over the same extracted pairs give two versions side by side,
each row traceable to its pair and page; a rerun costs no LLM call (real embedded server)."""
from __future__ import annotations

import polars as pl
import pytest

from tasks import refine as rf
from tasks.extract import ChatPrompt, qa_id
from tasks.llm_client import LLMClient, LLMSettings
from warehouse.catalog import query

# Pairs as they stand on two real pages of the bundled sample (checked below).
PAIRS = [
    ("stackoverflow.com/questions/1077347/hello-world-in-python",
     'I tried running a python script:\n\nprint "Hello, World!"\n\nAnd I get this error:',
     "You are probably using Python 3.0, where print is now a function (hence the parenthesis) instead "
     "of a statement."),
    ("css-tricks.com/forums/topic/last-child-or",
     "I want to style the last “col” containing “bs_tab_bottomonly” different – how can I achieve this?",
     ".sliders .slider:nth-child(2) .col:last-child {"),
]


def extracted_version(wh) -> tuple[str, str, pl.DataFrame]:
    """A qa_extracted version holding the real pairs (as the extract stage writes them) plus a
    chunk without pairs, which refine must skip."""
    rows = []
    for url, q, a in PAIRS:
        doc = wh.scan("documents").filter(pl.col("url").str.contains(url, literal=True)).collect().row(0, named=True)
        assert q in doc["text"] and a in doc["text"]
        rows.append(dict(qa_id=qa_id(doc["doc_id"], 0, 0), doc_id=doc["doc_id"], chunk=0, question=q, answer=a,
                         model="by-hand", prompt_fingerprint="none", grounding=1.0, status="ok", error=None))
    rows.append(dict(qa_id=qa_id("doc-x", 0, None), doc_id="doc-x", chunk=0, question=None, answer=None,
                     model="by-hand", prompt_fingerprint="none", grounding=None, status="no_pairs", error=None))
    xfp, shard = "extract-test", "s-00000"
    df = pl.DataFrame(rows, schema=wh.spec("qa_extracted").schema)
    wh.write_shard("qa_extracted", xfp, shard, df)
    return xfp, shard, df


def run_refiners(wh, refiners, xfp, shard) -> tuple[list[str], list[dict], int]:
    params = rf.RefineParams()
    clients: list[LLMClient] = []

    def factory(s, w):
        clients.append(LLMClient(s, w))
        return clients[-1]

    run_id = wh.begin_run("test-refine", {})
    fps, stats = [], []
    for settings in refiners:
        fp = params.fingerprint(settings, xfp)
        with wh.stage_run(run_id=run_id, stage=rf.STAGE, fingerprint=fp, outputs=["qa_refined"], params={},
                          upstream=[xfp], code_version=rf.CODE_VERSION):
            stats.append(rf.refine_shard(wh, settings, params, fp, xfp, shard, client_factory=factory))
        fps.append(fp)
    wh.finish_run(run_id)
    return fps, stats, sum(c.network_calls for c in clients)


@pytest.mark.slow  # two refiner runs on the real model (~35 s); make test-slow (CI) runs it
def test_two_refiners_give_two_versions_with_lineage(ingested_sample, copy_warehouse, llm_server):
    wh = copy_warehouse(ingested_sample)
    xfp, shard, extracted = extracted_version(wh)
    base = llm_server.model_copy(update={"max_tokens": 160})
    # The embedded server serves one model; another temperature is another refiner (own fingerprint).
    refiners = [base, base.model_copy(update={"temperature": 0.8})]
    fps, stats, calls = run_refiners(wh, refiners, xfp, shard)
    assert len(set(fps)) == 2 and calls >= 4

    both = query(wh, "SELECT * FROM qa_refined_all ORDER BY fingerprint, qa_id")
    assert both.height == 4 and set(both["fingerprint"]) == set(fps)
    current = query(wh, "SELECT DISTINCT fingerprint FROM qa_refined")
    assert set(current["fingerprint"]) == set(fps)  # both refiners of the latest run are current
    ok_pairs = extracted.filter(pl.col("status") == "ok")
    for fp in fps:
        version = both.filter(pl.col("fingerprint") == fp)
        lineage = version.join(ok_pairs, on="qa_id", suffix="_x")
        assert lineage.height == 2 and (lineage["doc_id"] == lineage["doc_id_x"]).all()
        assert set(version["status"]) <= {"ok", "unrefined", "failed"}
        good = version.filter(pl.col("status") == "ok")
        assert good.filter((pl.col("question").str.len_chars() == 0) | (pl.col("answer").str.len_chars() == 0)).height == 0
        assert version.filter(pl.col("status") != "ok")["error"].null_count() == 0
        # a refinement that failed verification leaves the extracted pair in place, unchanged
        stand_in = version.filter(pl.col("status") == "unrefined").join(ok_pairs, on="qa_id", suffix="_x")
        assert stand_in.select("question", "answer").equals(
            stand_in.select(pl.col("question_x").alias("question"), pl.col("answer_x").alias("answer")))
        assert (version["prompt_fingerprint"] == ChatPrompt.load("refine").fingerprint).all()
    assert both["refined_id"].n_unique() == 4  # the same pair refined twice has two ids
    # every refined row (either version) leads back to its page
    pages = query(wh, "SELECT r.refined_id, d.url FROM qa_refined_all r JOIN documents d USING (doc_id)")
    assert pages.height == 4

    calls_log = query(wh, "SELECT fingerprint, count(*) AS n, sum(cached::INT) AS cached FROM llm_calls_all "
                          "WHERE stage = 'refine' GROUP BY ALL")
    assert sorted(calls_log["n"].to_list()) == [2, 2] and calls_log["cached"].sum() == 0

    # rerun: both shards exist, nothing is asked and nothing written
    files = sorted(p.name for p in (wh.root / "qa_refined").rglob("*.parquet"))
    fps2, stats2, calls2 = run_refiners(wh, refiners, xfp, shard)
    assert fps2 == fps and calls2 == 0 and all(s["skipped"] for s in stats2)
    assert sorted(p.name for p in (wh.root / "qa_refined").rglob("*.parquet")) == files


class ScriptedClient:
    """Replies chosen by the test (one per pair, in order), so verification is exercised exactly."""

    def __init__(self, replies):
        self.replies, self.network_calls = replies, 0

    def run(self, requests, **_):
        from tasks.llm_client import LLMResult

        self.network_calls = len(requests)
        return [LLMResult(r.item_id, "ok", rf.RefineReply(question=q, answer=a), None, None)
                for r, (q, a) in zip(requests, self.replies)]


def test_a_refinement_that_fails_verification_keeps_the_extracted_pair(ingested_sample, copy_warehouse):
    wh = copy_warehouse(ingested_sample)
    xfp, shard, extracted = extracted_version(wh)
    replies = [("In Python 3, print is a function, so print \"Hello, World!\" is a syntax error.",  # a statement
                "Python 3 made print a function: write `print(\"Hello, World!\")`."),
               ("How can I style the last `.col` with class `bs_tab_bottomonly` differently in CSS?",
                "Select it with `:last-child`:\n```css\n.sliders .slider:nth-child(2) .col:last-child {\n"
                "  border: none;\n}\n```")]
    settings = LLMSettings(model="scripted")
    fp = rf.RefineParams().fingerprint(settings, xfp)
    stats = rf.refine_shard(wh, settings, rf.RefineParams(), fp, xfp, shard,
                            client_factory=lambda s, w: ScriptedClient(replies))
    assert (stats["ok"], stats["unrefined"], stats["failed"]) == (1, 1, 0)
    rows = wh.read_shard("qa_refined", fp, shard).join(extracted, on="qa_id", suffix="_x").sort("status")
    ok, unrefined = rows.row(0, named=True), rows.row(1, named=True)
    assert ok["status"] == "ok" and ok["question"] == replies[1][0] and ok["error"] is None
    assert unrefined["status"] == "unrefined"
    assert (unrefined["question"], unrefined["answer"]) == (unrefined["question_x"], unrefined["answer_x"])
    assert unrefined["error"].startswith('refined question no longer asks anything: "In Python 3, print')


def test_refine_fingerprint_follows_model_temperature_and_upstream():
    llm_server = LLMSettings()
    p = rf.RefineParams()
    a = p.fingerprint(llm_server, "x1")
    assert a == p.fingerprint(llm_server.model_copy(), "x1")
    assert a != p.fingerprint(llm_server.model_copy(update={"model": "other"}), "x1")
    assert a != p.fingerprint(llm_server.model_copy(update={"temperature": 0.5}), "x1")
    assert a != p.fingerprint(llm_server, "x2")
    assert rf.refined_id("q", a) != rf.refined_id("q", p.fingerprint(llm_server, "x2"))
