"""`webinstruct report`: the offline HTML page over a warehouse built from the bundled sample."""
from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET

import polars as pl
import pytest
from typer.testing import CliRunner

from tasks import domains as dom
from tasks.llm_client import LLMResult
from tests.fixtures.curate import BENCH, refined_rows
from tests.test_export import RFP, curate_by_hand
from webinstruct.report import build_report, write_report

RFP2 = "refinedfp000002"
XFP = "extractfp00001"
HEADINGS = ["Funnel", "Recall scores", "Quality on labelled pages", "Top domains", "Extraction status", "LLM tokens and latency",
            "Contamination", "Versions"]
EVIL = "<script>alert(1)</script> & co"


class Labeller:
    """Stands in for the LLM client: two educational sites, one reply that does not parse."""

    def run(self, requests, *, stage, fingerprint, shard):
        out = []
        for r in requests:
            d = r.item_id
            if d == "blizzard.com":
                out.append(LLMResult(d, "parse_error", None, "{oops", "Expecting value: line 1 column 1"))
            elif d in ("careercup.com", "css-tricks.com"):
                out.append(LLMResult(d, "ok", dom.DomainLabel(reason="interview questions with worked answers",
                                                              label="educational"), "{}", None))
            else:
                reply = dom.DomainLabel(reason=f"forum chatter {EVIL}", label="other")
                out.append(LLMResult(d, "ok", reply, "{}", None))
        return out


def extracted_rows(pairs: pl.DataFrame, doc_ids: list[str]) -> pl.DataFrame:
    """qa_extracted rows: 40 ok pairs and the error texts extract.py writes for the other outcomes."""
    rows = [dict(status="ok", error=None, grounding=0.9, question=q, answer=a)
            for q, a in pairs[:40].select("question", "answer").iter_rows()]
    rows += [dict(status="rejected", error=f"question not found on the page (grounding {g:.2f} < 0.5)", grounding=g)
             for g in (0.1, 0.2, 0.25, 0.3, 0.41, 0.49)]
    rows += [dict(status="rejected", error=f"duplicate of qa-{i:06d} (overlapping chunk)") for i in range(3)]
    rows += [dict(status="failed", error="parse_error: Expecting value: line 1 column 1 (char 0)")] * 4
    rows += [dict(status="failed", error="timeout: Request timed out.")] * 2
    rows += [dict(status="no_pairs", error=None)] * 7 + [dict(status="no_pairs", error="not sent: empty page")] * 2
    base = dict(question=None, answer=None, grounding=None, model="qwen2.5-72b", prompt_fingerprint="xp1", chunk=0)
    return pl.DataFrame([base | r | dict(qa_id=f"x-{i:05d}", doc_id=doc_ids[i % len(doc_ids)])
                         for i, r in enumerate(rows)])


def call_rows(stage: str, fp: str, model: str, n: int, n_cached: int, tokens: tuple[int, int],
              latency: float) -> list[dict]:
    """llm_calls rows: cached calls come back in a millisecond, fresh ones take `latency` seconds."""
    from warehouse import now_utc

    return [dict(call_id=f"{fp}-{i}", stage=stage, fingerprint=fp, shard="00000", request_key=f"k{i}",
                 item_id=str(i), model=model, base_url="http://127.0.0.1:8088/v1", prompt_tokens=tokens[0],
                 completion_tokens=tokens[1], latency_s=0.001 if i < n_cached else latency, attempts=1,
                 cached=i < n_cached, repaired=False, status="ok", finish_reason="stop", error=None, raw=None,
                 created_at=now_utc()) for i in range(n)]


