"""Flow `curate`: qa_refined -> dedup -> decontaminate -> dataset (-> export), shard by shard.

Every step only does the qa_refined (and documents) shards it has not done yet under the current
settings, so a scheduled run over a new crawl segment adds that segment's shards; dedup batches
run one after another (each sees the index the previous one wrote), decontamination and dataset
shards run in parallel.
"""
from typing import Optional

from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

from pydantic import Field

from flows.runners import RunnerSettings
from flows.runtime import pipeline_run, progress, remember_settings, run_logger, run_shards, stage, total
from flows.settings import CurateSettings, ExportSettings
from tasks import decontaminate as decon
from tasks import dedup
from tasks import export as export_mod
from tasks.llm_settings import LLMSettings
from warehouse import Warehouse


@task(name="dedup-batch", retries=1, retry_delay_seconds=2)
def dedup_batch_task(data_dir: str, params: dedup.DedupParams, out_fp: str, shards: list[tuple[str, str]]) -> dict:
    res = dedup.dedup_batch(Warehouse(data_dir), params, out_fp, shards)
    progress("dedup", len(shards))
    return res


@task(name="decontaminate-shard", retries=1, retry_delay_seconds=2)
def decontaminate_task(data_dir: str, params: decon.DecontamParams, out_fp: str, kind: str, fp: str,
                       shard: str, llm: Optional[LLMSettings]) -> dict:
    return decon.decontaminate_shard(Warehouse(data_dir), params, out_fp, kind, fp, shard, llm)


@task(name="dataset-shard", retries=1, retry_delay_seconds=2)
def dataset_task(data_dir: str, out_fp: str, refined_fp: str, shard: str, dedup_fp: str, decon_fp: str,
                 doc_fps: list[str], params: export_mod.DatasetParams, refined_fps: list[str]) -> dict:
    return export_mod.build_dataset_shard(Warehouse(data_dir), out_fp, refined_fp, shard, dedup_fp, decon_fp, doc_fps,
                                          params=params, refined_fps=refined_fps)


