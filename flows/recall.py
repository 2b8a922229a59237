"""Flow `recall`: seeds + documents -> two rounds of (train, score, label domains).

Round r: `recall_train` (one task, or none when the pinned model exists) -> `recall_score` (one
task per documents shard not scored yet) -> `domains` (one aggregation, then one LLM task per
chunk of new domains). Round 2 trains on the domains round 1 labelled.

Incremental: models are trained once per settings and pinned (`retrain` policy), so a new crawl
segment is only scored (its shards appended to the same recall_scores version) and only its new
domains are labelled. A changed setting (threshold, dim, prompt, model, overrides) or an explicit
retrain writes new versions beside the old ones, backfilled over every segment.
"""
import json
from typing import Optional

import polars as pl
from pydantic import Field
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.runners import RunnerSettings
from flows.runtime import (last_settings, pipeline_run, progress, remember_settings, run_logger,
                           run_shards, run_stage, stage)
from flows.settings import DomainSettings, ExtractSettings, RecallSettings
from tasks import domains as dom
from tasks import recall_score as rs
from tasks import recall_train as rt
from tasks.llm_client import LLMClient, LLMSettings
from warehouse import Warehouse, content_hash

DOMAIN_CHUNK = 500  # domains per LLM task (and per `domains` shard)
N_SAMPLES = 5  # top pages per domain shown to the LLM


@task(name="recall-train")
def train_task(data_dir: str, rnd: int, params: rt.TrainParams, doc_fps: list[str], seeds: list[str] | None,
               domains_fp: str | None, retrain: str, plan: rt.RoundPlan, prev_scores_fp: str | None) -> dict:
    row = rt.train_round(Warehouse(data_dir), rnd, params, doc_fps, seeds, domains_fp, retrain, plan, prev_scores_fp)
    row.pop("trained_at", None)
    return row


@task(name="recall-score-shard", retries=1, retry_delay_seconds=2)
def score_task(data_dir: str, model: rs.ScoringModel, doc_fp: str, shard: str, out_fp: str) -> dict:
    return rs.score_shard(Warehouse(data_dir), model, doc_fp, shard, out_fp)


