"""Quality evaluations: a stage's output measured on labelled real pages (`webinstruct eval`).

Append-only, one row per (evaluation run, stage version): comparing two recall models or two
extraction prompts on the same labelled set is a GROUP BY over `version`."""
import polars as pl

from warehouse.schemas.base import TableSpec

TS = pl.Datetime("us", "UTC")

QUALITY_EVALS = TableSpec(
    name="quality_evals",
    doc="Each stage version measured on a labelled page set: recall metrics, extraction yield.",
    manifest=True,
    key=("eval_id",),
    schema={
        "eval_id": pl.String,
        "evaluated_at": TS,
        "eval_set": pl.String,  # name:content hash of the labels file and its WARC files
        "stage": pl.String,  # recall | extract
        "version": pl.String,  # the recall_models fingerprint / the extraction fingerprint measured
        "round": pl.Int32,  # recall round (null for extraction)
        "pages": pl.Int64,  # labelled pages measured
        "positives": pl.Int64,  # of them labelled educational Q&A
        # recall: threshold-free ranking quality, then the decision at the version's threshold
        "roc_auc": pl.Float64,
        "pr_auc": pl.Float64,
        "threshold": pl.Float64,
        "kept": pl.Int64,
        "precision": pl.Float64,
        "recall": pl.Float64,
        "f1": pl.Float64,
        "f1_cv": pl.Float64,  # threshold chosen on one half of the set, F1 measured on the other
        "best_f1_threshold": pl.Float64,
        # extraction (on the positives): how many pages give at least one grounded pair
        "pages_with_pairs": pl.Int64,
        "pairs": pl.Int64,
        "pairs_per_page": pl.Float64,
        "failed_chunks": pl.Int64,
        "details": pl.String,  # JSON: model, settings, per-kind breakdown
    },
)

SPECS = [QUALITY_EVALS]
