"""Flow `refine`: extracted pairs -> `qa_refined`, one version per refiner (model, base URL, sampling).

Each refiner reads the same `qa_extracted` version; its output shards mirror the extraction
shards, so only extraction shards not refined yet by that refiner are work. Running this flow
with another model (or prompt) writes a new version beside the old one; `downstream` then
curates it into its own dedup, decontamination and dataset versions.
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
from flows.settings import CurateSettings, ExportSettings, RefineSettings
from tasks import refine as rf
from tasks.llm_client import LLMClient, LLMSettings
from warehouse import Warehouse


@task(name="refine-shard", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def refine_shard_task(data_dir: str, settings: LLMSettings, params: rf.RefineParams, fp: str, extract_fp: str,
                      shard: str, retry: Optional[tuple[str, list[str], int]] = None) -> dict:
    return rf.refine_shard(Warehouse(data_dir), settings, params, fp, extract_fp, shard, retry=retry)


def resolve_extract(wh: Warehouse, version: Optional[str]) -> Optional[str]:
    if version:
        if version not in wh.versions("qa_extracted"):
            raise ValueError(f"no qa_extracted version {version!r}; known: {wh.versions('qa_extracted')}")
        return version
    current = wh.current_fingerprints("qa_extracted")
    return current[-1] if current else None


@flow(name="refine", task_runner=ThreadPoolTaskRunner(max_workers=2))
def refine_flow(
    data_dir: Optional[str] = Field(None, description="Warehouse directory (default ./webinstruct-data)"),
    refiners: list[LLMSettings] = Field([LLMSettings()], min_length=1, description=(
        "One entry per refiner (paper: two models for diversity); each has its own model and base URL "
        "and gives its own qa_refined version")),
    refine: RefineSettings = Field(RefineSettings(), description="Refinement prompt and input size"),
    downstream: bool = Field(False, description="Then curate (dedup, decontaminate, dataset, export) with the settings it last ran with"),
    retry_failed: bool = Field(False, description=(
        "Also send again the pairs whose last refinement failed (server down, broken reply)")),
    runner: Optional[RunnerSettings] = Field(None, description=(
        "Where shard tasks run: local threads (empty), or a Dask/Ray cluster (kind, address)")),
    run_id: Optional[str] = Field(None, description="Set by the pipeline flow; leave empty"),
) -> dict:
    """Refine extracted pairs with one or more LLMs: formatting, missing steps, self-contained questions."""
    wh = Warehouse(data_dir)
    xfp = resolve_extract(wh, refine.extract_version)
    if xfp is None:
        run_logger().warning("nothing to refine in %s: no page has been extracted yet", wh.root)
        return {"extract_fingerprint": None, "refine": []}
    rparams = rf.RefineParams(prompt=refine.prompt, max_input_chars=refine.max_input_chars)
    shards = wh.shard_ids("qa_extracted", xfp)
    plans = []
    for s in refiners:
        fp = rparams.fingerprint(s, xfp)
        if fp in [p[1] for p in plans]:
            raise ValueError(f"two refiners have the same settings (model {s.model!r}); give each its own "
                             "model or temperature")
        done = set(wh.shard_ids("qa_refined", fp))
        retries = rf.failed_refinements(wh, fp) if retry_failed else {}
        plans.append((s, fp, [x for x in shards if x not in done] + sorted(retries), retries))
    for s, _, todo, _ in plans:  # fail fast, before any task; nothing to do needs no server
        if todo:
            LLMClient(s, wh).check_server()
    summary: dict = {"extract_fingerprint": xfp, "refine": []}
    run_params = {"refine": refine.model_dump(), "models": [s.model for s in refiners], "retry_failed": retry_failed}
    with pipeline_run(wh, "refine", run_params, run_id, runner) as rid:
        remember_settings(wh, refine=refine, refiners=refiners)
        for settings, fp, todo, retries in plans:
            label = f"refine {settings.model}"[:24]
            fresh = [x for x in todo if x not in retries]
            n_pairs = sum(len(v[1]) for v in retries.values()) + (
                pl.read_parquet([str(wh.shard_path("qa_extracted", xfp, x)) for x in fresh], columns=["status"])
                .filter(pl.col("status") == "ok").height if fresh else 0)
            progress(label, 0, n_pairs)
            with stage(wh, run_id=rid, name=rf.STAGE, fingerprint=fp, outputs=["qa_refined", "llm_calls"],
                       params={"model": settings.model, "base_urls": settings.base_urls, "prompt": refine.prompt,
                               "temperature": settings.temperature, "max_tokens": settings.max_tokens,
                               "retry_failed": retry_failed},
                       upstream=[xfp], code_version=rf.CODE_VERSION) as sr:
                res = run_shards(refine_shard_task, [(str(wh.root), settings, rparams, fp, xfp, x, retries.get(x))
                                                     for x in todo],
                                 f"refine with {settings.model}", lambda r: (label, r.get("pairs", 0)))
                sr.add(shards_total=len(shards), shards_done=len(todo), shards_skipped=len(shards) - len(todo),
                       rows_in=n_pairs, rows_out=total(res, "pairs"))
                if res:
                    sr.reasons = {k: total(res, k) for k in ("ok", "unrefined", "failed")}
            summary["refine"].append({
                "fingerprint": fp, "model": settings.model, "temperature": settings.temperature,
                "shards_done": len(todo), "calls": total(res, "calls"), "cached": total(res, "cached"),
                "ok": total(res, "ok"), "unrefined": total(res, "unrefined"), "failed": total(res, "failed")})
        if downstream:
            from flows.curate import curate_flow

            summary["curate"] = run_stage(curate_flow, data_dir=str(wh.root), run_id=rid,
                                          curate=last_settings(wh, "curate", CurateSettings),
                                          export=last_settings(wh, "export", ExportSettings))
    return summary
