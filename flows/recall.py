"""Flow `recall`: seeds + documents -> two rounds of (train, score, label domains).

Round r: `recall_train` (one task) -> `recall_score` (one task per documents shard) ->
`domains` (one aggregation, then one LLM task per chunk of domains). Round 2 trains on the
domains round 1 labelled. Every stage output is fingerprinted, so a rerun with the same
settings skips everything, and a changed setting (threshold, dim, prompt, model, overrides)
writes new versions beside the old ones. The extraction stage reads the round-2 scores.
"""
from __future__ import annotations

import polars as pl
import pyarrow.parquet as pq
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

from flows.runtime import pipeline_run, progress
from tasks import domains as dom
from tasks import recall_score as rs
from tasks import recall_train as rt
from tasks.llm_client import LLMClient, LLMSettings
from warehouse import Warehouse
from warehouse.catalog import write_catalog
from warehouse.store import write_parquet_atomic

DOMAIN_CHUNK = 500  # domains per LLM task (and per `domains` shard)
N_SAMPLES = 5  # top pages per domain shown to the LLM


@task(name="recall-train")
def train_task(data_dir: str, rnd: int, params: rt.TrainParams, doc_fps: list[str], seeds: list[str] | None,
               domains_fp: str | None) -> dict:
    row = rt.train_round(Warehouse(data_dir), rnd, params, doc_fps, seeds, domains_fp)
    row.pop("trained_at", None)
    return row


@task(name="recall-score-shard", retries=1, retry_delay_seconds=2)
def score_task(data_dir: str, model: rs.ScoringModel, doc_fp: str, shard: str, out_fp: str) -> dict:
    res = rs.score_shard(Warehouse(data_dir), model, doc_fp, shard, out_fp)
    progress(f"recall r{model.round} docs", res["rows"])
    return res


@task(name="domains-label-shard", retries=1, retry_delay_seconds=2)
def label_task(data_dir: str, rnd: int, scores_fp: str, fp: str, shard: str, lo: int, hi: int,
               min_domain_docs: int, overrides: dict[str, str], llm: LLMSettings, skip: set[str]) -> dict:
    wh = Warehouse(data_dir)
    if wh.has_shard("domains", fp, shard):
        return {"shard": shard, "skipped": True}
    stats = pl.read_parquet(wh.side_dir("domains", fp) / "stats.parquet").slice(lo, hi - lo)
    rows = dom.label_rows(LLMClient(llm, wh), stats, rnd=rnd, scores_fp=scores_fp, fp=fp, shard=shard,
                          min_domain_docs=min_domain_docs, overrides=overrides, model=llm.model, skip=skip)
    wh.write_shard("domains", fp, shard, rows)
    progress(f"domains r{rnd}", rows.height)
    return {"shard": shard, "skipped": False}


def _score_round(wh: Warehouse, rid: str, model_row: dict, doc_fps: list[str]) -> tuple[str, dict]:
    model = rs.ScoringModel.from_row(model_row)
    out_fp = rs.scores_fingerprint(model.fingerprint, doc_fps)
    shards = [(fp, s) for fp in doc_fps for s in wh.shard_ids("documents", fp)]
    todo = [(fp, s) for fp, s in shards if not wh.has_shard("recall_scores", out_fp, s)]
    progress(f"recall r{model.round} docs", 0, sum(
        pq.ParquetFile(wh.shard_path("documents", fp, s)).metadata.num_rows for fp, s in todo))
    with wh.stage_run(run_id=rid, stage=rs.STAGE, fingerprint=out_fp, outputs=["recall_scores"],
                      params={"round": model.round, "threshold": model.threshold}, upstream=[model.fingerprint, *doc_fps],
                      code_version=rs.CODE_VERSION) as sr:
        futures = [score_task.submit(str(wh.root), model, fp, s, out_fp) for fp, s in todo]
        done = [f.result() for f in futures]
        sr.add(shards_total=len(shards), shards_done=len(todo), shards_skipped=len(shards) - len(todo),
               rows_in=sum(r["rows"] for r in done), rows_out=sum(r["rows"] for r in done))
    counts = wh.scan("recall_scores", out_fp).select(
        docs_scored=pl.len(), docs_kept=pl.col("kept").sum()).collect().row(0, named=True)
    return out_fp, counts