@task(name="domains-label-shard", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def label_task(data_dir: str, rnd: int, scores_fp: str, fp: str, shard: str, stats: pl.DataFrame,
               min_domain_docs: int, overrides: dict[str, str], llm: LLMSettings, skip: set[str]) -> dict:
    wh = Warehouse(data_dir)
    if wh.has_shard("domains", fp, shard):
        return {"shard": shard, "skipped": True}
    rows = dom.label_rows(LLMClient(llm, wh), stats, rnd=rnd, scores_fp=scores_fp, fp=fp, shard=shard,
                          min_domain_docs=min_domain_docs, overrides=overrides, model=llm.model, skip=skip)
    wh.write_shard("domains", fp, shard, rows)
    return {"shard": shard, "skipped": False, "rows": rows.height}


def _train_round(wh: Warehouse, rid: str, rnd: int, params: rt.TrainParams, doc_fps: list[str],
                 seeds: list[str] | None, domains_fp: str | None, retrain: str, prev_scores_fp: str | None) -> dict:
    plan = rt.plan_round(wh, rnd, params, doc_fps, seeds, domains_fp, retrain, prev_scores_fp)
    fp = plan.fingerprint
    with stage(wh, run_id=rid, name=rt.STAGE, fingerprint=fp, outputs=["recall_models", "recall_examples"],
               params={**params.training_settings(), "round": rnd, "threshold": params.threshold, "retrain": retrain},
               upstream=[*doc_fps] + [u for u in (domains_fp, prev_scores_fp) if u], code_version=rt.CODE_VERSION) as sr:
        if wh.has_shard("recall_models", fp, "model"):  # pinned: no task at all
            row = wh.read_shard("recall_models", fp, "model").to_dicts()[0] | {"fingerprint": fp, "skipped": True}
        else:
            row = train_task(str(wh.root), rnd, params, doc_fps, seeds, domains_fp, retrain, plan, prev_scores_fp)
        sr.add(shards_total=1, shards_done=0 if row["skipped"] else 1, shards_skipped=int(row["skipped"]),
               rows_out=0 if row["skipped"] else row["n_pos"] + row["n_neg"])
    return row


def _score_round(wh: Warehouse, rid: str, model_row: dict, doc_fps: list[str]) -> tuple[str, dict]:
    model = rs.ScoringModel.from_row(model_row)
    out_fp = rs.scores_fingerprint(model.fingerprint, doc_fps)
    shards = [(fp, s) for fp in doc_fps for s in wh.shard_ids("documents", fp)]
    done = set(wh.shard_ids("recall_scores", out_fp))
    todo = [(fp, s) for fp, s in shards if s not in done]
    label = f"recall r{model.round} docs"
    progress(label, 0, sum(wh.shard_rows("documents", fp, s) for fp, s in todo))
    with stage(wh, run_id=rid, name=rs.STAGE, fingerprint=out_fp, outputs=["recall_scores"],
               params={"round": model.round, "threshold": model.threshold}, upstream=[model.fingerprint, *doc_fps],
               code_version=rs.CODE_VERSION) as sr:
        res = run_shards(score_task, [(str(wh.root), model, fp, s, out_fp) for fp, s in todo],
                         f"recall round {model.round}: scoring documents shards",
                         lambda r: (f"recall r{model.round} docs", r["rows"]))
        kept = sum(r["kept"] or 0 for r in res)
        sr.add(shards_total=len(shards), shards_done=len(todo), shards_skipped=len(shards) - len(todo),
               rows_in=sum(r["rows"] for r in res), rows_out=sum(r["rows"] for r in res))
        if res:
            sr.reasons = {"kept": kept, "not kept": sum(r["rows"] for r in res) - kept}
    counts = wh.scan("recall_scores", out_fp).select(
        docs_scored=pl.len(), docs_kept=pl.col("kept").sum()).collect().row(0, named=True)
    if todo:
        publish_histogram(wh, out_fp, model.round, model.threshold)
    return out_fp, counts


def publish_histogram(wh: Warehouse, scores_fp: str, rnd: int, threshold: float, bins: int = 10) -> None:
    """The score distribution of a round as a Prefect table artifact (is recall separating anything?)."""
    from flows.runtime import publish_table

    hist = (wh.scan("recall_scores", scores_fp)
            .select((pl.col("score") * bins).floor().clip(0, bins - 1).cast(pl.Int32).alias("bin"))
            .group_by("bin").len().collect())
    counts = dict(zip(hist["bin"].to_list(), hist["len"].to_list()))
    table = [{"score": f"{b / bins:.1f}-{(b + 1) / bins:.1f}", "documents": counts.get(b, 0),
              "recalled": "yes" if b / bins >= threshold else ""} for b in range(bins)]
    publish_table(f"recall-r{rnd}-scores", table, f"round {rnd} score histogram (threshold {threshold:.2f})")


def record_alarm(stage_row: dict, rnd: int, fp: str, alarm: str) -> None:
    """Say where users look that the labeller looks degenerate: the run's log, the stage_runs row
    (under params["alarm"]: the table has no column for warnings) and a markdown artifact."""
    run_logger().warning("round %d: %s", rnd, alarm)
    stage_row["params"] = json.dumps({**json.loads(stage_row["params"] or "{}"), "alarm": alarm},
                                     default=str, sort_keys=True)  # saved when the stage ends
    try:
        from prefect.artifacts import create_markdown_artifact
        from prefect.context import FlowRunContext

        if FlowRunContext.get() is not None:
            create_markdown_artifact(
                key=f"domains-r{rnd}-alarm", description=f"round {rnd}: the domain labeller looks degenerate",
                markdown=f"## Warning: domain labels of round {rnd} (version `{fp}`)\n\n{alarm}\n")
    except Exception as exc:  # noqa: BLE001 - an artifact must never fail a stage
        run_logger().warning("could not publish the labeller alarm artifact: %s", exc)


def _domains_round(wh: Warehouse, rid: str, rnd: int, scores_fp: str, doc_fps: list[str], ds: DomainSettings,
                   overrides: dict[str, str], llm: LLMSettings) -> tuple[str, dict]:
    fp = dom.domains_fingerprint(rnd, scores_fp, doc_fps, min_domain_docs=ds.min_domain_docs, n_samples=N_SAMPLES,
                                 overrides=overrides, model=llm.model, temperature=llm.temperature,
                                 max_tokens=llm.max_tokens)
    stats = dom.domain_stats(wh, scores_fp, doc_fps, N_SAMPLES)
    prev = dom.latest_labels(wh, fp)
    todo, skip = dom.pending_domains(stats, prev, min_domain_docs=ds.min_domain_docs, overrides=overrides,
                                     max_llm_domains=ds.max_llm_domains)
    # Shards are named by their order and their domains: a killed run that picks the same domains
    # again resumes the same shards (and LLM journals).
    base = len(wh.shard_ids("domains", fp))
    chunks = []
    for i in range(0, todo.height, DOMAIN_CHUNK):
        part = todo.slice(i, DOMAIN_CHUNK)
        chunks.append((f"{base + i // DOMAIN_CHUNK:05d}-{content_hash(chr(10).join(part['domain']), 8)}", part))
    needs_llm = todo.filter((pl.col("docs_recalled") >= ds.min_domain_docs) & ~pl.col("domain").is_in(list(skip))
                            & ~dom.normalize_domain_expr("domain").is_in(list(overrides)))
    with stage(wh, run_id=rid, name=dom.STAGE, fingerprint=fp, outputs=["domains", "llm_calls"],
               params={"round": rnd, "min_domain_docs": ds.min_domain_docs, "model": llm.model,
                       "base_urls": llm.base_urls, "overrides": dom.overrides_hash(overrides)},
               upstream=[scores_fp, *doc_fps], code_version=dom.CODE_VERSION) as sr:
        if needs_llm.height:
            LLMClient(llm, wh).check_server()  # fail fast, before any task, with a clear message
        progress(f"domains r{rnd}", 0, todo.height)
        run_shards(label_task, [(str(wh.root), rnd, scores_fp, fp, s, part, ds.min_domain_docs, overrides, llm, skip)
                                for s, part in chunks], f"domains round {rnd}: labelling",
                   lambda r: (f"domains r{rnd}", r.get("rows", 0)))
        sr.add(shards_total=base + len(chunks), shards_done=len(chunks), shards_skipped=base,
               rows_in=todo.height, rows_out=todo.height)
        if chunks:
            new = wh.scan("domains", fp).filter(pl.col("domain").is_in(todo["domain"].implode())).collect()
            sr.reasons = dict(new.group_by(pl.col("label") + " (" + pl.col("label_source") + ")").len().iter_rows())
        rows = dom.latest_labels(wh, fp)
        alarm = dom.labeller_alarm(rows)
        if alarm:
            record_alarm(sr.row, rnd, fp, alarm)
    summary = {
        "alarm": alarm,
        "domains": rows.height, "new_domains": todo.height,
        "labelled": rows.filter(pl.col("label_source").is_in(["llm", "override"])).height,
        "failed": rows.filter(pl.col("label") == "failed").height,
        "educational": sorted(rows.filter(pl.col("label") == "educational")["domain"].to_list()),
    }
    return fp, summary


@flow(name="recall", task_runner=ThreadPoolTaskRunner(max_workers=2))
def recall_flow(
    data_dir: Optional[str] = Field(None, description="Warehouse directory (default ./webinstruct-data)"),
    recall: RecallSettings = Field(RecallSettings(), description="fastText recall: threshold, retrain policy, training"),
    domains: DomainSettings = Field(DomainSettings(), description="Which domains the LLM labels"),
    llm: LLMSettings = Field(LLMSettings(), description="The LLM server and model (no API key here: see api_key_env)"),
    downstream: bool = Field(False, description="Then extract, refine and curate, with the settings they last ran with"),
    runner: Optional[RunnerSettings] = Field(None, description=(
        "Where shard tasks run: local threads (empty), or a Dask/Ray cluster (kind, address)")),
    run_id: Optional[str] = Field(None, description="Set by the pipeline flow; leave empty"),
) -> dict:
    """Recall educational pages: fastText on seeds, LLM-labelled domains, fastText again."""
    wh = Warehouse(data_dir)
    doc_fps = wh.current_fingerprints("documents")
    if not doc_fps:
        raise ValueError(f"no documents in {wh.root}: run `webinstruct ingest` first")
    params = rt.TrainParams(dim=recall.dim, epoch=recall.epoch, lr=recall.lr, word_ngrams=recall.word_ngrams,
                            min_count=recall.min_count, neg_sample=recall.neg_sample,
                            pos_neg_ratio=recall.pos_neg_ratio, pu_drop_score=recall.pu_drop_score,
                            languages=tuple(recall.languages) if recall.languages else None,
                            threshold=recall.threshold, thread=recall.threads)
    overrides = dom.load_overrides(domains.overrides)
    summary: dict = {"rounds": []}
    domains_fp = None
    run_params = {"recall": recall.model_dump(), "domains": domains.model_dump(), "model": llm.model}
    with pipeline_run(wh, "recall", run_params, run_id, runner) as rid:
        remember_settings(wh, recall=recall, domains=domains, recall_llm=llm)
        scores_fp = None
        for rnd in range(1, recall.rounds + 1):
            row = _train_round(wh, rid, rnd, params, doc_fps, recall.seeds, domains_fp, recall.retrain, scores_fp)
            scores_fp, counts = _score_round(wh, rid, row, doc_fps)
            dsum: dict = {"alarm": None, "domains": 0, "new_domains": 0, "labelled": 0, "failed": 0, "educational": []}
            if domains.enabled:
                domains_fp, dsum = _domains_round(wh, rid, rnd, scores_fp, doc_fps, domains, overrides, llm)
            notes = json.loads(row["params"]).get("notes", {})
            if notes.get("domain_labels") and rnd > 1:
                run_logger().warning("round %d: %s", rnd, notes["domain_labels"])
            summary["rounds"].append({
                "round": rnd, "model_fingerprint": row["fingerprint"], "trained": bool(row.get("fitted")),
                **{k: row[k] for k in ("precision", "recall", "f1", "threshold", "n_pos", "n_neg")},
                **{k: row.get(k) for k in rt.EVAL_COLUMNS}, "notes": notes,
                "scores_fingerprint": scores_fp, **counts, "domains_fingerprint": domains_fp, **dsum,
            })
            run_logger().info("round %d: model %s (%s), %d/%d pages kept, %d new domain(s)", rnd, row["fingerprint"],
                              "trained" if row.get("fitted") else "pinned", counts["docs_kept"] or 0,
                              counts["docs_scored"], dsum["new_domains"])
        summary["final_scores_fingerprint"] = summary["rounds"][-1]["scores_fingerprint"]
        if downstream:
            from flows.extract import extract_flow

            summary["extract"] = run_stage(
                extract_flow, data_dir=str(wh.root), llm=last_settings(wh, "extract_llm", LLMSettings, llm),
                extract=last_settings(wh, "extract", ExtractSettings), downstream=True, run_id=rid)
    return summary
