"""A tiny flow that the UI tests serve as a deployment and run from the Prefect UI's custom-run form.

No `from __future__ import annotations` here: a served deployment validates parameters in a fresh process,
where postponed annotations leave pydantic's FlowModel "not fully defined".
"""
import sys
from typing import Literal

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

FLOW_NAME = "ui-demo"
DEPLOYMENT_NAME = "ui-demo-deployment"


class Refiner(BaseModel):
    model: str = Field("smollm2-135m", description="Model that rewrites the extracted answers")
    strictness: Literal["lenient", "strict"] = Field("lenient", description="How hard the refiner rejects pairs")
    max_tokens: int = Field(256, description="Upper bound on generated tokens per answer")


DEFAULT_REFINER = Refiner()
# A list of models: both UIs render it as a form list with one entry per item (paths like reviewers.1.model).
DEFAULT_REVIEWERS = [Refiner(model="reviewer-a"), Refiner(model="reviewer-b", strictness="strict")]


@flow(name=FLOW_NAME, log_prints=False)
def ui_demo(refiner: Refiner = DEFAULT_REFINER, split: Literal["train", "test"] = "train", limit: int = 3,
            reviewers: list[Refiner] = DEFAULT_REVIEWERS) -> dict:
    logger = get_run_logger()
    # The UI test looks for this line in the server's logs.
    logger.info("ui-demo refiner=%s strictness=%s split=%s limit=%d",
                refiner.model, refiner.strictness, split, limit)
    return {"model": refiner.model, "strictness": refiner.strictness, "split": split, "limit": limit,
            "reviewers": [r.model for r in reviewers]}


if __name__ == "__main__":
    ui_demo.serve(name=sys.argv[1] if len(sys.argv) > 1 else DEPLOYMENT_NAME)
