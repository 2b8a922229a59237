"""Stage `recall_train`: train one round's fastText recall classifier and measure it.

Which examples a round learns from (seeds dressed as pages, crawled pages in the seeds'
language, likely positives left out of the negatives, round 2's self-training pages and the
domain labels it trusts) is decided in `tasks/recall_examples.py`; this module fits, measures
and publishes. A seeded stratified `holdout` split gives the seed hold-out P/R/F1 and PR curve;
the shipped labelled real pages (`data/eval`, never trained on) give what matters: ROC-AUC,
PR-AUC, P/R/F1 at the threshold and a cross-validated F1, all stored in `recall_models`. With
`threshold` None the threshold is the best-F1 one on those labelled pages.

Two fingerprints: `train_key` covers what determines the model (examples, settings) and names
the model file; the `recall_models` version adds the threshold, so trying another threshold
makes a new version (and new scores) without retraining the same model.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import fasttext
import numpy as np
import polars as pl

from tasks import recall_examples
from tasks.recall_eval import best_f1_threshold, page_metrics, prf
from tasks.recall_examples import Examples
from tasks.seeds import seeds_fingerprint
from tasks.text_norm import DEFAULT_MAX_CHARS, NORM_VERSION, normalize_texts
from warehouse import Warehouse, content_hash, fingerprint, now_utc

STAGE = "recall_train"
CODE_VERSION = "3"  # 3: round 2 ignores labels of a degenerate labeller (95% one label, parroted reasons)
POS, NEG = "__label__pos", "__label__neg"
MAX_TRAIN_ATTEMPTS = 6


@dataclass(frozen=True)
class TrainParams:
    dim: int = 256  # paper
    # The paper's 3 epochs assume millions of lines; 5 ranked the labelled pages better on small
    # crawls (data/eval, mean of 3 seeds) and costs little on big ones.
    epoch: int = 5
    # fastText's own default (0.1) barely moves the weights in 3 epochs over a small training
    # set; 1.0 separated the sample's forum pages from its spam best (see tests/test_recall_train).
    lr: float = 1.0
    word_ngrams: int = 2
    min_count: int = 1
    bucket: int | None = None  # hash buckets for word n-grams; None: sized from the training text
    neg_sample: int | None = None  # None: as many negatives as positives available (then capped)
    max_neg_fraction: float = 1.0
    pos_neg_ratio: float = 1.0
    # Pages in other languages are never recalled (score 0): the seeds say what a positive looks like
    # in their language only, and a model trained on English seeds learns "English" otherwise.
    languages: tuple[str, ...] | None = ("en",)
    # Negatives whose cross-fitted score reaches this are dropped as likely positives (None: keep all).
    pu_drop_score: float | None = 0.5
    pu_max_drop: float = 0.05
    # Round 2 also learns from the pages round 1 recalled with the highest scores (this share of the
    # pages in scope at most): page-level Q&A cues that no bare seed has.
    self_train_share: float = 0.1
    holdout: float = 0.2
    max_chars: int = DEFAULT_MAX_CHARS
    seed: int = 13
    threshold: float | None = None  # None: best F1 on the labelled pages (held-out seeds when there are none)
    thread: int = 1  # speed only, not part of any fingerprint; 1 is reproducible (fastText's threads race)

    def training_settings(self) -> dict:
        d = asdict(self)
        d.pop("thread"), d.pop("threshold")
        return d | {"norm_version": NORM_VERSION}


RETRAIN_POLICIES = ("never", "if_missing", "always")


def documents_state(wh: Warehouse, doc_fps: list[str]) -> str:
    """Which document shards exist now: names one training (the data a model saw), never a version alone."""
    return content_hash(json.dumps({fp: wh.shard_ids("documents", fp) for fp in sorted(doc_fps)}))


def line_key(rnd: int, params: TrainParams, doc_fps: list[str], seeds: list[str] | None,
             domains_fp: str | None = None, prev_scores_fp: str | None = None) -> str:
    """What a model is meant to be: settings, seeds and upstream versions, never how much data exists.

    Models of one line differ only in the documents they were trained on; the newest is pinned.
    """
    upstream = [*doc_fps, seeds_fingerprint(seeds)] + [fp for fp in (domains_fp, prev_scores_fp) if fp]
    return fingerprint(STAGE, params=params.training_settings() | {"round": rnd}, code_version=CODE_VERSION,
                       upstream=upstream)


def train_key(wh: Warehouse, line: str, doc_fps: list[str]) -> str:
    """One training of a line: the line plus the documents that existed when it was trained."""
    return fingerprint(STAGE, params={"line": line, "documents_state": documents_state(wh, doc_fps)},
                       code_version=CODE_VERSION, upstream=[line])


def pinned_train_key(wh: Warehouse, line: str) -> str | None:
    """The newest training of a line (its model file exists), or None."""
    models = [wh.read_shard("recall_models", fp, "model") for fp in wh.versions("recall_models")
              if wh.has_shard("recall_models", fp, "model")]
    if not models:
        return None
    rows = pl.concat(models, how="diagonal_relaxed").filter(pl.col("line_key") == line)
    rows = rows.filter(pl.col("model_path").map_elements(lambda p: (wh.root / p).exists(), return_dtype=pl.Boolean))
    return rows.sort("trained_at")["train_key"][-1] if rows.height else None


def choose_train_key(wh: Warehouse, line: str, doc_fps: list[str], retrain: str) -> str:
    """Apply the retrain policy: `if_missing` pins the newest model of the line (new crawl data is
    scored by it, not trained on); `always` trains on the documents there are now; `never` refuses
    to train."""
    if retrain not in RETRAIN_POLICIES:
        raise ValueError(f"retrain must be one of {RETRAIN_POLICIES}, not {retrain!r}")
    pinned = pinned_train_key(wh, line)
    if retrain == "always" or (pinned is None and retrain == "if_missing"):
        return train_key(wh, line, doc_fps)
    if pinned is None:
        raise ValueError("retrain='never' but no recall model with these settings exists yet: "
                         "run recall once with retrain='if_missing'")
    return pinned


def model_fingerprint(key: str, threshold: float | None) -> str:
    return fingerprint(STAGE, params={"train_key": key, "threshold": threshold}, code_version=CODE_VERSION,
                       upstream=[key])


# ---- training set ------------------------------------------------------------------------------
def select_examples(wh: Warehouse, rnd: int, params: TrainParams, doc_fps: list[str], seeds: list[str] | None,
                    labels: pl.DataFrame | None = None, alarm: str | None = None,
                    prev_scores: pl.DataFrame | None = None) -> Examples:
    """The round's examples (see tasks/recall_examples) with a hold-out split; dropped negatives get split `dropped`."""
    ex = recall_examples.select(wh, rnd, params, doc_fps, seeds, lambda p, n, t: _quick_scores(p, n, t, params),
                                labels=labels, alarm=alarm, prev_scores=prev_scores)
    labelled = ex.rows.filter(pl.col("label").is_not_null())
    rows = pl.concat([_split(labelled, params), ex.rows.filter(pl.col("label").is_null()).with_columns(
        split=pl.lit("dropped"))])
    return Examples(rows, ex.notes)


