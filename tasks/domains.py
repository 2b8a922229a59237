"""Stage `domains`: group scored documents by registered domain and have an LLM label the
domains with enough recalled documents as educational or not.

Per domain (one vectorised polars aggregation over `recall_scores` joined with `documents`):
docs seen, docs recalled (kept), mean score, and the titles/URLs of its top-scoring pages.
Domains with at least `min_domain_docs` recalled documents go to the LLM (the paper used 1000
at crawl scale; the default here is 1 because no registered domain of the bundled sample has
more than two pages, apart from one spam site; raise it for real crawls). A user's override file wins over the LLM and is applied to
any domain, however few documents it has (and those domains are never sent to the LLM).
A reply that does not parse becomes label `failed` with the reason; it never stops the stage.

Every domain seen gets a row, so SQL can answer "why was this domain not labelled?". Labels
accumulate: a later run adds rows only for new domains (and for undecided ones whose outcome
changed), so a domain costs one LLM call per (prompt, model); the newest row of a domain wins.

A labeller that gives (almost) every domain one label, no reasons or one parroted reason raises
`labeller_alarm`: round 2 then trains on overrides only, and the run log, the stage_runs row,
a Prefect artifact, the CLI and the HTML report say so.
"""
from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path
from typing import Literal

import polars as pl
import pydantic

from prompts import load_prompt
from warehouse import Warehouse, content_hash, fingerprint, now_utc

STAGE = "domains"
CODE_VERSION = "1"
PROMPT = "domain_label"
LABELS = ("educational", "other")
_TRUE = {"educational", "edu", "true", "yes", "1", "y", "keep"}
_FALSE = {"other", "not_educational", "non-educational", "false", "no", "0", "n", "drop"}


class DomainLabel(pydantic.BaseModel):
    """The LLM's verdict on one domain (reason first: the label follows from the evidence)."""
    reason: str = pydantic.Field(max_length=400, description="one short sentence citing the evidence")
    label: Literal["educational", "other"]


def normalize_domain(d: str) -> str:
    d = d.strip().lower().rstrip(".")
    return d[4:] if d.startswith("www.") else d


def normalize_domain_expr(col: str) -> pl.Expr:
    """`normalize_domain` as a polars expression."""
    return pl.col(col).str.strip_chars().str.to_lowercase().str.strip_chars_end(".").str.replace(r"^www\.", "")


def _norm_label(value, where: str) -> str:
    v = str(value).strip().lower()
    if v in _TRUE:
        return "educational"
    if v in _FALSE:
        return "other"
    raise ValueError(f"{where}: label {value!r} is not one of educational/other (or yes/no, true/false)")


def load_overrides(path: str | None) -> dict[str, str]:
    """Forced labels from CSV (columns domain,label) or JSON ({domain: label} or [{domain, label}])."""
    if not path:
        return {}
    p = Path(path).expanduser()
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json":
        data = json.loads(text)
        pairs = data.items() if isinstance(data, dict) else [(r["domain"], r["label"]) for r in data]
    else:
        rows = list(csv.reader(line for line in text.splitlines() if line.strip() and not line.startswith("#")))
        if rows and [c.strip().lower() for c in rows[0][:2]] == ["domain", "label"]:
            rows = rows[1:]
        pairs = [(r[0], r[1]) for r in rows if len(r) >= 2]
    return {normalize_domain(d): _norm_label(label, f"{p}: {d}") for d, label in pairs}


def overrides_hash(overrides: dict[str, str]) -> str | None:
    return content_hash(json.dumps(sorted(overrides.items()))) if overrides else None


def domains_fingerprint(rnd: int, scores_fp: str, doc_fps: list[str], *, min_domain_docs: int, n_samples: int,
                        overrides: dict[str, str], model: str, temperature: float, max_tokens: int) -> str:
    """Settings and upstream versions only: the per-run budget (max_llm_domains) and how many
    domains exist do not make a new version; new domains append rows to this one."""
    params = dict(round=rnd, min_domain_docs=min_domain_docs, n_samples=n_samples,
                  overrides=overrides_hash(overrides), temperature=temperature, max_tokens=max_tokens)
    return fingerprint(STAGE, params=params, code_version=CODE_VERSION, upstream=[scores_fp, *doc_fps],
                       prompt=load_prompt(PROMPT), model=model)


# A domain decided this way is never sent again in its version; a failed reply is kept with its
# reason, like a failed extraction (a new prompt or model, i.e. a new version, asks again).
FINAL_SOURCES = ("llm", "override", "failed")


def latest_labels(wh: Warehouse, fp: str) -> pl.DataFrame:
    """The newest row of each domain in a `domains` version (rows accumulate, run by run)."""
    return (wh.scan("domains", fp).sort("labelled_at", "domain")
            .unique("domain", keep="last", maintain_order=True).collect())


