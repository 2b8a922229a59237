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
        "shard": pl.String,  # the stage's shard id (a rerun of a finished shard gets "<shard>.r<n>")
        "request_key": pl.String,  # hash of (model, messages, sampling params, response schema) = cache key
        "item_id": pl.String,
        "model": pl.String,
        "base_url": pl.String,
        "prompt_tokens": pl.Int64,
        "completion_tokens": pl.Int64,
        "latency_s": pl.Float64,
        "attempts": pl.Int32,  # HTTP requests sent, retries and the repair request included
        "cached": pl.Boolean,
        "repaired": pl.Boolean,  # the first reply did not validate; a repair request fixed it
        "status": pl.String,  # ok | parse_error | http_error | timeout | connection_error | bad_response
        "finish_reason": pl.String,
        "error": pl.String,
        "raw": pl.String,  # the completion text, kept only when status != ok
        "created_at": TS,
    },
)

QA_EXTRACTED = TableSpec(
    name="qa_extracted",
    doc="Question-answer pairs an LLM extracted from recalled pages; every chunk sent (or not) leaves a row, "
        "its status says why a chunk gave no pair.",
    key=("qa_id",),
    schema={
        "qa_id": pl.String,
        "doc_id": pl.String,
        "chunk": pl.Int32,
        "question": pl.String,
        "answer": pl.String,
        "model": pl.String,
        "prompt_fingerprint": pl.String,
        "grounding": pl.Float32,  # share of the question's words found in the chunk (1.0 = copied)
        "status": pl.String,  # ok | no_pairs | failed | rejected (not on the page, or a duplicate)
        "error": pl.String,
        # 1, or n for the (n-1)-th `--retry-failed` of a failed chunk: the newest attempt of a chunk
        # supersedes a failed one in the `qa_extracted` view (qa_extracted_all keeps every attempt)
        "attempt": pl.Int16,
    },
    defaults={"attempt": 1},
    attempt_key=("doc_id", "chunk"),
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
        # ok (refined and verified against the extracted pair) | unrefined (the refinement failed
        # verification: question/answer are the extracted pair, error says why) | failed (the call
        # failed or the reply was empty or invalid; question/answer are null)
        "status": pl.String,
        "error": pl.String,
        "attempt": pl.Int16,  # as in qa_extracted: a `--retry-failed` of a failed refinement is attempt 2...
    },
    defaults={"attempt": 1},
    attempt_key=("refined_id",),
)

SPECS = [LLM_CALLS, QA_EXTRACTED, QA_REFINED]
