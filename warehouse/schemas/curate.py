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
        "method": pl.String,  # unique | representative (kept) | exact | minhash (dropped)
        "similarity": pl.Float64,  # estimated Jaccard to the cluster's representative
    },
)

QA_DEDUP_INDEX = TableSpec(
    name="qa_dedup_index",
    doc="Sketches of every kept pair (exact key, LSH band hashes, MinHash signature): later runs dedup against it.",
    key=("refined_id",),
    schema={
        "refined_id": pl.String,
        "exact_key": pl.UInt64,
        "band_hashes": pl.List(pl.UInt64),
        "signature": pl.Binary,  # num_perm little-endian uint32
    },
)

QA_CONTAMINATION = TableSpec(
    name="qa_contamination",
    doc="Pairs (or documents) whose text overlaps an evaluation benchmark item, or restates one in other "
        "words (method embedding / llm_judge); only rows with flagged=true remove a pair.",
    key=("id", "field", "benchmark", "rule"),
    schema={
        "id": pl.String,  # refined_id (level=pair) or doc_id (level=document)
        "level": pl.String,  # pair | document
        "benchmark": pl.String,
        "benchmark_item": pl.String,
        "field": pl.String,
        "matched_ngram": pl.String,
        "rule": pl.String,  # ngram | exact (method ngram), cosine (embedding), judge (llm_judge)
        "hits": pl.Int32,  # n-grams the text shares with that item (1 for rule=exact; null otherwise)
        "method": pl.String,  # ngram | embedding | llm_judge
        "similarity": pl.Float64,  # cosine of the field and the item's sentence vectors (null for ngram)
        "verdict": pl.String,  # llm_judge: "same: <reason>" | "different: <reason>" | "failed: <error>"
        "flagged": pl.Boolean,  # this row makes the pair (or page) contaminated
    },
)

DATASET = TableSpec(
    name="dataset",
    doc="The final instruction pairs: refined (or the extracted pair where the refinement failed "
        "verification), deduplicated and decontaminated, with lineage.",
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
        "prompt_fingerprint": pl.String,
        "crawl": pl.String,
        "refined": pl.Boolean,  # false: the refinement failed verification; this is the extracted pair
        "answer_agreement": pl.Float64,  # share of the pair's refiners with this final answer; null: < 2 checkable
    },
)

SPECS = [QA_DUPLICATES, QA_DEDUP_INDEX, QA_CONTAMINATION, DATASET]
