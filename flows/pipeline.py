"""Flow `webinstruct`: the whole DAG, ingest -> recall -> mine (extract, refine) -> curate.

Each stage is its own flow (runnable alone from the CLI or the Prefect UI); this one calls them
in order as subflows under one run id, passing versions (fingerprints) along. Every stage skips
work whose fingerprint already exists, so a scheduled rerun over a growing crawl folder only
does the new files' work, and a rerun with another prompt or model adds a version beside the old.
"""
from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact

from flows.curate import curate_flow
from flows.ingest import ingest_flow
from flows.mine import mine_flow
from flows.recall import recall_flow
from flows.runtime import pipeline_run
from tasks.export import funnel
from tasks.llm_client import LLMSettings
from warehouse import Warehouse


@flow(name="webinstruct")
def pipeline_flow(
    paths: list[str],
    data_dir: str | None = None,
    seeds: list[str] | None = None,
    llm: LLMSettings = LLMSettings(),
    refine_models: list[str] | None = None,
    limit_docs: int | None = None,
    min_domain_docs: int | None = None,
    max_llm_domains: int | None = None,
    chunk_chars: int = 4000,
    max_chunks: int = 6,
    export_dir: str | None = None,
    export_format: str = "parquet",
) -> dict:
    """Run every stage over `paths` (WARC/WET files, folders, globs, fsspec URLs)."""
    wh = Warehouse(data_dir)
    data_dir = str(wh.root)
    refiners = [llm.model_copy(update={"model": m}) for m in refine_models] if refine_models else [llm]
    params = {"paths": paths, "limit_docs": limit_docs, "models": [llm.model, *[r.model for r in refiners]]}
    with pipeline_run(wh, "webinstruct", params, None) as run_id:
        summary = {"run_id": run_id}
        summary["ingest"] = ingest_flow(paths=paths, data_dir=data_dir, run_id=run_id)
        recall_kwargs = {"min_domain_docs": min_domain_docs} if min_domain_docs is not None else {}
        summary["recall"] = recall_flow(data_dir=data_dir, run_id=run_id, seeds=seeds, llm=llm,
                                        max_llm_domains=max_llm_domains, **recall_kwargs)
        summary["mine"] = mine_flow(data_dir=data_dir, run_id=run_id, limit_docs=limit_docs,
                                    extract_llm=llm, refine_llms=refiners, chunk_chars=chunk_chars,
                                    max_chunks=max_chunks)
        summary["curate"] = curate_flow(data_dir=data_dir, run_id=run_id, export_dir=export_dir,
                                        export_format=export_format)
    # The funnel shows on the flow run's page in the Prefect UI.
    create_table_artifact(key="funnel", table=funnel(wh).to_dicts(),
                          description=f"documents -> clean pairs, run {run_id}")
    return summary
