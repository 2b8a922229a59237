"""`webinstruct eval`: measure the warehouse's stage versions on a labelled page set.

Recall: every current `recall_models` version scores the labelled pages (the same reader, HTML
to text and normalization as the crawl), giving ROC-AUC, PR-AUC and P/R/F1 at the version's
threshold, with the share kept per page kind (programming Q&A, math articles, ...): a recall that
keeps the hard negatives shows it there. Extraction (when asked): the extraction settings the
warehouse last ran with, on the positive pages, through the LLM client (its journal makes a
rerun free): pages with at least one grounded pair and pairs per page.
Rows go to `quality_evals` (append-only) so versions can be compared over time in SQL.
"""
from __future__ import annotations

import json

import numpy as np
import polars as pl

from tasks.labelled_pages import load_labelled
from tasks.recall_eval import page_metrics
from tasks.recall_train import load_model, model_file, page_scores
from warehouse import Warehouse, content_hash, fingerprint, new_id, now_utc

STAGE = "quality_eval"


def recall_models(wh: Warehouse, version: str | None = None) -> pl.DataFrame:
    """The recall_models rows to measure: one version, or the current ones (both rounds)."""
    fps = [version] if version else wh.current_fingerprints("recall_models")
    rows = [wh.read_shard("recall_models", fp, "model").with_columns(fingerprint=pl.lit(fp))
            for fp in fps if wh.has_shard("recall_models", fp, "model")]
    if not rows:
        raise ValueError(f"no recall model {version}" if version else
                         f"no recall model in {wh.root}: run `webinstruct recall` (or `make demo`) first")
    return pl.concat(rows, how="diagonal_relaxed").sort("round")


def _by_kind(pages: pl.DataFrame, kept: np.ndarray) -> dict:
    df = pages.select("kind", "label").with_columns(kept=pl.Series(kept))
    agg = df.group_by(pl.col("kind").fill_null("-"), "label").agg(pages=pl.len(), kept=pl.col("kept").sum())
    return {f"{k} ({'edu_qa' if y else 'other'})": f"{c}/{n}" for k, y, n, c in agg.sort("label", "kind").iter_rows()}


def recall_rows(wh: Warehouse, pages: pl.DataFrame, set_id: str, version: str | None = None) -> list[dict]:
    """One quality_evals row per recall model version."""
    out = []
    y = pages["label"].to_numpy()
    for m in recall_models(wh, version).iter_rows(named=True):
        settings = json.loads(m["params"])
        s = page_scores(load_model(model_file(wh, m["model_path"])), pages, settings.get("languages"),
                        int(settings["max_chars"]))
        metrics = page_metrics(y, s, float(m["threshold"]))
        out.append(dict(stage="recall", version=m["fingerprint"], round=m["round"], **metrics,
                        details=json.dumps({"kept_by_kind": _by_kind(pages, s >= m["threshold"]),
                                            "threshold_source": m["threshold_source"]})))
    return out


def extract_row(wh: Warehouse, pages: pl.DataFrame, set_id: str, llm, extract_settings, max_pages: int) -> dict:
    """Extraction yield on (at most `max_pages` of) the positive pages, with the given settings."""
    from tasks import extract as ex
    from tasks.llm_client import LLMClient

    s = extract_settings
    params = ex.params_from_settings(s)
    pos = (pages.filter(pl.col("label") == 1).sort("url").head(max_pages)
           .with_columns(doc_id=pl.col("url").map_elements(content_hash, return_dtype=pl.String)))
    fp = fingerprint(STAGE, params={"eval_set": set_id, "extract": params.fingerprint(llm, [])},
                     code_version="1", model=llm.model)
    client = LLMClient(llm, wh)
    client.check_server()
    rows, results = ex.extract_pages(client, llm, params, pos.select("doc_id", "url", "title", "text"),
                                     fp=fp, shard="eval", stage=STAGE)
    ok = rows.filter(pl.col("status") == "ok")
    with_pairs = ok["doc_id"].n_unique()
    statuses = dict(rows["status"].value_counts().iter_rows())
    return dict(stage="extract", version=params.fingerprint(llm, []), round=None, pages=pos.height,
                positives=pos.height, pages_with_pairs=with_pairs, pairs=ok.height,
                pairs_per_page=ok.height / max(1, pos.height), failed_chunks=statuses.get("failed", 0),
                details=json.dumps({"model": llm.model, "prompt": s.prompt, "rows_by_status": statuses,
                                    "json_valid": round(sum(r.ok for r in results) / max(1, len(results)), 4),
                                    "chunk_chars": s.chunk_chars, "max_chunks": s.max_chunks}))


def record(wh: Warehouse, rows: list[dict], set_id: str) -> pl.DataFrame:
    """Append the rows to quality_evals (one file per row, written atomically) and return them."""
    at = now_utc()
    spec = wh.spec("quality_evals")
    full = []
    for r in rows:
        row = {c: None for c in spec.schema} | r | {"eval_id": new_id("eval-"), "evaluated_at": at, "eval_set": set_id}
        row = {c: row[c] for c in spec.schema}
        wh.write_manifest_row("quality_evals", row["eval_id"], row)
        full.append(row)
    return pl.DataFrame(full, schema=spec.schema)


def run_eval(wh: Warehouse, *, labels: str | None = None, warcs: list[str] | None = None,
             version: str | None = None, extract: tuple | None = None, max_pages: int = 12) -> pl.DataFrame:
    """Measure and record; `extract` = (llm settings, extract settings) to measure extraction too."""
    pages, set_id = load_labelled(labels, warcs)
    rows = recall_rows(wh, pages, set_id, version)
    if extract is not None:
        rows.append(extract_row(wh, pages, set_id, *extract, max_pages=max_pages))
    return record(wh, rows, set_id)
