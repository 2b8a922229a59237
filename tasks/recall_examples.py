"""The training examples of a recall round: pages against pages.

Why not seeds against pages: a seed is a bare exam question, a crawled page is a question wrapped
in navigation, user names and footers, so a model trained that way learns "bare text or web page"
and scores every real page alike. Four things make the examples comparable:

- **Pages in the seeds' language only** (`languages`, default English): against a multilingual
  crawl, a model trained on English seeds otherwise learns "English", not "Q&A".
- **Seeds dressed as pages.** Each seed is set inside the head and tail of a random crawled page,
  so page furniture occurs in both classes and only the content can tell them apart. GSM8K's
  calculator annotations (`<<48/2=24>>`) and `####` answer marks, which no web page has, go.
- **Negatives cleaned of likely positives** (positive-unlabelled learning): random pages include
  real Q&A pages. The candidates are scored by models trained on the other half of them
  (cross-fitting, so no page scores itself) and those scoring as positives are left out.
- **Round 2 uses the LLM's domain labels only with evidence.** An `educational` domain adds its
  pages as positives when round 1 recalled most of them; an `other` domain adds its pages as
  negatives when round 1 recalled few. A degenerate labeller (one label for everything) is
  ignored altogether. Round 2 also learns from the pages round 1 recalled (self-training), so it
  improves on round 1 with the domain step disabled too. Every skip is counted in `notes`.
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field

import polars as pl

from tasks.seeds import load_seeds
from warehouse import Warehouse

FRAME_CHARS = 300  # at most this much of a page's head (and tail) around a dressed seed
_CALC = re.compile(r"<<[^<>]*>>")


@dataclass
class Examples:
    """Rows (item_id, origin, domain, label, text) and what was decided on the way."""
    rows: pl.DataFrame
    notes: dict = field(default_factory=dict)


def _scan(wh: Warehouse, doc_fps: list[str]) -> pl.LazyFrame:
    return pl.concat([wh.scan("documents", fp) for fp in doc_fps]) if doc_fps else wh.scan("documents")


def documents(wh: Warehouse, doc_fps: list[str], languages: tuple[str, ...] | None = None) -> pl.LazyFrame:
    """Documents (doc_id, domain) in the recalled languages; texts are read for the chosen ones only."""
    lf = _scan(wh, doc_fps)
    if languages:
        lf = lf.filter(pl.col("language").is_in(list(languages)))
    return lf.select("doc_id", "domain").unique("doc_id", keep="first")


def with_texts(wh: Warehouse, doc_fps: list[str], rows: pl.DataFrame) -> pl.DataFrame:
    """`rows` (with doc_id) joined with their documents' text, in their order."""
    texts = (_scan(wh, doc_fps).filter(pl.col("doc_id").is_in(rows["doc_id"].implode()))
             .select("doc_id", "text").unique("doc_id", keep="first").collect())
    return rows.join(texts, on="doc_id", how="left", maintain_order="left")


def clean_seed(text: str) -> str:
    return _CALC.sub("", text).replace("####", "Answer:")


def dress_seeds(seeds: pl.DataFrame, frames: list[str], seed: int) -> pl.DataFrame:
    """Each seed between a random page's first and last (up to) FRAME_CHARS characters."""
    rng = random.Random(seed)
    texts = []
    for text in seeds["text"].to_list():
        frame = frames[rng.randrange(len(frames))] if frames else ""
        head, tail = frame[:rng.randint(0, FRAME_CHARS)], frame[len(frame) - rng.randint(0, FRAME_CHARS):]
        texts.append(f"{head}\n{clean_seed(text)}\n{tail}")
    return seeds.with_columns(text=pl.Series(texts, dtype=pl.String))