# A labeller that judges tells domains apart and says why; these shares say it did not.
ALARM_LABEL_SHARE = 0.95  # one label for at least this share of the domains
ALARM_PARROT_SHARE = 0.90  # one reason (normalized) for at least this share
MIN_REASON_WORDS = 3  # "one short sentence citing the evidence" has at least this many


def _share(n: int, total: int) -> str:
    """'all 59', or '57 of 59 (97%)' (never rounded up to 100% when it is not all)."""
    return f"all {total}" if n == total else f"{n} of {total} ({min(99, round(100 * n / total))}%)"


def normal_reason(reason: str | None, domain: str = "") -> str:
    """A reason reduced to its words, without the domain's name: a template that only swaps the
    site's name in ("example.com is educational") is one reason."""
    text = (reason or "").lower()
    name = domain.lower().split(".")[0]
    text = text.replace(domain.lower(), " ") if domain else text
    text = re.sub(rf"\b{re.escape(name)}\b", " ", text) if len(name) > 2 else text
    return " ".join(re.findall(r"\w+", text))


def _too_short(reason: str | None) -> bool:
    # Under 3 words, unless long (a sentence in a script without spaces is one "word").
    text = (reason or "").strip()
    return len(text.split()) < MIN_REASON_WORDS and len(text) < 20


def labeller_alarm(rows: pl.DataFrame, min_domains: int = 8) -> str | None:
    """A labeller that gives (almost) every domain the same label, no reasons, or one reason for
    all, is not evidence: say so.

    `rows` are a version's latest labels; None when nothing looks wrong (or fewer than
    `min_domains` LLM labels to judge). Pure: callers log it, record it and show it."""
    llm = rows.filter(pl.col("label_source") == "llm")
    n = llm.height
    if n < min_domains:
        return None
    problems = []
    label, top = llm["label"].value_counts(sort=True).row(0)
    if top >= ALARM_LABEL_SHARE * n:
        problems.append(f"{_share(top, n)} domains the LLM labelled are {label!r}")
    reasons, domains = llm["reason"].to_list(), llm["domain"].to_list()
    short = sum(map(_too_short, reasons))
    if short * 2 >= n:
        problems.append(f"{_share(short, n)} reasons are empty or shorter than {MIN_REASON_WORDS} words")
    common = Counter(normal_reason(r, d) for r, d in zip(reasons, domains) if not _too_short(r)).most_common(1)
    if common and common[0][1] >= ALARM_PARROT_SHARE * n:
        text, same = common[0]
        problems.append(f"{_share(same, n)} reasons are the same text ({text[:80]!r})")
    if not problems:
        return None
    # No '.' before the end of the problems: round 2's note keeps the first sentence.
    return ("degenerate domain labeller: " + "; ".join(problems) + ". A later recall round does not train on "
            "these LLM labels (overrides still count). Check them (webinstruct sql \"select domain, label, reason "
            "from domains\"), fix them with an overrides file, or use a stronger model")


def pending_domains(stats: pl.DataFrame, prev: pl.DataFrame, *, min_domain_docs: int, overrides: dict[str, str],
                    max_llm_domains: int | None) -> tuple[pl.DataFrame, set[str]]:
    """Domains that need a row now, and which of them are over this run's LLM budget.

    New domains always get a row; a domain already decided (llm, override, failed) never again; an
    undecided one (below_min_docs, over_budget) only when its outcome changes or it now goes to
    the LLM. So only new domains (and ones postponed by the budget) cost LLM calls.
    """
    final = prev.filter(pl.col("label_source").is_in(FINAL_SOURCES))["domain"]
    cand = stats.filter(~pl.col("domain").is_in(final.implode()))
    skip = over_budget(cand, min_domain_docs=min_domain_docs, overrides=overrides, max_llm_domains=max_llm_domains)
    outcome = (pl.when(normalize_domain_expr("domain").is_in(list(overrides))).then(pl.lit("override"))
               .when(pl.col("domain").is_in(list(skip))).then(pl.lit("over_budget"))
               .when(pl.col("docs_recalled") >= min_domain_docs).then(pl.lit("llm"))
               .otherwise(pl.lit("below_min_docs")))
    was = prev.select("domain", pl.col("label_source").alias("_was"))
    cand = (cand.with_columns(_now=outcome).join(was, on="domain", how="left")
            .filter(pl.col("_was").is_null() | (pl.col("_now") == "llm") | (pl.col("_now") != pl.col("_was")))
            .drop("_now", "_was"))
    return cand, skip & set(cand["domain"])


