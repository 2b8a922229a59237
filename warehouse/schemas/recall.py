"""Recall tables: fastText models and their metrics, per-document scores, labelled domains."""
import polars as pl

from warehouse.schemas.base import TableSpec

TS = pl.Datetime("us", "UTC")

RECALL_MODELS = TableSpec(
    name="recall_models",
    doc="One row per trained fastText recall model, with held-out metrics and the threshold used.",
    key=("fingerprint",),
    schema={
        "fingerprint": pl.String,
        "round": pl.Int32,
        "model_path": pl.String,
        "n_pos": pl.Int64,
        "n_neg": pl.Int64,
        "precision": pl.Float64,
        "recall": pl.Float64,
        "f1": pl.Float64,
        "threshold": pl.Float64,
        "params": pl.String,
        "pr_curve": pl.String,
        "trained_at": TS,
    },
)

RECALL_SCORES = TableSpec(
    name="recall_scores",
    doc="Every ingested document's recall score under one model; kept = score >= threshold.",
    key=("model_fingerprint", "doc_id"),
    schema={
        "model_fingerprint": pl.String,
        "round": pl.Int32,
        "doc_id": pl.String,
        "score": pl.Float32,
        "kept": pl.Boolean,
    },
)

DOMAINS = TableSpec(
    name="domains",
    doc="Registered domains of recalled documents with counts and the LLM's educational label.",
    key=("round", "domain"),
    schema={
        "round": pl.Int32,
        "domain": pl.String,
        "docs_seen": pl.Int64,
        "docs_recalled": pl.Int64,
        "mean_score": pl.Float64,
        "sample_titles": pl.List(pl.String),
        "sample_urls": pl.List(pl.String),
        "label": pl.String,  # educational | other | unlabelled | failed
        "reason": pl.String,
        "label_source": pl.String,  # llm | override | below_min_docs | failed
        "model": pl.String,
    },
)

SPECS = [RECALL_MODELS, RECALL_SCORES, DOMAINS]