def take(df: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    """n rows, seeded."""
    return df.sample(fraction=1.0, shuffle=True, seed=seed).head(n) if df.height else df


def cross_fit_scores(pos: list[str], neg: list[str], train_score, seed: int) -> list[float]:
    """Out-of-fold score of every negative candidate: two models, each trained on half of them."""
    rng = random.Random(seed)
    order = list(range(len(neg)))
    rng.shuffle(order)
    folds = [order[: len(order) // 2], order[len(order) // 2:]]
    scores = [0.0] * len(neg)
    for k in (0, 1):
        train_ids, held = folds[k], folds[1 - k]
        if not train_ids or not held:
            continue
        s = train_score(pos[k::2], [neg[i] for i in train_ids], [neg[i] for i in held])
        for i, v in zip(held, s):
            scores[i] = float(v)
    return scores


def pu_clean(pos: pl.DataFrame, neg: pl.DataFrame, train_score, params) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(negatives kept, negatives dropped as likely positives): out-of-fold score >= `pu_drop_score`,
    highest first, at most `pu_max_drop` of them (real Q&A pages are a small share of a crawl, so a
    weak early model calling many pages positive is not evidence)."""
    if params.pu_drop_score is None or neg.height < 4 or pos.height < 2:
        return neg, neg.clear()
    s = cross_fit_scores(pos["text"].to_list(), neg["text"].to_list(), train_score, params.seed)
    neg = neg.with_columns(pu_score=pl.Series(s, dtype=pl.Float32), _row=pl.int_range(pl.len()))
    cap = int(params.pu_max_drop * neg.height)
    likely = (neg.filter(pl.col("pu_score") >= params.pu_drop_score)
              .sort(["pu_score", "_row"], descending=[True, False]).head(cap)["_row"])
    out = pl.col("_row").is_in(likely.implode())
    return neg.filter(~out).drop("pu_score", "_row"), neg.filter(out).drop("pu_score", "_row")


def trusted_labels(labels: pl.DataFrame | None, alarm: str | None) -> tuple[list[str], list[str], dict]:
    """(educational domains, other domains) whose LLM label agrees with round 1's scores of their pages.

    `labels`: domain, label, label_source, docs_seen, docs_recalled. Overrides are the user's word
    and always count. Returns notes saying what was used and what was skipped, and why."""
    if labels is None or labels.is_empty():
        return [], [], {"domain_labels_used": 0}  # domain step off, or nothing labelled yet
    labels = labels.filter(pl.col("label").is_in(["educational", "other"]))
    override = pl.col("label_source") == "override"
    if alarm:
        labels = labels.filter(override)
    share = pl.col("docs_recalled") / pl.max_horizontal(pl.col("docs_seen"), pl.lit(1))
    agrees = override | ((pl.col("label") == "educational") & (share >= 0.5)) | ((pl.col("label") == "other") & (share < 0.5))
    used, skipped = labels.filter(agrees), labels.filter(~agrees)
    notes = {"domain_labels_used": used.height, "domain_labels_skipped": skipped.height}
    if alarm:
        notes["domain_labels"] = f"LLM labels ignored: {alarm.split('.')[0]}"
    elif skipped.height:
        notes["domain_labels"] = (f"{skipped.height} LLM label(s) skipped: they disagree with round 1's scores of "
                                  "the domain's pages")
    return (used.filter(pl.col("label") == "educational")["domain"].to_list(),
            used.filter(pl.col("label") == "other")["domain"].to_list(), notes)


def self_training_pages(docs: pl.DataFrame, prev_scores: pl.DataFrame | None, share: float) -> pl.Series:
    """The doc_ids round 1 recalled with the highest scores: at most `share` of the pages in scope."""
    if prev_scores is None or share <= 0:
        return pl.Series("doc_id", [], pl.String)
    cap = max(1, int(share * docs.height))
    top = (prev_scores.filter(pl.col("kept")).join(docs.select("doc_id"), on="doc_id", how="semi")
           .sort(["score", "doc_id"], descending=[True, False]).head(cap))
    return top["doc_id"]


def select(wh: Warehouse, rnd: int, params, doc_fps: list[str], seeds: list[str] | None, train_score, *,
           labels: pl.DataFrame | None = None, alarm: str | None = None,
           prev_scores: pl.DataFrame | None = None) -> Examples:
    """Balanced, labelled examples for round `rnd` (see the module doc).

    `train_score(pos_texts, neg_texts, texts) -> scores` trains a throwaway model (PU cleaning);
    round 2 gets the domain `labels`, the labeller `alarm` and round 1's `prev_scores` (doc_id, score, kept).
      n_neg = min(neg_sample or <positives available>, max_neg_fraction * <pages in scope>)
      n_pos = pos_neg_ratio * n_neg: positive pages first (at most half), dressed seeds for the rest
    """
    docs = documents(wh, doc_fps, params.languages).collect().sort("doc_id")
    if docs.is_empty():
        raise ValueError(f"round {rnd}: no documents to train on (languages {params.languages})")
    edu, other, notes = trusted_labels(labels, alarm) if rnd > 1 else ([], [], {})
    recalled = pl.col("doc_id").is_in(self_training_pages(docs, prev_scores, params.self_train_share).implode())
    in_edu, in_other = pl.col("domain").is_in(edu).fill_null(False), pl.col("domain").is_in(other).fill_null(False)
    docs = docs.with_columns(
        origin=pl.when(in_edu).then(pl.lit("educational_domain"))
        .when(recalled & ~in_other).then(pl.lit("recalled_page"))
        .when(in_other).then(pl.lit("other_domain")).otherwise(pl.lit("random_doc")))
    is_pos = pl.col("origin").is_in(["educational_domain", "recalled_page"])
    pos_pages, neg_pool = docs.filter(is_pos), docs.filter(~is_pos)
    seed_pool = load_seeds(seeds)

    n_neg = min(params.neg_sample or pos_pages.height + seed_pool.height,
                int(params.max_neg_fraction * docs.height), neg_pool.height)
    negs = pl.concat([take(neg_pool.filter(pl.col("origin") == "other_domain"), n_neg, params.seed),
                      take(neg_pool.filter(pl.col("origin") == "random_doc"), n_neg, params.seed)]).head(n_neg)
    n_pos = max(1, math.ceil(params.pos_neg_ratio * n_neg))
    pos_pages = take(pos_pages, min(pos_pages.height, n_pos // 2), params.seed)  # seeds keep at least half
    negs, pos_pages = with_texts(wh, doc_fps, negs), with_texts(wh, doc_fps, pos_pages)
    frames = negs["text"].to_list() or pos_pages["text"].to_list()  # page furniture for the seeds
    seed_rows = dress_seeds(take(seed_pool, n_pos - pos_pages.height, params.seed), frames, params.seed).select(
        pl.col("seed_id").alias("item_id"), pl.lit(None, pl.String).alias("domain"), pl.lit("seed").alias("origin"),
        "text")
    pos = pl.concat([pos_pages.select(pl.col("doc_id").alias("item_id"), "domain", "origin", "text"), seed_rows])
    negs = negs.select(pl.col("doc_id").alias("item_id"), "domain", "origin", "text")
    if negs.is_empty() or pos.is_empty():
        raise ValueError(f"round {rnd}: cannot train without both classes ({pos.height} positives, "
                         f"{negs.height} negatives; {docs.height} documents in scope)")
    negs, dropped = pu_clean(pos, negs, train_score, params)
    notes |= {"pages_in_scope": docs.height, "positive_pages": pos_pages.height, "dressed_seeds": seed_rows.height,
              "negatives_dropped_as_likely_positive": dropped.height}
    rows = pl.concat([pos.with_columns(label=pl.lit(1, pl.Int8)), negs.with_columns(label=pl.lit(0, pl.Int8)),
                      dropped.with_columns(label=pl.lit(None, pl.Int8), origin=pl.lit("likely_positive"))])
    return Examples(rows.select("item_id", "origin", "domain", "label", "text"), notes)