def domain_stats(wh: Warehouse, scores_fp: str, doc_fps: list[str], n_samples: int = 5) -> pl.DataFrame:
    """One row per registered domain: counts, mean score, top-scoring titles and URLs."""
    docs = pl.concat([wh.scan("documents", fp) for fp in doc_fps]).select("doc_id", "domain", "title", "url")
    scores = wh.scan("recall_scores", scores_fp).select("doc_id", "score", "kept")
    top = pl.col("score").rank("ordinal", descending=True).over("domain") <= n_samples
    return (
        scores.join(docs, on="doc_id", how="inner")
        .filter(pl.col("domain").is_not_null() & (pl.col("domain") != ""))
        # ties: doc_id decides, then title (a page read twice, as WARC and as WET, has one doc_id)
        .sort(["domain", "score", "doc_id", "title"], descending=[False, True, False, False], nulls_last=True)
        .with_columns(pl.col("title").fill_null("").str.slice(0, 150), is_top=top)
        .group_by("domain", maintain_order=True)
        .agg(docs_seen=pl.len(), docs_recalled=pl.col("kept").sum().cast(pl.Int64),
             mean_score=pl.col("score").mean().cast(pl.Float64),
             sample_titles=pl.col("title").filter(pl.col("is_top")),
             sample_urls=pl.col("url").filter(pl.col("is_top")))
        .collect()
    )


def user_message(row: dict) -> str:
    """The per-domain part of the request; it comes after the fixed prompt, which never varies."""
    pages = "\n".join(f"- {t or '(no title)'} | {u}" for t, u in zip(row["sample_titles"], row["sample_urls"]))
    return (f"Website: {row['domain']}\n"
            f"Pages crawled: {row['docs_seen']}; flagged as exam-like: {row['docs_recalled']} "
            f"(mean score {row['mean_score']:.2f})\n"
            f"Top pages (title | address):\n{pages}")


def over_budget(stats: pl.DataFrame, *, min_domain_docs: int, overrides: dict[str, str],
                max_llm_domains: int | None) -> set[str]:
    """Domains that qualify for the LLM but fall outside the top `max_llm_domains` by recalled docs."""
    if max_llm_domains is None:
        return set()
    ranked = stats.filter((pl.col("docs_recalled") >= min_domain_docs)
                          & ~normalize_domain_expr("domain").is_in(list(overrides))
                          ).sort(["docs_recalled", "mean_score", "domain"], descending=[True, True, False])
    return set(ranked["domain"].slice(max_llm_domains).to_list())


def label_rows(client, stats: pl.DataFrame, *, rnd: int, scores_fp: str, fp: str, shard: str, min_domain_docs: int,
               overrides: dict[str, str], model: str, response_model: type[pydantic.BaseModel] = DomainLabel,
               skip: set[str] = frozenset()) -> pl.DataFrame:
    """Label one chunk of domain stats: overrides, then the LLM for the big domains, else unlabelled.

    `client` is an LLMClient (anything with its `run`); it is only used when a domain needs the LLM.
    """
    from tasks.llm_client import LLMRequest  # the LLM layer is only needed when labelling

    system = load_prompt(PROMPT)
    out: dict[str, tuple[str, str | None, str, str | None]] = {}  # domain -> (label, reason, source, model)
    requests = []
    for row in stats.iter_rows(named=True):
        d = row["domain"]
        forced = overrides.get(normalize_domain(d))
        if forced:
            out[d] = (forced, "forced by the override file", "override", None)
        elif d in skip:
            out[d] = ("unlabelled", "outside the max_llm_domains budget (fewer recalled documents)",
                      "over_budget", None)
        elif row["docs_recalled"] >= min_domain_docs:
            requests.append(LLMRequest(item_id=d, response_model=response_model, messages=[
                {"role": "system", "content": system}, {"role": "user", "content": user_message(row)}]))
        else:
            out[d] = ("unlabelled", f"{row['docs_recalled']} recalled documents < min_domain_docs "
                      f"{min_domain_docs}", "below_min_docs", None)
    if requests:
        for res in client.run(requests, stage=STAGE, fingerprint=fp, shard=shard):
            label = getattr(res.parsed, "label", None) if res.status == "ok" else None
            if label in LABELS:
                out[res.item_id] = (label, getattr(res.parsed, "reason", None), "llm", model)
            else:
                why = res.error or f"unexpected label {label!r}"
                out[res.item_id] = ("failed", f"{res.status}: {why}"[:2000], "failed", model)
    labels = pl.DataFrame([(d, *v) for d, v in out.items()], orient="row",
                          schema={"domain": pl.String, "label": pl.String, "reason": pl.String,
                                  "label_source": pl.String, "model": pl.String})
    return stats.join(labels, on="domain", how="left").with_columns(
        round=pl.lit(rnd, pl.Int32), scores_fingerprint=pl.lit(scores_fp), labelled_at=pl.lit(now_utc()))