def _domains_round(wh: Warehouse, rid: str, rnd: int, scores_fp: str, doc_fps: list[str], min_domain_docs: int,
                   overrides: dict[str, str], llm: LLMSettings, max_llm_domains: int | None) -> tuple[str, dict]:
    fp = dom.domains_fingerprint(rnd, scores_fp, doc_fps, min_domain_docs=min_domain_docs, n_samples=N_SAMPLES,
                                 chunk=DOMAIN_CHUNK, overrides=overrides, model=llm.model,
                                 temperature=llm.temperature, max_tokens=llm.max_tokens,
                                 max_llm_domains=max_llm_domains)
    stats_path = wh.side_dir("domains", fp) / "stats.parquet"
    if not stats_path.exists():
        write_parquet_atomic(dom.domain_stats(wh, scores_fp, doc_fps, N_SAMPLES), stats_path)
    stats = pl.read_parquet(stats_path)
    chunks = [(f"{i // DOMAIN_CHUNK:05d}", i, min(i + DOMAIN_CHUNK, stats.height))
              for i in range(0, stats.height, DOMAIN_CHUNK)]
    todo = [c for c in chunks if not wh.has_shard("domains", fp, c[0])]
    skip = dom.over_budget(stats, min_domain_docs=min_domain_docs, overrides=overrides,
                           max_llm_domains=max_llm_domains)
    needs_llm = stats.filter((pl.col("docs_recalled") >= min_domain_docs) & ~pl.col("domain").is_in(list(skip))
                             & ~dom.normalize_domain_expr("domain").is_in(list(overrides)))
    with wh.stage_run(run_id=rid, stage=dom.STAGE, fingerprint=fp, outputs=["domains", "llm_calls"],
                      params={"round": rnd, "min_domain_docs": min_domain_docs, "model": llm.model,
                              "overrides": dom.overrides_hash(overrides)},
                      upstream=[scores_fp, *doc_fps], code_version=dom.CODE_VERSION) as sr:
        if todo and needs_llm.height:
            LLMClient(llm, wh).check_server()  # fail fast, before any task, with a clear message
        progress(f"domains r{rnd}", 0, stats.height)
        futures = [label_task.submit(str(wh.root), rnd, scores_fp, fp, s, lo, hi, min_domain_docs, overrides, llm,
                                     skip) for s, lo, hi in todo]
        [f.result() for f in futures]
        sr.add(shards_total=len(chunks), shards_done=len(todo), shards_skipped=len(chunks) - len(todo),
               rows_in=stats.height, rows_out=stats.height)
    rows = wh.scan("domains", fp).collect()
    summary = {
        "domains": rows.height,
        "labelled": rows.filter(pl.col("label_source").is_in(["llm", "override"])).height,
        "failed": rows.filter(pl.col("label") == "failed").height,
        "educational": sorted(rows.filter(pl.col("label") == "educational")["domain"].to_list()),
    }
    return fp, summary


@flow(name="recall", task_runner=ThreadPoolTaskRunner(max_workers=2))
def recall_flow(data_dir: str | None = None, run_id: str | None = None, seeds: list[str] | None = None,
                dim: int = 256, epoch: int = 3, word_ngrams: int = 2, lr: float = 1.0, min_count: int = 1,
                neg_sample: int | None = None, pos_neg_ratio: float = 1.0, threshold: float | None = 0.5,
                min_domain_docs: int = 1, max_llm_domains: int | None = None, domain_overrides: str | None = None,
                llm: LLMSettings = LLMSettings(), rounds: int = 2) -> dict:
    """Recall educational pages: fastText on seeds, LLM-labelled domains, fastText again.

    threshold: score at or above which a document is kept (None: the held-out best-F1 one).
    seeds: seed files (JSONL/JSON/Parquet/text); default: the bundled GSM8K, AQuA-RAT, SVAMP.
    max_llm_domains: label at most this many domains per round with the LLM (those with the most
    recalled docs); the rest stay `unlabelled` (label_source over_budget). None: no limit.
    """
    wh = Warehouse(data_dir)
    doc_fps = wh.current_fingerprints("documents")
    if not doc_fps:
        raise ValueError(f"no documents in {wh.root}: run `webinstruct ingest` first")
    params = rt.TrainParams(dim=dim, epoch=epoch, lr=lr, word_ngrams=word_ngrams, min_count=min_count,
                            neg_sample=neg_sample, pos_neg_ratio=pos_neg_ratio, threshold=threshold)
    overrides = dom.load_overrides(domain_overrides)
    run_params = dict(seeds=seeds, dim=dim, epoch=epoch, word_ngrams=word_ngrams, lr=lr, min_count=min_count,
                      neg_sample=neg_sample, pos_neg_ratio=pos_neg_ratio, threshold=threshold,
                      min_domain_docs=min_domain_docs, max_llm_domains=max_llm_domains,
                      domain_overrides=domain_overrides, model=llm.model,
                      rounds=rounds)
    summary: dict = {"rounds": []}
    domains_fp = None
    with pipeline_run(wh, "recall", run_params, run_id) as rid:
        for rnd in range(1, rounds + 1):
            key = rt.train_key(wh, rnd, params, doc_fps, seeds, domains_fp)
            with wh.stage_run(run_id=rid, stage=rt.STAGE, fingerprint=rt.model_fingerprint(key, threshold),
                              outputs=["recall_models", "recall_examples"],
                              params={**params.training_settings(), "round": rnd, "threshold": threshold},
                              upstream=[*doc_fps] + ([domains_fp] if domains_fp else []),
                              code_version=rt.CODE_VERSION) as sr:
                row = train_task(str(wh.root), rnd, params, doc_fps, seeds, domains_fp)
                sr.add(shards_total=1, shards_done=0 if row["skipped"] else 1, shards_skipped=int(row["skipped"]),
                       rows_out=row["n_pos"] + row["n_neg"])
            scores_fp, counts = _score_round(wh, rid, row, doc_fps)
            domains_fp, dsum = _domains_round(wh, rid, rnd, scores_fp, doc_fps, min_domain_docs, overrides, llm,
                                              max_llm_domains)
            summary["rounds"].append({
                "round": rnd, "model_fingerprint": row["fingerprint"], "trained": not row["skipped"],
                **{k: row[k] for k in ("precision", "recall", "f1", "threshold", "n_pos", "n_neg")},
                "scores_fingerprint": scores_fp, **counts, "domains_fingerprint": domains_fp, **dsum,
            })
    write_catalog(wh)
    summary["final_scores_fingerprint"] = summary["rounds"][-1]["scores_fingerprint"] if rounds else None
    return summary