def _split(rows: pl.DataFrame, params: TrainParams) -> pl.DataFrame:
    """Seeded stratified hold-out: the same fraction of each class, at least one of each if possible."""
    rng = random.Random(params.seed)
    test: set[str] = set()
    for label in (0, 1):
        ids = sorted(rows.filter(pl.col("label") == label)["item_id"].to_list())
        n = min(len(ids) - 1, max(1, round(params.holdout * len(ids)))) if params.holdout > 0 else 0
        test.update(rng.sample(ids, max(n, 0)))
    return rows.with_columns(split=pl.when(pl.col("item_id").is_in(list(test))).then(pl.lit("test")).otherwise(pl.lit("train")))


# ---- fastText -----------------------------------------------------------------------------------
def auto_bucket(n_tokens: int) -> int:
    """Word n-gram buckets: fastText's 2M default makes a ~2 GB model at dim 256, pointless for
    small training sets; about one bucket per 4 training tokens keeps collisions rare enough."""
    return int(min(2_000_000, max(50_000, n_tokens // 4)))


def model_file(wh: Warehouse, model_path: str) -> str:
    """A local path of a `recall_models.model_path` (stored relative to the warehouse; a model in
    object storage is fetched once into the local state folder)."""
    return str(wh.local_file(model_path))


@lru_cache(maxsize=8)
def load_model(path: str):
    """Models are read-only after training; one loaded copy per process serves every shard."""
    return fasttext.load_model(path)


def predict_pos(model, texts: list[str]) -> np.ndarray:
    """P(positive) for normalized texts, one vectorised C++ call (k=1, then flip for negatives)."""
    if not texts:
        return np.zeros(0, dtype=np.float32)
    labels, probs = model.predict(texts, k=1)
    p = np.fromiter((x[0] if len(x) else 0.5 for x in probs), dtype=np.float64, count=len(texts))
    is_pos = np.fromiter((len(x) > 0 and x[0] == POS for x in labels), dtype=bool, count=len(texts))
    return np.clip(np.where(is_pos, p, 1.0 - p), 0.0, 1.0).astype(np.float32)


def scope_expr(languages) -> pl.Expr:
    """Which pages recall scores at all (columns text, language): non-empty, in `languages` when set.
    The scoring stage and the labelled-page evaluation both use it."""
    ok = pl.col("text").fill_null("").str.strip_chars().str.len_chars() > 0
    return ok & pl.col("language").is_in(list(languages)).fill_null(False) if languages else ok


def page_scores(model, pages: pl.DataFrame, languages, max_chars: int) -> np.ndarray:
    """Scores of pages (text, language) as the recall stage gives them: out of scope = 0, not predicted."""
    scope = pages.select(scope_expr(languages)).to_series()
    out = np.zeros(pages.height, dtype=np.float64)
    out[scope.to_numpy()] = predict_pos(model, normalize_texts(pages["text"].filter(scope), max_chars))
    return out


def train_fasttext(texts: list[str], labels: list[int], params: TrainParams, workdir: Path, tag: str):
    """A fastText model on normalized texts with 0/1 labels (shuffled, seeded)."""
    lines = [f"{POS if y else NEG} {t}" for y, t in zip(labels, texts)]
    random.Random(params.seed).shuffle(lines)
    n_tokens = sum(t.count(" ") + 1 for t in texts)
    bucket = 0 if params.word_ngrams <= 1 else (params.bucket or auto_bucket(n_tokens))
    tmp = workdir / f".train-{tag}-{os.getpid()}.txt"
    try:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        # fasttext-numpy2 0.10.4 stops with "Encountered NaN" now and then when small vectors share
        # few n-gram buckets (dim 32 with 50k buckets: 4 trainings in 10; none at dim 64+ or with
        # more buckets). Each retry doubles the buckets and moves the seed: fixed sequences, so a
        # one-thread training stays reproducible.
        for attempt in range(MAX_TRAIN_ATTEMPTS):
            try:
                model = fasttext.train_supervised(
                    str(tmp), dim=params.dim, epoch=params.epoch, lr=params.lr, wordNgrams=params.word_ngrams,
                    minCount=params.min_count, bucket=bucket, thread=params.thread, seed=params.seed + attempt,
                    verbose=0)
                return model, {"bucket": bucket, "n_tokens": n_tokens, "attempts": attempt + 1}
            except RuntimeError as exc:
                if "NaN" not in str(exc) or attempt == MAX_TRAIN_ATTEMPTS - 1:
                    raise
                bucket = min(2 * bucket, 4_000_000) if bucket else 0
    finally:
        tmp.unlink(missing_ok=True)


def _quick_scores(pos: list[str], neg: list[str], texts: list[str], params: TrainParams) -> np.ndarray:
    """Train a throwaway model and score `texts` with it (positive-unlabelled cleaning of negatives)."""
    norm = normalize_texts(pos + neg, params.max_chars)
    one_thread = replace(params, thread=1)  # deterministic: which pages are left out must not vary by run
    with tempfile.TemporaryDirectory(prefix="webinstruct-pu-") as tmp:
        model, _ = train_fasttext(norm, [1] * len(pos) + [0] * len(neg), one_thread, Path(tmp), "pu")
    return predict_pos(model, normalize_texts(texts, params.max_chars))


def fit(examples: pl.DataFrame, params: TrainParams, model_dir: Path, key: str) -> tuple[Path, pl.DataFrame, dict]:
    """Train on the train split, score the test split; returns (model path, scored test rows, training facts)."""
    model_path = model_dir / f"recall-{key}.bin"
    test_path = model_dir / f"heldout-{key}.parquet"
    facts_path = model_dir / f"train-{key}.json"
    if model_path.exists() and test_path.exists():  # trained before (e.g. only the threshold changed)
        return model_path, pl.read_parquet(test_path), json.loads(facts_path.read_text())
    train = examples.filter(pl.col("split") == "train")
    started = time.perf_counter()
    model, facts = train_fasttext(normalize_texts(train["text"], params.max_chars), train["label"].to_list(),
                                  params, model_dir, key)
    facts["train_seconds"] = round(time.perf_counter() - started, 4)
    test = examples.filter(pl.col("split") == "test")
    test = test.with_columns(score=pl.Series(predict_pos(model, normalize_texts(test["text"], params.max_chars))))
    part = model_dir / f".part-{key}-{os.getpid()}.bin"
    model.save_model(str(part))
    test.drop("text").write_parquet(test_path)
    facts_path.write_text(json.dumps(facts))
    os.replace(part, model_path)  # the model file appears last: its presence means "trained"
    return model_path, test.drop("text"), facts


# ---- metrics ------------------------------------------------------------------------------------
def evaluate(test: pl.DataFrame, threshold: float | None) -> dict:
    """Held-out precision/recall/F1 at the threshold (None: the best-F1 one) and a 101-point PR curve."""
    y, s = test["label"].to_numpy(), test["score"].to_numpy().astype(np.float64)
    grid = [round(i / 100, 2) for i in range(101)]
    curve = [[t, *(round(v, 4) for v in prf(y, s, t)[:2])] for t in grid]
    source = "fixed"
    if threshold is None:
        source, threshold = "heldout_best_f1", best_f1_threshold(y, s)
    p, r, f = prf(y, s, threshold)
    return dict(precision=p, recall=r, f1=f, threshold=float(threshold), threshold_source=source,
                pr_curve=json.dumps(curve))


def labelled_scores(model_path: str, max_chars: int, languages, labels: str | None = None,
                    warcs: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(labels, scores, set id) of a labelled page set under a model; None when no set is available."""
    from tasks.labelled_pages import load_labelled, shipped_available

    if labels is None and not shipped_available():
        return None
    pages, set_id = load_labelled(labels, warcs)
    scores = page_scores(load_model(model_path), pages, languages, max_chars)
    return pages["label"].to_numpy(), scores, set_id


def page_eval_columns(model_path: str, params: TrainParams) -> tuple[dict, float | None]:
    """`recall_models`' eval_* columns on the shipped labelled pages, and the threshold they suggest.

    With `threshold` None the best-F1 threshold on the labelled pages is used (and returned)."""
    threshold = params.threshold
    res = labelled_scores(model_path, params.max_chars, params.languages)
    if res is None:
        return {c: None for c in EVAL_COLUMNS}, None
    y, s, set_id = res
    chosen = best_f1_threshold(y, s) if threshold is None else threshold
    m = page_metrics(y, s, chosen)
    cols = {"eval_set": set_id, "eval_pages": m["pages"], "eval_positives": m["positives"],
            "eval_roc_auc": m["roc_auc"], "eval_pr_auc": m["pr_auc"], "eval_precision": m["precision"],
            "eval_recall": m["recall"], "eval_f1": m["f1"], "eval_f1_cv": m["f1_cv"]}
    return cols, chosen


EVAL_COLUMNS = ("eval_set", "eval_pages", "eval_positives", "eval_roc_auc", "eval_pr_auc", "eval_precision",
                "eval_recall", "eval_f1", "eval_f1_cv")


# ---- the stage ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RoundPlan:
    """Which model a round uses: its line, the training of that line, the recall_models version."""
    line: str
    key: str
    fingerprint: str


def plan_round(wh: Warehouse, rnd: int, params: TrainParams, doc_fps: list[str], seeds: list[str] | None,
               domains_fp: str | None = None, retrain: str = "if_missing",
               prev_scores_fp: str | None = None) -> RoundPlan:
    line = line_key(rnd, params, doc_fps, seeds, domains_fp, prev_scores_fp)  # hashes the seed files: once per round
    key = choose_train_key(wh, line, doc_fps, retrain)
    return RoundPlan(line, key, model_fingerprint(key, params.threshold))


def round_inputs(wh: Warehouse, domains_fp: str | None, prev_scores_fp: str | None) -> dict:
    """What round 2 learns from: the previous round's domain labels (and whether the labeller looks
    degenerate) and its scores (which pages it recalled)."""
    from tasks.domains import labeller_alarm, latest_labels

    out: dict = {}
    if domains_fp:
        rows = latest_labels(wh, domains_fp)
        out["labels"] = rows.select("domain", "label", "label_source", "docs_seen", "docs_recalled")
        out["alarm"] = labeller_alarm(rows)
    if prev_scores_fp:
        out["prev_scores"] = wh.scan("recall_scores", prev_scores_fp).select("doc_id", "score", "kept").collect()
    return out


def train_round(wh: Warehouse, rnd: int, params: TrainParams, doc_fps: list[str], seeds: list[str] | None,
                domains_fp: str | None = None, retrain: str = "if_missing", plan: RoundPlan | None = None,
                prev_scores_fp: str | None = None) -> dict:
    """Train (or reuse the pinned) model of this round and publish its `recall_models` + `recall_examples` rows."""
    plan = plan or plan_round(wh, rnd, params, doc_fps, seeds, domains_fp, retrain, prev_scores_fp)
    line, key, fp = plan.line, plan.key, plan.fingerprint
    if wh.has_shard("recall_models", fp, "model"):
        return wh.read_shard("recall_models", fp, "model").to_dicts()[0] | {"fingerprint": fp, "skipped": True}
    model_dir = wh.side_dir("models", key)
    fitted = not (model_dir / f"recall-{key}.bin").exists()  # the model file is fit()'s commit point
    if not fitted:  # same training, another threshold: its examples
        ver = _examples_version(wh, key)
        notes = json.loads(wh.read_shard("recall_models", ver, "model")["params"][0]).get("notes", {})
        examples = Examples(wh.read_shard("recall_examples", ver, "examples"), notes)
    else:
        examples = select_examples(wh, rnd, params, doc_fps, seeds, **round_inputs(wh, domains_fp, prev_scores_fp))
    model_path, test, facts = fit(examples.rows, params, model_dir, key)
    evals, chosen = page_eval_columns(str(model_path), params)
    metrics = evaluate(test, chosen if chosen is not None else params.threshold)
    if params.threshold is None and chosen is not None:
        metrics["threshold_source"] = "labelled_best_f1"
    counts = examples.rows.group_by("origin").len().sort("origin")
    settings = params.training_settings() | {
        "round": rnd, "seeds": seeds or "default", "documents": doc_fps, "domains_fingerprint": domains_fp,
        "previous_scores_fingerprint": prev_scores_fp, "notes": examples.notes,
        "examples_by_origin": dict(zip(counts["origin"], counts["len"])), "retrain": retrain,
        "bucket_used": facts["bucket"], "train_attempts": facts.get("attempts"),
        "train_tokens": facts["n_tokens"],
    }
    # stored relative to the warehouse root, so a copied or moved warehouse keeps working
    row = dict(round=rnd, line_key=line, train_key=key, model_path=model_path.relative_to(wh.local).as_posix(),
               n_pos=int((examples.rows["label"] == 1).sum()), n_neg=int((examples.rows["label"] == 0).sum()),
               n_test=test.height, **metrics, **evals, params=json.dumps(settings, sort_keys=True, default=str),
               train_seconds=facts["train_seconds"], trained_at=now_utc())
    scored = examples.rows.drop("text", "score", "model_fingerprint", "round", strict=False).join(
        test.select("item_id", "score"), on="item_id", how="left")
    wh.publish_side(model_dir)  # in object storage: before the rows that point at it
    wh.write_shard("recall_examples", fp, "examples",
                   scored.with_columns(model_fingerprint=pl.lit(fp), round=pl.lit(rnd)))
    wh.write_shard("recall_models", fp, "model", pl.DataFrame([row]))  # last: the commit point
    return row | {"fingerprint": fp, "skipped": False, "fitted": fitted}


def _examples_version(wh: Warehouse, key: str) -> str:
    """A recall_models version trained as `key` (its examples are the same for every threshold)."""
    for fp in wh.versions("recall_models"):
        if wh.read_shard("recall_models", fp, "model")["train_key"][0] == key:
            return fp
    raise FileNotFoundError(f"no recall_models version for training {key}")
