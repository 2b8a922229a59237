"""Flow `extract`: recalled pages -> `qa_extracted` (the Q-A pairs an LLM finds on each page).

Incremental: the version is decided by the prompt, model, cleaning settings and the recall
version it reads; each run extracts the recalled documents of that version not extracted yet,
highest recall score first, at most `max_docs` (the rest stays pending for the next run).
One Prefect task per output shard (never per document or request): inside a task the LLM client
sends the shard's requests concurrently. A run with nothing pending needs no LLM server.
"""
from typing import Optional

import polars as pl
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from flows.runners import RunnerSettings
from flows.runtime import (last_settings, pipeline_run, progress, remember_settings, run_logger,
                           run_shards, run_stage, stage, total)
from flows.settings import ExtractSettings, RefineSettings
from tasks import extract as ex
from tasks.llm_client import LLMClient, LLMSettings
from warehouse import Warehouse


# The warehouse is the cache (fingerprints + shards), so Prefect's own input cache is off.
@task(name="extract-shard", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def extract_shard_task(data_dir: str, settings: LLMSettings, params: ex.ExtractParams, fp: str, shard: str,
                       documents_fp: str, documents_shard: str, doc_ids: list[str], only: Optional[list[str]],
                       attempt: int) -> dict:
    stats = ex.extract_shard(Warehouse(data_dir), settings, params, fp, shard, documents_fp, documents_shard,
                             doc_ids, only, attempt)
    return {**stats, "pages": len(doc_ids)}


def status_reasons(df: pl.DataFrame) -> dict[str, int]:
    """Rows by status, failures and rejections by their reason (the error text before ':' or '(')."""
    reason = (pl.when(pl.col("status").is_in(["failed", "rejected"]) & pl.col("error").is_not_null())
              .then(pl.col("status") + ": " + pl.col("error").str.extract(r"^([^:(]{1,60})").str.strip_chars())
              .otherwise(pl.col("status")))
    return dict(df.select(reason.alias("r")).group_by("r").len().sort("r").iter_rows())


@flow(name="extract", task_runner=ThreadPoolTaskRunner(max_workers=2))
def extract_flow(
    data_dir: Optional[str] = Field(None, description="Warehouse directory (default ./webinstruct-data)"),
    llm: LLMSettings = Field(LLMSettings(), description="The LLM server and model (no API key here: see api_key_env)"),
    extract: ExtractSettings = Field(ExtractSettings(), description="Extraction prompt, per-run budget, page chunks"),
    downstream: bool = Field(False, description="Then refine and curate, with the settings they last ran with"),
    retry_failed: bool = Field(False, description=(
        "Send again only the chunks whose last attempt failed (server down, broken reply); no new pages")),
    runner: Optional[RunnerSettings] = Field(None, description=(
        "Where shard tasks run: local threads (empty), or a Dask/Ray cluster (kind, address)")),
    run_id: Optional[str] = Field(None, description="Set by the pipeline flow; leave empty"),
) -> dict:
    """Extract question-answer pairs from the recalled pages not extracted yet."""
    wh = Warehouse(data_dir)
    inp = ex.resolve_input(wh, extract.recall_version)
    xparams = ex.params_from_settings(extract)
    xfp = xparams.fingerprint(llm, inp.upstream)
    inp = ex.select_failed(wh, inp, xfp) if retry_failed else ex.select_pending(wh, inp, xfp, extract.max_docs)
    if inp.warning:
        run_logger().warning(inp.warning)
    todo = sorted(inp.shards)
    if todo:  # fail fast, before any task starts, with what to start
        LLMClient(llm, wh).check_server()
    summary: dict = {"warning": inp.warning, "recall_fingerprint": inp.recall_fp, "fingerprint": xfp,
                     "model": llm.model, "docs": inp.n_docs, "pending_after": inp.pending - inp.n_docs,
                     "retry_failed": retry_failed,
                     "retried_chunks": sum(len(v[3]) for v in inp.shards.values() if v[3] is not None)}
    if retry_failed:
        summary["pending_after"] = ex.select_pending(wh, inp, xfp).pending
    run_params = {"extract": extract.model_dump(), "model": llm.model, "retry_failed": retry_failed}
    with pipeline_run(wh, "extract", run_params, run_id, runner) as rid:
        remember_settings(wh, extract=extract, extract_llm=llm)
        progress("pages", 0, inp.n_docs)
        with stage(wh, run_id=rid, name=ex.STAGE, fingerprint=xfp, outputs=["qa_extracted", "llm_calls"],
                   params={"model": llm.model, "base_urls": llm.base_urls, "recall_fingerprint": inp.recall_fp,
                           "clean": xparams.clean.as_dict(), "min_grounding": extract.min_grounding,
                           "prompt": extract.prompt, "temperature": llm.temperature, "max_tokens": llm.max_tokens,
                           "max_docs": extract.max_docs, "retry_failed": retry_failed},
                   upstream=inp.upstream, code_version=ex.CODE_VERSION) as sr:
            res = run_shards(extract_shard_task, [(str(wh.root), llm, xparams, xfp, s, *inp.shards[s]) for s in todo],
                             f"extract: {inp.n_docs} page(s)", lambda r: ("pages", r["pages"]))
            new = (pl.read_parquet([str(wh.shard_path("qa_extracted", xfp, s)) for s in todo], columns=["status", "error"])
                   if todo else pl.DataFrame(schema={"status": pl.String, "error": pl.String}))
            sr.reasons = status_reasons(new)
            n_all = len(wh.shard_ids("qa_extracted", xfp))
            sr.add(shards_total=n_all, shards_done=len(todo), shards_skipped=n_all - len(todo), rows_in=inp.n_docs,
                   rows_out=new.height)
        statuses = new["status"].value_counts()
        by = dict(zip(statuses["status"].to_list(), statuses["count"].to_list()))
        summary.update(shards=len(todo), chunks=total(res, "chunks"), calls=total(res, "calls"),
                       cached=total(res, "cached"), pairs=by.get("ok", 0), no_pairs=by.get("no_pairs", 0),
                       failed=by.get("failed", 0), rejected=by.get("rejected", 0), reasons=sr.reasons)
        if inp.pending > inp.n_docs:
            run_logger().info("%d recalled page(s) stay pending for the next run (max_docs %s)",
                              inp.pending - inp.n_docs, extract.max_docs)
        if downstream:
            from flows.refine import refine_flow

            summary["refine"] = run_stage(
                refine_flow, data_dir=str(wh.root), refiners=last_settings(wh, "refiners", LLMSettings, [llm]),
                refine=last_settings(wh, "refine", RefineSettings), downstream=True, retry_failed=retry_failed,
                run_id=rid)
    return summary