@pytest.fixture(scope="module")
def full_wh(recall_r1, real_pairs, tmp_path_factory):
    """Both recall rounds, labelled domains, LLM calls, extracted pairs, two refiner versions, curated."""
    from tasks.recall_score import ScoringModel, score_shard, scores_fingerprint
    from tasks.recall_train import TrainParams, train_round
    from warehouse import Warehouse

    src, row1, scores1 = recall_r1
    dest = tmp_path_factory.mktemp("report") / "warehouse"
    shutil.copytree(src.root, dest, ignore=shutil.ignore_patterns("_prefect", "catalog.duckdb"))
    wh = Warehouse(dest)
    doc_fps = wh.current_fingerprints("documents")
    doc_ids = wh.scan("documents").select("doc_id").collect()["doc_id"].sort().to_list()
    run = wh.begin_run("test-report", {})

    def stage(name, fp, outputs, params, rows_out):
        with wh.stage_run(run_id=run, stage=name, fingerprint=fp, outputs=outputs, params=params,
                          upstream=[], code_version="test") as sr:
            sr.add(rows_out=rows_out)

    def label(rnd, scores_fp):
        stats = dom.domain_stats(wh, scores_fp, doc_fps, n_samples=3)
        fp = f"domainsfp{rnd}"
        rows = dom.label_rows(Labeller(), stats, rnd=rnd, scores_fp=scores_fp, fp=fp, shard="00000",
                              min_domain_docs=1, overrides={}, model="labeller-7b")
        wh.write_shard("domains", fp, "00000", rows)
        stage("domains", fp, ["domains", "llm_calls"], {"round": rnd, "model": "labeller-7b"}, rows.height)
        return fp

    stage("recall_score", scores1, ["recall_scores"], {"round": 1, "threshold": row1["threshold"]}, 270)
    dfp1 = label(1, scores1)
    model2 = ScoringModel.from_row(train_round(wh, 2, TrainParams(), doc_fps, None, dfp1))
    scores2 = scores_fingerprint(model2.fingerprint, doc_fps)
    for fp in doc_fps:
        for s in wh.shard_ids("documents", fp):
            score_shard(wh, model2, fp, s, scores2)
    stage("recall_score", scores2, ["recall_scores"], {"round": 2, "threshold": model2.threshold}, 270)
    label(2, scores2)

    wh.write_shard("qa_extracted", XFP, "00000", extracted_rows(real_pairs, doc_ids))
    stage("extract", XFP, ["qa_extracted", "llm_calls"], {"model": "qwen2.5-72b", "min_grounding": 0.5}, 66)
    gsm_test = pl.read_ndjson(BENCH / "gsm8k_test.jsonl")[:10].select("question", "answer")
    a = refined_rows(pl.concat([real_pairs[:300], real_pairs[:20], gsm_test]), doc_ids, "a", "refiner-a")
    failed = refined_rows(real_pairs[400:405], doc_ids, "af", "refiner-a").with_columns(
        status=pl.lit("failed"), error=pl.lit("parse_error: no JSON"))
    wh.write_shard("qa_refined", RFP, "s1", a)
    wh.write_shard("qa_refined", RFP, "s2", failed)
    b = refined_rows(real_pairs[500:530], doc_ids, "b", "refiner-b").with_columns(
        status=pl.when(pl.int_range(pl.len()) < 3).then(pl.lit("failed")).otherwise(pl.lit("ok")))
    wh.write_shard("qa_refined", RFP2, "s1", b)
    for fp, model in ((RFP, "refiner-a"), (RFP2, "refiner-b")):
        stage("refine", fp, ["qa_refined", "llm_calls"], {"model": model, "temperature": 0.2}, 30)
    calls = (call_rows("domains", "domainsfp1", "labeller-7b", 16, 0, (400, 40), 0.8)
             + call_rows("extract", XFP, "qwen2.5-72b", 30, 10, (1500, 300), 2.0)
             + call_rows("refine", RFP, "refiner-a", 20, 5, (900, 500), 1.5)
             + call_rows("refine", RFP2, "refiner-b", 12, 8, (800, 450), 3.0))
    for fp in {c["fingerprint"] for c in calls}:
        wh.write_shard("llm_calls", fp, "00000", pl.DataFrame([c for c in calls if c["fingerprint"] == fp]))
    wh.finish_run(run)
    from tasks.quality_eval import run_eval

    run_eval(wh)  # both rounds measured on the shipped labelled pages
    curate_by_hand(wh, semantic=True)  # dedup, decontaminate (GSM8K test items) and export the refiner-a version
    return wh


