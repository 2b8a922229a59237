"""Recall measured on labelled real pages: ROC-AUC, PR-AUC and precision/recall/F1 at a threshold.

The seed hold-out in `recall_models` says whether the model tells a seed from a random page;
these numbers say whether it finds educational Q&A pages among real pages, which is its job.
All metrics are threshold-free except P/R/F1. When the threshold is chosen on the same set
(`best_f1_threshold`), F1 at it is in-sample; `cv_f1` is the honest figure: the threshold is
picked on one half of the set and F1 measured on the other, both ways, averaged.
"""
from __future__ import annotations

import numpy as np
import polars as pl

def roc_auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """P(a random positive outscores a random negative), ties counting half (Mann-Whitney U)."""
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if not n_pos or not n_neg:
        return None
    ranks = pl.Series(s).rank("average").to_numpy()
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pr_auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """Average precision: mean precision at each positive's rank, tied scores taken together."""
    n_pos = int((y == 1).sum())
    if not n_pos:
        return None
    df = (pl.DataFrame({"s": s, "y": y.astype(np.int64)}).group_by("s").agg(tp=pl.col("y").sum(), n=pl.len())
          .sort("s", descending=True).with_columns(tp_cum=pl.col("tp").cum_sum(), n_cum=pl.col("n").cum_sum()))
    return float((df["tp"] / n_pos * df["tp_cum"] / df["n_cum"]).sum())


def prf(y: np.ndarray, s: np.ndarray, t: float) -> tuple[float, float, float]:
    pred = s >= t
    tp = float(np.sum(pred & (y == 1)))
    precision = tp / float(pred.sum()) if pred.any() else 1.0
    recall = tp / max(1.0, float((y == 1).sum()))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def best_f1_threshold(y: np.ndarray, s: np.ndarray) -> float:
    """The threshold with the best F1 among the scores themselves (the highest of equal ones: fewer
    pages to the LLM). Not a fixed grid: on a small crawl fastText's scores can all sit within a
    few hundredths of 0.5, and the ranking is still good."""
    if not len(s) or not (y == 1).any():
        return 0.5
    order = np.argsort(-s, kind="stable")
    ss, yy = s[order], y[order] == 1
    tp, kept = np.cumsum(yy), np.arange(1, len(ss) + 1)
    last = np.r_[ss[1:] != ss[:-1], True]  # the last row of each run of equal scores
    tp, kept, cand = tp[last], kept[last], ss[last]
    f1 = 2 * tp / (kept + yy.sum())
    best = np.flatnonzero(np.round(f1, 9) == np.round(f1.max(), 9))[0]  # first = highest threshold
    return float(cand[best])


def cv_f1(y: np.ndarray, s: np.ndarray, seed: int = 13) -> float | None:
    """F1 with the threshold chosen on the other half (stratified 2-fold, both ways, averaged)."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y), dtype=bool)
    for label in (0, 1):
        idx = np.flatnonzero(y == label)
        fold[rng.permutation(idx)[: len(idx) // 2]] = True
    if min((y[fold] == 1).sum(), (y[~fold] == 1).sum()) == 0:
        return None
    f1s = [prf(y[b], s[b], best_f1_threshold(y[a], s[a]))[2] for a, b in ((fold, ~fold), (~fold, fold))]
    return float(np.mean(f1s))


def page_metrics(y: np.ndarray, s: np.ndarray, threshold: float) -> dict:
    """Every metric of one scoring of a labelled set (None where a class is missing)."""
    p, r, f = prf(y, s, threshold)
    return dict(pages=int(len(y)), positives=int((y == 1).sum()), roc_auc=roc_auc(y, s), pr_auc=pr_auc(y, s),
                precision=p, recall=r, f1=f, kept=int((s >= threshold).sum()), threshold=float(threshold),
                best_f1_threshold=best_f1_threshold(y, s), f1_cv=cv_f1(y, s))
