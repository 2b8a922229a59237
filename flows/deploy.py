"""Prefect deployments of one warehouse: one per stage flow and one for the whole pipeline.

Entrypoints are module paths (`flows.refine.refine_flow`), so a run loads the installed project
whatever directory the server or the serving process was started in. Every deployment runs one
run at a time, the serving process runs one run at a time over all of them (one writer per
warehouse), and the flows also hold the warehouse's file lock. Parameters carry no secret:
API keys come from the environment or a Prefect Secret block (see LLMSettings).
"""
from pathlib import Path
from typing import Optional

from flows.settings import CrawlSource, ExportSettings
from tasks.llm_client import LLMSettings


def deployment_name(root: Path) -> str:
    """Deployments are named after their warehouse folder: `refine/webinstruct-data`."""
    return root.name or "warehouse"


def build_deployments(root: Path, *, llm: LLMSettings, watch: Optional[list[str]] = None, cron: Optional[str] = None,
                      listing_base: Optional[str] = None, export_dir: Optional[str] = None,
                      name: Optional[str] = None) -> list:
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.types.entrypoint import EntrypointType

    from flows.curate import curate_flow
    from flows.extract import extract_flow
    from flows.ingest import ingest_flow
    from flows.pipeline import pipeline_flow
    from flows.recall import recall_flow
    from flows.refine import refine_flow

    name = name or deployment_name(root)
    data_dir = str(root)
    llm_params = llm.model_dump(mode="json")
    source = CrawlSource(paths=watch or [], **({"listing_base": listing_base} if listing_base else {}))
    export = ExportSettings(dir=export_dir or str(root / "export")).model_dump(mode="json")
    common = dict(
        name=name, entrypoint_type=EntrypointType.MODULE_PATH, tags=["webinstruct", f"warehouse:{name}"],
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE))
    pipeline = pipeline_flow.to_deployment(
        parameters={"data_dir": data_dir, "source": source.model_dump(mode="json"), "llm": llm_params,
                    "export": export},
        cron=cron, description=f"Every stage over the new files of {', '.join(watch or []) or '(set source.paths)'} "
                               f"into {data_dir}", **common)
    stages = [
        ingest_flow.to_deployment(parameters={"data_dir": data_dir, "source": source.model_dump(mode="json")},
                                  description="Ingest new crawl files", **common),
        recall_flow.to_deployment(parameters={"data_dir": data_dir, "llm": llm_params, "downstream": True},
                                  description="Recall (then extract, refine, curate what is new)", **common),
        extract_flow.to_deployment(parameters={"data_dir": data_dir, "llm": llm_params, "downstream": True},
                                   description="Extract pairs from pending pages (then refine, curate)", **common),
        refine_flow.to_deployment(parameters={"data_dir": data_dir, "refiners": [llm_params], "downstream": True},
                                  description="Refine extracted pairs with one or more models (then curate)",
                                  **common),
        curate_flow.to_deployment(parameters={"data_dir": data_dir, "export": export},
                                  description="Dedup, decontaminate, build and export the dataset", **common),
    ]
    return [pipeline, *stages]


def serve_deployments(deployments: list) -> None:
    """Register the deployments and run what the schedule or the UI asks for (blocks)."""
    from prefect import serve

    serve(*deployments, limit=1)
