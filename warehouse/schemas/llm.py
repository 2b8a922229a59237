"""LLM stage tables: call log, extracted pairs, refined pairs."""
import polars as pl

from warehouse.schemas.base import TableSpec

TS = pl.Datetime("us", "UTC")

LLM_CALLS = TableSpec(
    name="llm_calls",
    doc="One row per LLM request made (or served from cache) by an LLM stage.",
    key=("call_id",),
    schema={
        "call_id": pl.String,
        "stage": pl.String,
        "fingerprint": pl.String,
        "request_key": pl.String,
        "item_id": pl.String,
        "model": pl.String,
        "base_url": pl.String,
        "prompt_tokens": pl.Int64,
        "completion_tokens": pl.Int64,
        "latency_s": pl.Float64,
        "attempts": pl.Int32,
        "cached": pl.Boolean,
        "status": pl.String,  # ok | http_error | timeout | parse_error | ...
        "error": pl.String,
        "created_at": TS,
    },
)

QA_EXTRACTED = TableSpec(
    name="qa_extracted",
    doc="Question-answer pairs an LLM extracted from recalled pages (status says why a chunk gave none).",
    key=("qa_id",),
    schema={
        "qa_id": pl.String,
        "doc_id": pl.String,
        "chunk": pl.Int32,
        "question": pl.String,
        "answer": pl.String,
        "model": pl.String,
        "prompt_fingerprint": pl.String,
        "status": pl.String,  # ok | no_pairs | failed
        "error": pl.String,
    },
)

QA_REFINED = TableSpec(
    name="qa_refined",
    doc="Refined pairs, one version per refiner model, with lineage to the extracted pair and page.",
    key=("refined_id",),
    schema={
        "refined_id": pl.String,
        "qa_id": pl.String,
        "doc_id": pl.String,
        "question": pl.String,
        "answer": pl.String,
        "model": pl.String,
        "prompt_fingerprint": pl.String,
        "status": pl.String,  # ok | failed
        "error": pl.String,
    },
)

SPECS = [LLM_CALLS, QA_EXTRACTED, QA_REFINED]
