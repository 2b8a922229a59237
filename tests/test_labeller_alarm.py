"""A degenerate domain labeller (one label for every site, no reasons, one parroted sentence) is
noticed and shown where users look: the flow's summary, the stage_runs row, the CLI, the HTML
report; and round 2 does not train on its labels. The LLM is a scripted server (no model)."""
from __future__ import annotations

import io
import json
import re

import polars as pl
import pytest

from tasks import domains as dom
from tasks.llm_client import LLMClient
from tasks.recall_examples import trusted_labels
from tests.fake_llm_server import always
from warehouse import Warehouse, now_utc

N = 12  # domains, two pages each; site00.org is forced by the user's override file
DOC_FP, SCORES_FP = "docsfp", "scoresfp"
FAST = dict(timeout_s=2.0, backoff_base_s=0.01, backoff_max_s=0.05, max_retries=2, max_concurrency=4)
EMPTY = {"reason": "", "label": "educational"}
PARROT = {"reason": "This website provides educational content for students.", "label": "educational"}


def tiny_warehouse(root) -> Warehouse:
    """`documents` and round-1 `recall_scores`: every page of every site recalled."""
    wh = Warehouse(root)
    docs = [dict(doc_id=f"d{i:02d}-{j}", url=f"https://site{i:02d}.org/q{j}", domain=f"site{i:02d}.org",
                 title=f"Exercise {j} of site {i}", text="What is 2 + 2? Answer: 4.", language="en")
            for i in range(N) for j in range(2)]
    frame = pl.DataFrame(docs)
    for col, dtype in wh.spec("documents").schema.items():
        if col not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype).alias(col))
    wh.write_shard("documents", DOC_FP, "00000", frame)
    wh.write_shard("recall_scores", SCORES_FP, "00000", pl.DataFrame(
        {"model_fingerprint": "m1", "round": 1, "doc_id": [d["doc_id"] for d in docs], "score": 0.9, "kept": True}))
    return wh


def label(server, wh: Warehouse) -> pl.DataFrame:
    """The real labelling path: domain stats, the prompt, LLMClient over HTTP, parsing."""
    stats = dom.domain_stats(wh, SCORES_FP, [DOC_FP])
    return dom.label_rows(LLMClient(server.settings(**FAST), wh), stats, rnd=1, scores_fp=SCORES_FP, fp="domfp",
                          shard="00000", min_domain_docs=1, overrides={"site00.org": "other"}, model=server.model)


@pytest.mark.parametrize("reply, problem", [
    (EMPTY, f"all {N - 1} reasons are empty or shorter than 3 words"),
    (PARROT, f"all {N - 1} reasons are the same text ('this website provides educational content for students')"),
])
def test_an_always_educational_server_raises_the_alarm(fake_llm, data_dir, reply, problem):
    server = fake_llm(responder=always(reply))
    wh = tiny_warehouse(data_dir)
    rows = label(server, wh)
    assert server.completions() == N - 1  # the override costs no call
    assert dict(rows.group_by("label_source", "label").len().select(
        pl.concat_str("label_source", "label", separator=":"), "len").iter_rows()) == {
        "llm:educational": N - 1, "override:other": 1}

    alarm = dom.labeller_alarm(rows)
    assert alarm.startswith(f"degenerate domain labeller: all {N - 1} domains the LLM labelled are 'educational'; "
                            f"{problem}. A later recall round does not train on these LLM labels")
    assert "overrides file" in alarm and "stronger model" in alarm

    # round 2: with the alarm only the user's override counts; without it the LLM's word would
    edu, other, notes = trusted_labels(rows, alarm=alarm)
    assert (edu, other) == ([], ["site00.org"])
    assert notes["domain_labels"] == "LLM labels ignored: " + alarm.split(". ")[0]
    assert len(trusted_labels(rows, alarm=None)[0]) == N - 1


