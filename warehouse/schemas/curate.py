"""Curation tables: duplicate clusters, benchmark contamination, the exported dataset."""
import polars as pl

from warehouse.schemas.base import TableSpec

QA_DUPLICATES = TableSpec(
    name="qa_duplicates",
    doc="Duplicate clusters over refined pairs; one representative per cluster is kept.",
    key=("refined_id",),
    schema={
        "refined_id": pl.String,
        "cluster_id": pl.String,
        "kept": pl.Boolean,
        "method": pl.String,  # exact | minhash | unique
        "similarity": pl.Float64,
    },
)

QA_CONTAMINATION = TableSpec(
    name="qa_contamination",
    doc="Pairs (or documents) whose text overlaps an evaluation benchmark item.",
    key=("id", "benchmark", "benchmark_item"),
    schema={
        "id": pl.String,
        "level": pl.String,  # pair | document
        "benchmark": pl.String,
        "benchmark_item": pl.String,
        "field": pl.String,
        "matched_ngram": pl.String,
        "rule": pl.String,  # ngram | exact
    },
)

DATASET = TableSpec(
    name="dataset",
    doc="The final instruction pairs: refined, deduplicated and decontaminated, with lineage.",
    key=("refined_id",),
    schema={
        "refined_id": pl.String,
        "question": pl.String,
        "answer": pl.String,
        "qa_id": pl.String,
        "doc_id": pl.String,
        "url": pl.String,
        "domain": pl.String,
        "refiner_model": pl.String,
    },
)

SPECS = [QA_DUPLICATES, QA_CONTAMINATION, DATASET]