def section(html: str, anchor: str) -> str:
    m = re.search(rf'<section id="{anchor}">(.*?)</section>', html, re.S)
    assert m, f"no section {anchor}"
    return m.group(1)


def bar_titles(part: str) -> list[str]:
    return re.findall(r"<rect [^>]*><title>([^<]*)</title></rect>", part)


def test_report_shows_every_section_with_the_warehouse_numbers(full_wh):
    from tasks.export import funnel

    wh = full_wh
    html = build_report(wh)
    for h in HEADINGS:
        assert f"<h2>{h}</h2>" in html
    assert "could not build" not in html and "no data yet" not in html
    assert str(wh.root) in html and "generated 20" in html
    for anchor in ("funnel", "recall", "domains", "extraction", "llm", "contamination"):
        assert "<svg" in section(html, anchor), anchor
    for chart in re.findall(r"<svg.*?</svg>", html, re.S):  # escaped well enough to parse as XML
        assert ET.fromstring(chart).find("title") is not None

    f = dict(funnel(wh).iter_rows())
    assert f["documents"] == 270 and f["clean"] > 0
    part = section(html, "funnel")
    for stage, rows in f.items():
        assert f"<td>{stage}</td><td class=\"n\">{rows:,}</td>" in part
    assert part.count('<g class="bar">') == 6 and "documents: 270 (100.0%)" in part

    # one histogram per round; its bins hold every score; the threshold is marked
    part = section(html, "recall")
    models = wh.scan("recall_models").collect()
    assert part.count('<svg class="chart"') == 2
    for t in models["threshold"]:
        assert f"threshold {t:.4f}</text>" in part
    counts = [int(re.search(r": ([\d,]+) documents", t).group(1).replace(",", "")) for t in bar_titles(part)]
    scores = wh.scan("recall_scores").collect()
    unscored = scores.filter(pl.col("score") == 0).height  # other languages: counted apart, not binned
    assert len(counts) == 40 and sum(counts) + unscored == scores.height == 540 and unscored > 0
    kept = scores.group_by("round").agg(pl.col("kept").sum(), (pl.col("score") == 0).sum().alias("zero"))
    for rnd, n, zero in kept.iter_rows():
        assert f"round {rnd} · 270 documents · {n:,} kept · {zero:,} not scored (out of scope)" in part
    assert "Recall models" in part and f"{models['eval_roc_auc'][0]:.2f}" in part

    part = section(html, "quality")
    assert "shipped:" in part and part.count("<td>recall</td>") == 2

    # top domains of round 2, coloured by label, reasons escaped
    part = section(html, "domains")
    d = wh.scan("domains").filter(pl.col("round") == 2).collect().sort("docs_recalled", descending=True)
    assert "Top 25 domains of round 2" in part and part.count('<g class="bar">') == 25
    assert d["domain"][0] in part and "#2e7d32" in part and "interview questions with worked answers" in part
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in part and "<script" not in html

    part = section(html, "extraction")
    labels = dict(re.findall(r'>([^<>]+)</text><rect[^>]*><title>[^<]*</title></rect><text [^>]*>([\d,]+) \(', part))
    assert labels == {"ok": "40", "rejected: question not found on the page": "6", "rejected: duplicate of #": "3",
                      "failed: parse_error": "4", "failed: timeout": "2", "no_pairs": "7", "no_pairs: not sent": "2"}

    part = section(html, "llm")
    assert "45,000" in part and "9,000" in part  # extract: 30 calls x 1500 in, x 300 out
    row = re.search(r"<td>refine</td><td>refiner-b</td>(.*?)</tr>", part).group(1)
    assert ">66.7%<" in row and row.count(">3.00<") == 2  # p50/p95 ignore the 8 cached calls
    assert "labeller-7b" in part and len(bar_titles(part)) == 2 * 4

    part = section(html, "contamination")
    hits = wh.scan("qa_contamination").filter(pl.col("benchmark") == "gsm8k", pl.col("flagged")).collect()
    assert hits.height and f"gsm8k: {hits['id'].n_unique():,} pairs" in part
    by = hits.group_by("method").agg(pl.col("id").n_unique())
    for method, n in by.iter_rows():  # one bar segment per method that flagged pairs
        assert f"gsm8k: {n:,} pairs by {method}" in part
    assert "<th>by embedding</th>" in part and "<th>by LLM judge</th>" in part

    # versions: the two refiner versions side by side, the setting that differs first
    part = section(html, "versions")
    assert "<h3>refine (2 versions)</h3>" in part and "<h3>recall_score (2 versions)</h3>" in part
    refine = part.split("<h3>refine (2 versions)</h3>")[1].split("<h3>")[0]
    assert "<code>model</code> = refiner-a" in refine and "<code>model</code> = refiner-b" in refine
    assert "<code>temperature</code>" not in refine  # the same in both: only under "all parameters"
    assert "failed 5 · ok 330" in refine and "failed 3 · ok 27" in refine and refine.count('class="current"') == 2
    assert "failed 6 · no_pairs 9 · ok 40 · rejected 9" in part


