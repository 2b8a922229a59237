"""Flow `webinstruct`: the whole DAG, ingest -> recall -> extract -> refine -> curate.

Each stage is its own flow (runnable alone from the CLI or the Prefect UI); this one runs their
bodies in order inside its own flow run, under one run id (subflow runs would cost ~1.5 s each). Every stage does only what is missing under its current
settings, so a scheduled run over a growing crawl folder carries only the new files' shards
through the DAG, and a rerun with another prompt or model adds a version beside the old one.
"""
from typing import Optional

from prefect import flow
from pydantic import Field

from flows.curate import curate_flow
from flows.extract import extract_flow
from flows.ingest import ingest_flow
from flows.recall import recall_flow
from flows.refine import refine_flow
from flows.runners import RunnerSettings
from flows.runtime import pipeline_run, publish_table, run_logger, run_stage
from flows.settings import (CrawlSource, CurateSettings, DomainSettings, ExportSettings, ExtractSettings,
                            RecallSettings, RefineSettings)
from tasks.export import funnel
from tasks.llm_client import LLMSettings
from warehouse import Warehouse


@flow(name="webinstruct")
def pipeline_flow(
    source: CrawlSource = Field(CrawlSource(), description="The crawl files to read"),
    data_dir: Optional[str] = Field(None, description="Warehouse directory (default ./webinstruct-data)"),
    llm: LLMSettings = Field(LLMSettings(), description="The LLM server and model (no API key here: see api_key_env)"),
    refiners: Optional[list[LLMSettings]] = Field(None, description=(
        "Refiners, each with its own model and base URL (one qa_refined version each); empty = the llm above")),
    recall: RecallSettings = Field(RecallSettings(), description="fastText recall: threshold, retrain policy, training"),
    domains: DomainSettings = Field(DomainSettings(), description="Which domains the LLM labels"),
    extract: ExtractSettings = Field(ExtractSettings(), description="Extraction prompt, per-run budget, page chunks"),
    refine: RefineSettings = Field(RefineSettings(), description="Refinement prompt and input size"),
    curate: CurateSettings = Field(CurateSettings(), description="Dedup and decontamination"),
    export: ExportSettings = Field(ExportSettings(), description="Where and how the dataset is exported"),
    runner: Optional[RunnerSettings] = Field(None, description=(
        "Where shard tasks run: local threads (empty), or a Dask/Ray cluster (kind, address)")),
) -> dict:
    """Carry new crawl files through every stage: ingest, recall, extract, refine, dedup, decontaminate, export."""
    wh = Warehouse(data_dir)
    root = str(wh.root)
    params = {"paths": source.paths, "model": llm.model, "refiners": [r.model for r in refiners or [llm]],
              "max_docs": extract.max_docs}
    with pipeline_run(wh, "webinstruct", params, None, runner) as run_id:
        summary: dict = {"run_id": run_id}
        summary["ingest"] = run_stage(ingest_flow, source=source, data_dir=root, run_id=run_id)
        summary["recall"] = run_stage(recall_flow, data_dir=root, recall=recall, domains=domains, llm=llm,
                                      run_id=run_id)
        summary["extract"] = run_stage(extract_flow, data_dir=root, llm=llm, extract=extract, run_id=run_id)
        summary["refine"] = run_stage(refine_flow, data_dir=root, refiners=refiners or [llm], refine=refine,
                                      run_id=run_id)
        summary["curate"] = run_stage(curate_flow, data_dir=root, curate=curate, export=export, llm=llm,
                                      run_id=run_id)
    rows = funnel(wh)
    publish_table("funnel", rows.to_dicts(), f"documents -> clean pairs after run {run_id}")
    run_logger().info("funnel: %s", ", ".join(f"{s} {n}" for s, n in rows.iter_rows()))
    return summary