@flow(name="curate", task_runner=ThreadPoolTaskRunner(max_workers=2))
def curate_flow(
    data_dir: Optional[str] = Field(None, description="Warehouse directory (default ./webinstruct-data)"),
    curate: CurateSettings = Field(CurateSettings(), description="Dedup and decontamination"),
    export: ExportSettings = Field(ExportSettings(), description="Where and how the dataset is exported"),
    llm: LLMSettings = Field(LLMSettings(), description="The LLM server for the contamination judge (curate.llm_judge)"),
    runner: Optional[RunnerSettings] = Field(None, description=(
        "Where shard tasks run: local threads (empty), or a Dask/Ray cluster (kind, address)")),
    run_id: Optional[str] = Field(None, description="Set by the pipeline flow; leave empty"),
) -> dict:
    """Deduplicate and decontaminate the refined pairs, build `dataset`, and export it if asked."""
    wh = Warehouse(data_dir)
    root = str(wh.root)
    refined_fps = wh.current_fingerprints("qa_refined")
    doc_fps = wh.current_fingerprints("documents")
    keep_unrefined = curate.unrefined_pairs == "keep"
    dp = dedup.DedupParams(fields=curate.dedup_fields, shingle_size=curate.shingle_size, num_perm=curate.num_perm,
                           bands=curate.bands, threshold=curate.dedup_threshold, per_model=curate.per_model,
                           keep_unrefined=keep_unrefined)
    benchmarks = curate.benchmark_specs()
    cp = decon.DecontamParams(benchmarks=tuple(benchmarks) if benchmarks else None,
                              documents=curate.decontaminate_documents, keep_unrefined=keep_unrefined,
                              stop_corpus=None if curate.stop_ngrams else (), semantic=curate.semantic_params(llm.model))
    judge_llm = llm if curate.llm_judge else None
    xp = export_mod.DatasetParams(keep_unrefined=keep_unrefined, min_answer_agreement=curate.min_answer_agreement)
    decon_docs = doc_fps if curate.decontaminate_documents else []
    decon_up = refined_fps + decon_docs
    dedup_fp, decon_fp = dp.fingerprint(refined_fps), cp.fingerprint(decon_up)
    data_fp = export_mod.dataset_fingerprint(dedup_fp, decon_fp, refined_fps, doc_fps, xp)
    summary: dict = {"dedup_fingerprint": dedup_fp, "decontaminate_fingerprint": decon_fp,
                     "dataset_fingerprint": data_fp}
    n_refined = sum(len(wh.shard_ids("qa_refined", fp)) for fp in refined_fps)
    n_docs = sum(len(wh.shard_ids("documents", fp)) for fp in decon_docs)

    def counts(todo: list, n_all: int, res: list[dict], out_key: str) -> dict:
        return dict(shards_total=n_all, shards_done=len(todo), shards_skipped=n_all - len(todo),
                    rows_in=total(res, "rows_in"), rows_out=total(res, out_key))

    with pipeline_run(wh, "curate", {"curate": curate.model_dump(), "export": export.model_dump()}, run_id, runner) as rid:
        remember_settings(wh, curate=curate, export=export)
        with stage(wh, run_id=rid, name=dedup.STAGE, fingerprint=dedup_fp, outputs=["qa_duplicates", dedup.INDEX_TABLE],
                   params={k: v for k, v in vars(dp).items() if k != "batch_rows"}, upstream=refined_fps,
                   code_version=dedup.CODE_VERSION) as sr:
            todo = dedup.pending_shards(wh, dedup_fp, refined_fps)
            progress("dedup", 0, len(todo))
            # sequential on purpose: each batch is checked against what the earlier ones kept
            res = [dedup_batch_task(root, dp, dedup_fp, batch) for batch in dedup.plan_batches(wh, todo, dp.batch_rows)]
            sr.add(**counts(todo, n_refined, res, "kept"))
            if res:
                sr.reasons = {"kept": total(res, "kept"), "duplicate": total(res, "dropped")}
            summary.update(pairs=total(res, "rows_in"), duplicates_dropped=total(res, "dropped"))

        with stage(wh, run_id=rid, name=decon.STAGE, fingerprint=decon_fp,
                   outputs=[decon.TABLE, *(["llm_calls"] if judge_llm else [])],
                   params=cp.settings(), upstream=decon_up, code_version=decon.CODE_VERSION) as sr:
            todo = decon.pending(wh, decon_fp, refined_fps, decon_docs)
            progress("decontaminate", 0, len(todo))
            if todo and judge_llm:  # fail fast, before any task starts, with what to start
                from tasks.llm_client import LLMClient
                LLMClient(judge_llm, wh).check_server()
            res = run_shards(decontaminate_task, [(root, cp, decon_fp, k, fp, s, judge_llm) for k, fp, s in todo],
                             "decontaminate", lambda r: ("decontaminate", 1))
            sr.add(**counts(todo, n_refined + n_docs, res, "contaminated"))
            summary.update(
                contaminated_pairs=sum(r["contaminated"] for r in res if r["kind"] == "pair"),
                contaminated_documents=sum(r["contaminated"] for r in res if r["kind"] == "document"),
                rephrased_pairs=sum(r["rephrased"] for r in res))
            if res:
                sr.reasons = {"contaminated pairs": summary["contaminated_pairs"],
                              "of which rephrased": summary["rephrased_pairs"],
                              "contaminated pages": summary["contaminated_documents"]}

        with stage(wh, run_id=rid, name=export_mod.STAGE, fingerprint=data_fp, outputs=["dataset"],
                   params=xp.settings(), upstream=[dedup_fp, decon_fp, *refined_fps, *doc_fps],
                   code_version=export_mod.CODE_VERSION) as sr:
            done = set(wh.shard_ids("dataset", data_fp))
            todo = [(fp, s) for fp in refined_fps for s in wh.shard_ids("qa_refined", fp)
                    if dedup.shard_name(fp, s) not in done]
            progress("dataset", 0, len(todo))
            res = run_shards(dataset_task, [(root, data_fp, fp, s, dedup_fp, decon_fp, doc_fps, xp, refined_fps)
                                            for fp, s in todo], "dataset", lambda r: ("dataset", 1))
            sr.add(**counts(todo, n_refined, res, "rows_out"))
            summary.update(new_rows=total(res, "rows_out"), refiners_disagree=total(res, "disagreement"),
                           unrefined_rows=total(res, "unrefined"))
            if res:
                sr.reasons = {"kept": total(res, "rows_out"), "refiners disagree": total(res, "disagreement"),
                              "duplicate or contaminated": total(res, "rows_in") - total(res, "rows_out")
                              - total(res, "disagreement")}
        if export.dir:
            summary["export"] = export_mod.export_dataset(wh, export.dir, export.format)
            run_logger().info("exported %d rows to %s", summary["export"]["rows"], summary["export"]["out_dir"])
    summary["funnel"] = export_mod.funnel(wh).to_dicts()
    return summary
