"""`webinstruct eval`: recall (and extraction) measured on labelled real pages, into `quality_evals`."""
from __future__ import annotations

import json

import polars as pl

from tests.test_cli import run_cli
from warehouse.catalog import query


def test_eval_prints_the_metrics_and_appends_quality_evals(recall_r1, copy_warehouse, tmp_path):
    src, row, _ = recall_r1
    wh = copy_warehouse(src)
    out = run_cli(wh.root, "eval").stdout
    assert "roc_auc" in out and row["fingerprint"] in out  # ids are printed whole, never wrapped
    evals = query(wh, "SELECT * FROM quality_evals")
    assert evals.height == 1
    e = evals.row(0, named=True)
    assert e["stage"] == "recall" and e["version"] == row["fingerprint"] and e["round"] == 1
    assert e["eval_set"] == row["eval_set"] and e["roc_auc"] == row["eval_roc_auc"]  # same model, same pages
    assert e["pages"] >= 150 and e["threshold"] == row["threshold"] and e["kept"] > 0
    kinds = json.loads(e["details"])["kept_by_kind"]
    assert any(k.endswith("(edu_qa)") for k in kinds) and any(k.startswith("news") for k in kinds)
    run_cli(wh.root, "eval")
    assert query(wh, "SELECT count(*) n FROM quality_evals")["n"][0] == 2  # appended, never replaced

    mine = tmp_path / "mine.jsonl"
    from tasks.labelled_pages import load_labelled

    pages, _ = load_labelled()
    rows = pages.group_by("label").head(3).select("url", "label")
    mine.write_text("".join(json.dumps({"url": u, "label": int(y)}) + "\n" for u, y in rows.iter_rows()))
    warc = str(tmp_path.parent / "none.warc.gz")
    bad = run_cli(wh.root, "eval", "--labels", str(mine), "--warc", warc, check=False)
    assert bad.returncode == 2 and "not found" in bad.stderr and "Traceback" not in bad.stderr
    from tasks.labelled_pages import SHIPPED_DIR

    ok = run_cli(wh.root, "eval", "--labels", str(mine), "--warc", str(SHIPPED_DIR / "pages.warc.gz")).stdout
    assert "mine.jsonl:" in ok and query(wh, "SELECT count(*) n FROM quality_evals WHERE pages = 6")["n"][0] == 1


def test_eval_without_a_recall_model_says_what_to_run(tmp_path):
    proc = run_cli(tmp_path / "empty", "eval", check=False)
    assert proc.returncode == 2 and "run `webinstruct recall`" in proc.stderr and "Traceback" not in proc.stderr


def test_extraction_yield_on_labelled_pages_with_the_real_server(recall_r1, copy_warehouse, llm_server):
    from flows.settings import ExtractSettings
    from tasks.quality_eval import run_eval

    wh = copy_warehouse(recall_r1[0])
    llm = llm_server.model_copy(update={"max_tokens": 96, "repair_retry": False})
    settings = ExtractSettings(chunk_chars=600, max_chunks=1)
    first = run_eval(wh, extract=(llm, settings), max_pages=1)
    ext = first.filter(pl.col("stage") == "extract").row(0, named=True)
    assert ext["pages"] == ext["positives"] == 1 and 0 <= ext["pages_with_pairs"] <= 1
    details = json.loads(ext["details"])
    assert details["model"] == llm.model and sum(details["rows_by_status"].values()) >= 1
    calls = wh.scan("llm_calls").filter(pl.col("stage") == "quality_eval").collect()
    assert calls.height >= 1 and calls["cached"].sum() == 0
    answered = calls.filter(pl.col("status") == "ok").height
    again = run_eval(wh, extract=(llm, settings), max_pages=1).filter(pl.col("stage") == "extract")
    assert again["pairs"][0] == ext["pairs"]  # the LLM journal answers a rerun: same result
    calls = wh.scan("llm_calls").filter(pl.col("stage") == "quality_eval").collect()
    assert calls.filter(pl.col("cached")).height == answered  # answered requests are not paid twice