def test_report_is_self_contained(full_wh, tmp_path):
    out = write_report(full_wh, tmp_path / "r" / "report.html")
    html = out.read_text(encoding="utf-8")
    assert out.parent.exists() and [p.name for p in out.parent.iterdir()] == ["report.html"]  # no temp left
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?\s*(?:[a-z]+:)?//", html, re.I)
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', html)) and " src=" not in html
    assert "http://" not in html and "https://" not in html and "<script" not in html and "url(" not in html
    write_report(full_wh, out)  # replaced whole
    assert out.read_text(encoding="utf-8").count("<!DOCTYPE html>") == 1


def test_empty_and_partial_warehouses_say_no_data_yet(data_dir, ingested_sample):
    from warehouse import Warehouse

    html = build_report(Warehouse(data_dir))
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert all(f"<h2>{h}</h2>" in html for h in HEADINGS)
    assert html.count("no data yet") == len(HEADINGS) and "<svg" not in html and "could not build" not in html

    # only documents: the funnel and the ingest version, nothing downstream
    html = build_report(ingested_sample)
    assert "<svg" in section(html, "funnel") and ">270<" in section(html, "funnel")
    assert "<h3>ingest</h3>" in section(html, "versions")
    for anchor in ("recall", "quality", "domains", "extraction", "llm", "contamination"):
        assert "no data yet" in section(html, anchor)


def test_report_command(full_wh, tmp_path):
    from webinstruct.cli import app

    out = tmp_path / ("a-long-folder-name-" * 5) / "report.html"  # longer than a terminal line
    res = CliRunner().invoke(app, ["--data-dir", str(full_wh.root), "report", str(out)])
    assert res.exit_code == 0, res.output
    assert str(out.resolve()) in res.stdout.splitlines()
    assert "<h2>Versions</h2>" in out.read_text(encoding="utf-8")


def test_a_failing_section_does_not_hide_the_others(ingested_sample, monkeypatch):
    from webinstruct import report

    def broken(ctx):
        raise ValueError("table <gone>")

    sections = [(a, h, broken if a == "recall" else fn) for a, h, fn in report.SECTIONS]
    monkeypatch.setattr(report, "SECTIONS", sections)
    html = build_report(ingested_sample)
    assert "could not build this section: ValueError: table &lt;gone&gt;" in section(html, "recall")
    assert "<svg" in section(html, "funnel") and "<h3>ingest</h3>" in section(html, "versions")
