"""Recall tables: fastText models and their metrics, training examples, per-document scores,
labelled domains. One flow run writes both recall rounds; every table has a `round` column so
the two versions sit side by side in the current views."""
import polars as pl

from warehouse.schemas.base import TableSpec

TS = pl.Datetime("us", "UTC")

RECALL_MODELS = TableSpec(
    name="recall_models",
    doc="One row per recall model version (round, training settings, threshold) with held-out metrics.",
    key=("fingerprint",),
    schema={
        "round": pl.Int32,
        "line_key": pl.String,  # settings + seeds + upstream versions: models of one line replace each other
        "train_key": pl.String,  # one training of the line (the documents it saw); names the model file
        "model_path": pl.String,
        "n_pos": pl.Int64,
        "n_neg": pl.Int64,
        "n_test": pl.Int64,
        "precision": pl.Float64,  # held-out, at `threshold`
        "recall": pl.Float64,
        "f1": pl.Float64,
        "threshold": pl.Float64,
        "threshold_source": pl.String,  # fixed | labelled_best_f1 | heldout_best_f1
        # The same model on the labelled real pages (data/eval; never trained on): does it find them?
        "eval_set": pl.String,  # name:content hash of the labelled set
        "eval_pages": pl.Int64,
        "eval_positives": pl.Int64,
        "eval_roc_auc": pl.Float64,
        "eval_pr_auc": pl.Float64,  # average precision
        "eval_precision": pl.Float64,  # at `threshold`
        "eval_recall": pl.Float64,
        "eval_f1": pl.Float64,
        "eval_f1_cv": pl.Float64,  # threshold picked on one half of the set, F1 on the other
        "params": pl.String,  # JSON: training settings, sample sizes, seed files
        "pr_curve": pl.String,  # JSON list of [threshold, precision, recall] on the held-out split
        "train_seconds": pl.Float64,
        "trained_at": TS,
    },
    columns_doc={"fingerprint": "recall_scores.model_fingerprint points here"},
)

RECALL_EXAMPLES = TableSpec(
    name="recall_examples",
    doc="The labelled examples each recall model was trained and evaluated on (seeds and documents).",
    key=("model_fingerprint", "item_id"),
    schema={
        "model_fingerprint": pl.String,
        "round": pl.Int32,
        "item_id": pl.String,  # doc_id, or seed:<file>:<line> for a seed
        # seed | random_doc | educational_domain | other_domain | recalled_page | likely_positive
        "origin": pl.String,
        "domain": pl.String,
        "label": pl.Int8,  # 1 positive, 0 negative, null: left out (a likely positive among negatives)
        "split": pl.String,  # train | test | dropped
        "score": pl.Float32,  # held-out score (test split only)
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
    doc="Registered domains of scored documents with counts and the LLM's educational label.",
    key=("round", "domain", "labelled_at"),
    schema={
        "round": pl.Int32,
        "domain": pl.String,
        "scores_fingerprint": pl.String,
        "docs_seen": pl.Int64,
        "docs_recalled": pl.Int64,
        "mean_score": pl.Float64,
        "sample_titles": pl.List(pl.String),
        "sample_urls": pl.List(pl.String),
        "label": pl.String,  # educational | other | unlabelled | failed
        "reason": pl.String,
        "label_source": pl.String,  # llm | override | below_min_docs | over_budget | failed
        "model": pl.String,
        "labelled_at": TS,  # rows accumulate run by run; a domain's newest row is its label
    },
)

SPECS = [RECALL_MODELS, RECALL_EXAMPLES, RECALL_SCORES, DOMAINS]