def test_the_domains_stage_records_the_alarm(fake_llm, data_dir, monkeypatch):
    """`_domains_round` as the flow runs it (shard tasks called directly: no Prefect server)."""
    monkeypatch.setenv("PREFECT_HOME", str(data_dir / "_prefect"))
    from flows import recall as flow
    from flows.settings import DomainSettings
    from tasks.recall_train import round_inputs

    monkeypatch.setattr(flow, "run_shards", lambda task, calls, title, label=None: [task.fn(*c) for c in calls])
    server = fake_llm(responder=always(EMPTY))
    wh = tiny_warehouse(data_dir)
    rid = wh.begin_run("test", {})
    fp, summary = flow._domains_round(wh, rid, 1, SCORES_FP, [DOC_FP], DomainSettings(min_domain_docs=1),
                                      {"site00.org": "other"}, server.settings(**FAST))
    assert summary["alarm"].startswith(f"degenerate domain labeller: all {N - 1} domains the LLM labelled are")
    run = wh.manifest("stage_runs").filter(pl.col("stage") == "domains").row(0, named=True)
    assert run["status"] == "done" and json.loads(run["params"])["alarm"] == summary["alarm"]

    inputs = round_inputs(wh, fp, None)  # what round 2's training reads
    assert inputs["alarm"] == summary["alarm"]
    assert trusted_labels(inputs["labels"], inputs["alarm"])[:2] == ([], ["site00.org"])

    # the CLI says it under the round's line
    from rich.console import Console

    from webinstruct.commands import recall as cli

    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=400))
    cli.print_summary({"final_scores_fingerprint": SCORES_FP, "rounds": [{
        "round": 1, "model_fingerprint": "m1", "trained": True, "n_pos": 1, "n_neg": 1, "threshold": 0.5,
        "docs_kept": 24, "docs_scored": 24, "notes": {}, **summary}]})
    assert f"warning: round 1: {summary['alarm']}" in out.getvalue()


def domain_rows(rnd: int, labels: list[str], reasons: list[str]) -> pl.DataFrame:
    return pl.DataFrame({
        "round": rnd, "domain": [f"site{i:02d}.org" for i in range(len(labels))], "scores_fingerprint": "s",
        "docs_seen": 2, "docs_recalled": 1, "mean_score": 0.7, "sample_titles": [["t"]] * len(labels),
        "sample_urls": [["u"]] * len(labels), "label": labels, "reason": reasons, "label_source": "llm",
        "model": "weak-0.5b", "labelled_at": now_utc()})


def test_the_report_shows_a_warning_for_the_degenerate_round(data_dir):
    from webinstruct.report import build_report

    wh = Warehouse(data_dir)
    wh.write_shard("domains", "domfp1", "00000", domain_rows(1, ["educational"] * N, [""] * N))
    wh.write_shard("domains", "domfp2", "00000", domain_rows(
        2, ["educational", "other"] * (N // 2), [f"exam questions & worked answers, topic {i}" for i in range(N)]))
    html = build_report(wh)
    part = re.search(r'<section id="domains">(.*?)</section>', html, re.S).group(1)
    boxes = re.findall(r'<div class="alarm" role="alert">(.*?)</div>', part, re.S)
    assert len(boxes) == 1 and "round 1 look degenerate" in boxes[0]  # round 2 is healthy: no box
    assert f"all {N} domains the LLM labelled are &#x27;educational&#x27;" in boxes[0]
    assert f"all {N} reasons are empty or shorter than 3 words" in boxes[0]
    assert ".alarm{" in html and "could not build" not in html


def test_the_alarm_is_a_prefect_artifact_of_the_run(prefect_env):
    from prefect import flow
    from prefect.artifacts import Artifact

    from flows.recall import record_alarm

    row = {"params": json.dumps({"round": 1})}

    @flow
    def labelling():
        record_alarm(row, 1, "domfp", "degenerate domain labeller: all 9 domains <b>")

    labelling()
    art = Artifact.get("domains-r1-alarm")
    assert art is not None and art.type == "markdown"
    assert "version `domfp`" in art.data and "all 9 domains <b>" in art.data
    assert json.loads(row["params"]) == {"round": 1, "alarm": "degenerate domain labeller: all 9 domains <b>"}
    record_alarm(row, 2, "domfp", "outside a run: only the row and the log")  # never fails
