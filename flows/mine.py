"""Flow `mine`: recalled documents -> `qa_extracted` -> `qa_refined` (one version per refiner).

One Prefect task per shard (never per document or per request): inside a task the LLM client
sends the shard's requests concurrently. Shards already written under the same fingerprint
are skipped before any task starts, so a rerun with unchanged settings costs nothing and needs
no server; changing the prompt, model or limits makes new versions beside the old ones.
"""
from __future__ import annotations

import logging

import polars as pl
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.runtime import pipeline_run, progress, total
from tasks import extract as ex
from tasks import refine as rf
from tasks.llm_client import LLMClient, LLMSettings
from tasks.page_clean import CleanParams
from warehouse import Warehouse
from warehouse.catalog import write_catalog

log = logging.getLogger("webinstruct.mine")


# The warehouse is the cache (fingerprints + shards), so Prefect's own input cache is off.
@task(name="extract-shard", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def extract_shard_task(data_dir: str, settings: LLMSettings, params: ex.ExtractParams, fp: str, shard: str,
                       documents_fp: str, documents_shard: str, doc_ids: list[str]) -> dict:
    stats = ex.extract_shard(Warehouse(data_dir), settings, params, fp, shard, documents_fp, documents_shard,
                             doc_ids)
    progress("pages", len(doc_ids))
    return stats


@task(name="refine-shard", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def refine_shard_task(data_dir: str, settings: LLMSettings, params: rf.RefineParams, fp: str, extract_fp: str,
                      shard: str, label: str) -> dict:
    stats = rf.refine_shard(Warehouse(data_dir), settings, params, fp, extract_fp, shard)
    progress(label, stats.get("pairs", 0))
    return stats


def _status_counts(wh: Warehouse, table: str, fp: str, shards: list[str]) -> dict[str, int]:
    files = [wh.shard_path(table, fp, s) for s in shards if wh.has_shard(table, fp, s)]
    if not files:
        return {}
    counts = pl.read_parquet(files, columns=["status"])["status"].value_counts()
    return dict(zip(counts["status"].to_list(), counts["count"].to_list()))


@flow(name="mine", task_runner=ThreadPoolTaskRunner(max_workers=2))
def mine_flow(data_dir: str | None = None, run_id: str | None = None, recall_fingerprint: str | None = None,
              limit_docs: int | None = None, extract_llm: LLMSettings = LLMSettings(),
              refine_llms: list[LLMSettings] | None = None, chunk_chars: int = 4000, overlap_chars: int = 300,
              max_chunks: int = 6, min_grounding: float = 0.5, extract_prompt: str = "extract",
              refine_prompt: str = "refine", refine: bool = True) -> dict:
    """Extract Q-A pairs from recalled pages with an LLM, then refine them with one or more LLMs.

    recall_fingerprint: a recall_scores version (or recall model fingerprint); default the newest
    round; with no recall at all, every ingested document. refine_llms: default [extract_llm].
    """
    wh = Warehouse(data_dir)
    refiners = list(refine_llms or [extract_llm]) if refine else []
    inp = ex.select_input(wh, recall_fingerprint, limit_docs)
    if inp.warning:
        log.warning(inp.warning)  # the CLI prints it with the summary
    xparams = ex.ExtractParams(clean=CleanParams(chunk_chars=chunk_chars, overlap_chars=overlap_chars,
                                                 max_chunks=max_chunks),
                               prompt=extract_prompt, min_grounding=min_grounding, limit_docs=limit_docs)
    xfp = xparams.fingerprint(extract_llm, inp.upstream)
    rparams = rf.RefineParams(prompt=refine_prompt)
    rfps: list[str] = []
    for s in refiners:
        fp = rparams.fingerprint(s, xfp)
        if fp in rfps:
            raise ValueError(f"two refiners have the same settings (model {s.model!r}); give each its own "
                             "model or temperature")
        rfps.append(fp)
    shards = sorted(inp.shards)
    x_todo = [s for s in shards if not wh.has_shard("qa_extracted", xfp, s)]
    r_todo = [[s for s in shards if not wh.has_shard("qa_refined", fp, s)] for fp in rfps]

    # Fail fast, before any task starts, with what to start; a rerun with nothing to do needs no server.
    if x_todo:
        LLMClient(extract_llm, wh).check_server()
    for s, todo in zip(refiners, r_todo):
        if todo:
            LLMClient(s, wh).check_server()

    progress("pages", 0, inp.n_docs)
    progress("pages", sum(len(inp.shards[s][2]) for s in shards if s not in x_todo))
    run_params = {"recall_fingerprint": inp.recall_fp, "limit_docs": limit_docs,
                  "extract_model": extract_llm.model, "refine_models": [s.model for s in refiners]}
    summary: dict = {"warning": inp.warning, "recall_fingerprint": inp.recall_fp, "docs": inp.n_docs}
    with pipeline_run(wh, "mine", run_params, run_id) as rid:
        with wh.stage_run(run_id=rid, stage=ex.STAGE, fingerprint=xfp, outputs=["qa_extracted", "llm_calls"],
                          params={"model": extract_llm.model, "base_urls": extract_llm.base_urls,
                                  "recall_fingerprint": inp.recall_fp, "limit_docs": limit_docs, "clean": xparams.clean.as_dict(),
                                  "min_grounding": min_grounding, "prompt": extract_prompt,
                                  "temperature": extract_llm.temperature, "max_tokens": extract_llm.max_tokens},
                          upstream=inp.upstream, code_version=ex.CODE_VERSION) as sr:
            futures = [extract_shard_task.submit(str(wh.root), extract_llm, xparams, xfp, s, *inp.shards[s])
                       for s in x_todo]
            xstats = [f.result() for f in futures]
            counts = _status_counts(wh, "qa_extracted", xfp, shards)
            sr.add(shards_total=len(shards), shards_done=len(x_todo), shards_skipped=len(shards) - len(x_todo),
                   rows_in=inp.n_docs, rows_out=sum(counts.values()))
        summary["extract"] = {
            "fingerprint": xfp, "model": extract_llm.model, "shards": len(shards),
            "shards_skipped": len(shards) - len(x_todo), "chunks": total(xstats, "chunks"),
            "calls": total(xstats, "calls"), "cached": total(xstats, "cached"),
            "pairs": counts.get("ok", 0), "no_pairs": counts.get("no_pairs", 0),
            "failed": counts.get("failed", 0), "rejected": counts.get("rejected", 0),
            "docs_with_pairs": _docs_with_pairs(wh, xfp, shards),
        }
        summary["refine"] = []
        for settings, fp, todo in zip(refiners, rfps, r_todo):
            label = f"refine {settings.model}"[:24]
            progress(label, 0, summary["extract"]["pairs"])
            with wh.stage_run(run_id=rid, stage=rf.STAGE, fingerprint=fp, outputs=["qa_refined", "llm_calls"],
                              params={"model": settings.model, "base_urls": settings.base_urls,
                                      "prompt": refine_prompt, "temperature": settings.temperature,
                                      "max_tokens": settings.max_tokens},
                              upstream=[xfp], code_version=rf.CODE_VERSION) as sr:
                futures = [refine_shard_task.submit(str(wh.root), settings, rparams, fp, xfp, s, label) for s in todo]
                rstats = [f.result() for f in futures]
                counts = _status_counts(wh, "qa_refined", fp, shards)
                sr.add(shards_total=len(shards), shards_done=len(todo), shards_skipped=len(shards) - len(todo),
                       rows_in=summary["extract"]["pairs"], rows_out=sum(counts.values()))
            summary["refine"].append({
                "fingerprint": fp, "model": settings.model, "temperature": settings.temperature,
                "shards_skipped": len(shards) - len(todo), "calls": total(rstats, "calls"),
                "cached": total(rstats, "cached"), "ok": counts.get("ok", 0), "failed": counts.get("failed", 0),
            })
    write_catalog(wh)
    return summary


def _docs_with_pairs(wh: Warehouse, fp: str, shards: list[str]) -> int:
    files = [wh.shard_path("qa_extracted", fp, s) for s in shards if wh.has_shard("qa_extracted", fp, s)]
    if not files:
        return 0
    df = pl.read_parquet(files, columns=["doc_id", "status"])
    return df.filter(pl.col("status") == "ok")["doc_id"].n_unique()
