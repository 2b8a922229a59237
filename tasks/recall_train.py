"""Stage `recall_train`: train one round's fastText recall classifier and measure it.

Round 1: positives = seed examples, negatives = a seeded random sample of ingested documents.
Round 2: positives = documents of the domains round 1 labelled educational (all of them, then
seeds to fill), negatives = documents of the domains labelled `other` first, then random
documents outside the educational domains.

Class balance is explicit because seeds and crawl rarely come in matching sizes (the bundled
sample has ~9k seeds and 270 pages):
  n_neg = min(neg_sample or <positives available>, max_neg_fraction * n_documents)
  n_pos = min(<positives available>, pos_neg_ratio * n_neg)
`max_neg_fraction` (default 0.5) keeps half the crawl out of training, so most scores are
out-of-sample; `pos_neg_ratio` (default 1.0) keeps the classes balanced so that 0.5 means
"as likely seed-like as not". A seeded stratified `holdout` split gives precision / recall / F1
and a PR curve, stored in `recall_models` with the threshold scoring will use.

Two fingerprints: `train_key` covers what determines the model (examples, settings) and names
the model file; the `recall_models` version adds the threshold, so trying another threshold
makes a new version (and new scores) without retraining the same model.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import fasttext
import numpy as np
import polars as pl

from tasks.seeds import load_seeds, seeds_fingerprint
from tasks.text_norm import DEFAULT_MAX_CHARS, NORM_VERSION, normalize_texts
from warehouse import Warehouse, content_hash, fingerprint, now_utc

STAGE = "recall_train"
CODE_VERSION = "1"
POS, NEG = "__label__pos", "__label__neg"
MAX_TRAIN_ATTEMPTS = 10


@dataclass(frozen=True)
class TrainParams:
    dim: int = 256  # paper
    epoch: int = 3  # paper
    # fastText's own default (0.1) barely moves the weights in 3 epochs over a small training
    # set; 1.0 separated the sample's forum pages from its spam best (see tests/test_recall_train).
    lr: float = 1.0
    word_ngrams: int = 2
    min_count: int = 1
    bucket: int | None = None  # hash buckets for word n-grams; None: sized from the training text
    neg_sample: int | None = None  # None: as many negatives as positives available (then capped)
    max_neg_fraction: float = 0.5
    pos_neg_ratio: float = 1.0
    holdout: float = 0.2
    max_chars: int = DEFAULT_MAX_CHARS
    seed: int = 13
    threshold: float | None = 0.5  # None: the held-out threshold with the best F1
    thread: int = 2  # speed only; not part of any fingerprint

    def training_settings(self) -> dict:
        d = asdict(self)
        d.pop("thread"), d.pop("threshold")
        return d | {"norm_version": NORM_VERSION}


RETRAIN_POLICIES = ("never", "if_missing", "always")


def documents_state(wh: Warehouse, doc_fps: list[str]) -> str:
    """Which document shards exist now: names one training (the data a model saw), never a version alone."""
    return content_hash(json.dumps({fp: wh.shard_ids("documents", fp) for fp in sorted(doc_fps)}))


def line_key(rnd: int, params: TrainParams, doc_fps: list[str], seeds: list[str] | None,
             domains_fp: str | None = None) -> str:
    """What a model is meant to be: settings, seeds and upstream versions, never how much data exists.

    Models of one line differ only in the documents they were trained on; the newest is pinned.
    """
    upstream = [*doc_fps, seeds_fingerprint(seeds)] + ([domains_fp] if domains_fp else [])
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
def _docs(wh: Warehouse, doc_fps: list[str]) -> pl.LazyFrame:
    return pl.concat([wh.scan("documents", fp) for fp in doc_fps]) if doc_fps else wh.scan("documents")


def _take(df: pl.DataFrame, n: int, seed: int, first: pl.Expr | None = None) -> pl.DataFrame:
    """n rows, seeded; rows matching `first` are taken before the others."""
    df = df.sample(fraction=1.0, shuffle=True, seed=seed) if df.height else df
    if first is not None:
        df = df.sort(first, descending=True, maintain_order=True)
    return df.head(n)


def select_examples(wh: Warehouse, rnd: int, params: TrainParams, doc_fps: list[str],
                    seeds: list[str] | None, labels: pl.DataFrame | None = None) -> pl.DataFrame:
    """Labelled examples (item_id, origin, domain, label, split, text), balanced as documented above.

    `labels` (round 2): the previous round's `domains` rows (domain, label).
    """
    docs = _docs(wh, doc_fps).select("doc_id", "domain").unique("doc_id", keep="first").sort("doc_id").collect()
    seed_df = load_seeds(seeds).select(pl.col("seed_id").alias("item_id"), pl.lit(None, pl.String).alias("domain"),
                                       pl.lit("seed").alias("origin"), "text")
    edu = other = []
    if labels is not None:
        edu = labels.filter(pl.col("label") == "educational")["domain"].to_list()
        other = labels.filter(pl.col("label") == "other")["domain"].to_list()
    in_edu = pl.col("domain").is_in(edu).fill_null(False)
    pos_docs = docs.filter(in_edu).select(pl.col("doc_id").alias("item_id"), "domain",
                                          pl.lit("educational_domain").alias("origin"))
    neg_pool = docs.filter(~in_edu).select(
        pl.col("doc_id").alias("item_id"), "domain",
        pl.when(pl.col("domain").is_in(other).fill_null(False)).then(pl.lit("other_domain")).otherwise(pl.lit("random_doc")).alias("origin"))

    pos_available = pos_docs.height + seed_df.height
    n_neg = min(params.neg_sample or pos_available, int(params.max_neg_fraction * docs.height), neg_pool.height)
    n_pos = min(pos_available, max(1, math.ceil(params.pos_neg_ratio * n_neg)))
    negs = _take(neg_pool, n_neg, params.seed, first=pl.col("origin") == "other_domain")
    pos_docs = _take(pos_docs, n_pos, params.seed)
    pos_seeds = _take(seed_df, n_pos - pos_docs.height, params.seed)
    if negs.height == 0 or pos_docs.height + pos_seeds.height == 0:
        raise ValueError(f"round {rnd}: cannot train without both classes "
                         f"({pos_docs.height + pos_seeds.height} positives, {negs.height} negatives; "
                         f"{docs.height} documents ingested)")

    ids = pl.concat([negs["item_id"], pos_docs["item_id"]])
    texts = _docs(wh, doc_fps).filter(pl.col("doc_id").is_in(ids.implode())).select(
        pl.col("doc_id").alias("item_id"), "text").unique("item_id", keep="first").collect()
    doc_rows = pl.concat([negs.with_columns(label=pl.lit(0, pl.Int8)), pos_docs.with_columns(label=pl.lit(1, pl.Int8))])
    doc_rows = doc_rows.join(texts, on="item_id", how="left")
    rows = pl.concat([doc_rows, pos_seeds.with_columns(label=pl.lit(1, pl.Int8))], how="diagonal_relaxed")
    return _split(rows.select("item_id", "origin", "domain", "label", "text"), params)


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
    """Absolute path of a `recall_models.model_path` (stored relative to the warehouse)."""
    return str(wh.root / model_path)


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


def fit(examples: pl.DataFrame, params: TrainParams, model_dir: Path, key: str) -> tuple[Path, pl.DataFrame, dict]:
    """Train on the train split, score the test split; returns (model path, scored test rows, training facts)."""
    model_path = model_dir / f"recall-{key}.bin"
    test_path = model_dir / f"heldout-{key}.parquet"
    if model_path.exists() and test_path.exists():  # trained before (e.g. only the threshold changed)
        return model_path, pl.read_parquet(test_path), json.loads((model_dir / f"train-{key}.json").read_text())
    train = examples.filter(pl.col("split") == "train").sample(fraction=1.0, shuffle=True, seed=params.seed)
    texts = normalize_texts(train["text"], params.max_chars)
    lines = [f"{POS if y else NEG} {t}" for y, t in zip(train["label"].to_list(), texts)]
    n_tokens = sum(t.count(" ") + 1 for t in texts)
    bucket = 0 if params.word_ngrams <= 1 else (params.bucket or auto_bucket(n_tokens))
    tmp = model_dir / f".train-{key}-{os.getpid()}.txt"
    started = time.perf_counter()
    try:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        # fasttext-numpy2 0.10.4 now and then stops with "Encountered NaN" on small training sets,
        # at random (any lr, dim or thread count; rarer with more buckets): the same call retried
        # succeeds, so retry it rather than fail the run.
        for attempt in range(MAX_TRAIN_ATTEMPTS):
            try:
                model = fasttext.train_supervised(
                    str(tmp), dim=params.dim, epoch=params.epoch, lr=params.lr, wordNgrams=params.word_ngrams,
                    minCount=params.min_count, bucket=bucket, thread=params.thread, seed=params.seed, verbose=0)
                break
            except RuntimeError as exc:
                if "NaN" not in str(exc) or attempt == MAX_TRAIN_ATTEMPTS - 1:
                    raise
    finally:
        tmp.unlink(missing_ok=True)
    seconds = round(time.perf_counter() - started, 4)
    test = examples.filter(pl.col("split") == "test")
    test = test.with_columns(score=pl.Series(predict_pos(model, normalize_texts(test["text"], params.max_chars))))
    part = model_dir / f".part-{key}-{os.getpid()}.bin"
    model.save_model(str(part))
    test.drop("text").write_parquet(test_path)
    (model_dir / f"train-{key}.json").write_text(json.dumps({"train_seconds": seconds, "bucket": bucket,
                                                              "n_tokens": n_tokens, "attempts": attempt + 1}))
    os.replace(part, model_path)  # the model file appears last: its presence means "trained"
    return model_path, test.drop("text"), {"train_seconds": seconds, "bucket": bucket, "n_tokens": n_tokens,
                                           "attempts": attempt + 1}


# ---- metrics ------------------------------------------------------------------------------------
def pr_at(y: np.ndarray, s: np.ndarray, t: float) -> tuple[float, float, float]:
    pred = s >= t
    tp = float(np.sum(pred & (y == 1)))
    precision = tp / max(1.0, float(pred.sum())) if pred.any() else 1.0
    recall = tp / max(1.0, float((y == 1).sum()))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def evaluate(test: pl.DataFrame, threshold: float | None) -> dict:
    """Held-out precision/recall/F1 at the threshold (None: the best-F1 one) and a 101-point PR curve."""
    y, s = test["label"].to_numpy(), test["score"].to_numpy().astype(np.float64)
    grid = [round(i / 100, 2) for i in range(101)]
    curve = [[t, *(round(v, 4) for v in pr_at(y, s, t)[:2])] for t in grid]
    source = "fixed"
    if threshold is None:
        source = "best_f1"
        threshold = max(grid, key=lambda t: (round(pr_at(y, s, t)[2], 6), -t))
    p, r, f = pr_at(y, s, threshold)
    return dict(precision=p, recall=r, f1=f, threshold=float(threshold), threshold_source=source,
                pr_curve=json.dumps(curve))


# ---- the stage ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RoundPlan:
    """Which model a round uses: its line, the training of that line, the recall_models version."""
    line: str
    key: str
    fingerprint: str


def plan_round(wh: Warehouse, rnd: int, params: TrainParams, doc_fps: list[str], seeds: list[str] | None,
               domains_fp: str | None = None, retrain: str = "if_missing") -> RoundPlan:
    line = line_key(rnd, params, doc_fps, seeds, domains_fp)  # hashes the seed files: once per round
    key = choose_train_key(wh, line, doc_fps, retrain)
    return RoundPlan(line, key, model_fingerprint(key, params.threshold))


def train_round(wh: Warehouse, rnd: int, params: TrainParams, doc_fps: list[str], seeds: list[str] | None,
                domains_fp: str | None = None, retrain: str = "if_missing", plan: RoundPlan | None = None) -> dict:
    """Train (or reuse the pinned) model of this round and publish its `recall_models` + `recall_examples` rows."""
    plan = plan or plan_round(wh, rnd, params, doc_fps, seeds, domains_fp, retrain)
    line, key, fp = plan.line, plan.key, plan.fingerprint
    if wh.has_shard("recall_models", fp, "model"):
        return wh.read_shard("recall_models", fp, "model").to_dicts()[0] | {"fingerprint": fp, "skipped": True}
    model_dir = wh.side_dir("models", key)
    fitted = not (model_dir / f"heldout-{key}.parquet").exists()
    if not fitted:  # same training, another threshold: its examples
        examples = wh.read_shard("recall_examples", _examples_version(wh, key), "examples")
    else:
        labels = dom_labels(wh, domains_fp) if domains_fp else None
        examples = select_examples(wh, rnd, params, doc_fps, seeds, labels)
    model_path, test, facts = fit(examples, params, model_dir, key)
    metrics = evaluate(test, params.threshold)
    counts = examples.group_by("origin").len().sort("origin")
    settings = params.training_settings() | {
        "round": rnd, "seeds": seeds or "default", "documents": doc_fps, "domains_fingerprint": domains_fp,
        "examples_by_origin": dict(zip(counts["origin"], counts["len"])), "retrain": retrain,
        "bucket_used": facts["bucket"], "train_attempts": facts.get("attempts"), "train_tokens": facts["n_tokens"],
    }
    # stored relative to the warehouse root, so a copied or moved warehouse keeps working
    row = dict(round=rnd, line_key=line, train_key=key, model_path=model_path.relative_to(wh.root).as_posix(),
               n_pos=int((examples["label"] == 1).sum()), n_neg=int((examples["label"] == 0).sum()),
               n_test=test.height, **metrics, params=json.dumps(settings, sort_keys=True, default=str),
               train_seconds=facts["train_seconds"], trained_at=now_utc())
    scored = examples.drop("text", "score", "model_fingerprint", "round", strict=False).join(
        test.select("item_id", "score"), on="item_id", how="left")
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


def dom_labels(wh: Warehouse, domains_fp: str) -> pl.DataFrame:
    """The newest label of each domain in a `domains` version (labels accumulate run by run)."""
    from tasks.domains import latest_labels

    return latest_labels(wh, domains_fp).select("domain", "label")
