"""Flow `curate`: qa_refined -> dedup -> decontaminate -> dataset (-> export), shard by shard.

Every step only does the qa_refined (and documents) shards it has not done yet under the current
settings, so a scheduled run over a new crawl segment adds that segment's shards; dedup batches
run one after another (each sees the index the previous one wrote), decontamination and dataset
shards run in parallel.
"""
from __future__ import annotations

from typing import Literal

from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

from flows.runtime import pipeline_run, progress, total
from tasks import decontaminate as decon
from tasks import dedup, export
from warehouse import Warehouse
from warehouse.catalog import write_catalog


@task(name="dedup-batch", retries=1, retry_delay_seconds=2)
def dedup_batch_task(data_dir: str, params: dedup.DedupParams, out_fp: str, shards: list[tuple[str, str]]) -> dict:
    res = dedup.dedup_batch(Warehouse(data_dir), params, out_fp, shards)
    progress("dedup", len(shards))
    return res


@task(name="decontaminate-shard", retries=1, retry_delay_seconds=2)
def decontaminate_task(data_dir: str, params: decon.DecontamParams, out_fp: str, kind: str, fp: str,
                       shard: str) -> dict:
    res = decon.decontaminate_shard(Warehouse(data_dir), params, out_fp, kind, fp, shard)
    progress("decontaminate", 1)
    return res


@task(name="dataset-shard", retries=1, retry_delay_seconds=2)
def dataset_task(data_dir: str, out_fp: str, refined_fp: str, shard: str, dedup_fp: str, decon_fp: str,
                 doc_fps: list[str]) -> dict:
    res = export.build_dataset_shard(Warehouse(data_dir), out_fp, refined_fp, shard, dedup_fp, decon_fp, doc_fps)
    progress("dataset", 1)
    return res


@flow(name="curate", task_runner=ThreadPoolTaskRunner(max_workers=2))
def curate_flow(data_dir: str | None = None, run_id: str | None = None,
                fields: Literal["question", "question+answer"] = "question", shingle_size: int = 3,
                num_perm: int = 64, bands: int = 32, threshold: float = 0.6, per_model: bool = False,
                benchmarks: list[str] | None = None, decontaminate_documents: bool = False,
                export_dir: str | None = None, export_format: Literal["parquet", "jsonl"] = "parquet") -> dict:
    """Deduplicate and decontaminate the refined pairs, build `dataset`, and export it if asked.

    benchmarks: bundled names (gsm8k, math, mmlu_stem, theoremqa, bbh) or `[name=]path:field`;
    default all bundled ones. decontaminate_documents: also drop pairs of pages that contain
    benchmark text.
    """
    wh = Warehouse(data_dir)
    root = str(wh.root)
    refined_fps = wh.current_fingerprints("qa_refined")
    doc_fps = wh.current_fingerprints("documents")
    dp = dedup.DedupParams(fields=fields, shingle_size=shingle_size, num_perm=num_perm, bands=bands,
                           threshold=threshold, per_model=per_model)
    cp = decon.DecontamParams(benchmarks=tuple(benchmarks) if benchmarks else None, documents=decontaminate_documents)
    decon_up = refined_fps + (doc_fps if decontaminate_documents else [])
    dedup_fp, decon_fp = dp.fingerprint(refined_fps), cp.fingerprint(decon_up)
    data_fp = export.dataset_fingerprint(dedup_fp, decon_fp, refined_fps, doc_fps)
    flow_params = dict(fields=fields, shingle_size=shingle_size, num_perm=num_perm, bands=bands,
                       threshold=threshold, per_model=per_model, benchmarks=benchmarks,
                       decontaminate_documents=decontaminate_documents, export_dir=export_dir)
    summary: dict = {"dedup_fingerprint": dedup_fp, "decontaminate_fingerprint": decon_fp,
                     "dataset_fingerprint": data_fp}
    n_refined = sum(len(wh.shard_ids("qa_refined", fp)) for fp in refined_fps)
    n_docs = sum(len(wh.shard_ids("documents", fp)) for fp in doc_fps) if decontaminate_documents else 0

    def counts(todo: list, n_all: int, res: list[dict], out_key: str) -> dict:
        return dict(shards_total=n_all, shards_done=len(todo), shards_skipped=n_all - len(todo),
                    rows_in=total(res, "rows_in"), rows_out=total(res, out_key))

    with pipeline_run(wh, "curate", flow_params, run_id) as rid:
        dedup_settings = {k: v for k, v in vars(dp).items() if k != "batch_rows"}
        with wh.stage_run(run_id=rid, stage=dedup.STAGE, fingerprint=dedup_fp,
                          outputs=["qa_duplicates", dedup.INDEX_TABLE], params=dedup_settings,
                          upstream=refined_fps, code_version=dedup.CODE_VERSION) as sr:
            todo = dedup.pending_shards(wh, dedup_fp, refined_fps)
            progress("dedup", 0, len(todo))
            # sequential on purpose: each batch is checked against what the earlier ones kept
            res = [dedup_batch_task(root, dp, dedup_fp, batch) for batch in dedup.plan_batches(wh, todo, dp.batch_rows)]
            sr.add(**counts(todo, n_refined, res, "kept"))
            summary.update(pairs=total(res, "rows_in"), duplicates_dropped=total(res, "dropped"))

        with wh.stage_run(run_id=rid, stage=decon.STAGE, fingerprint=decon_fp, outputs=[decon.TABLE],
                          params=cp.settings(), upstream=decon_up, code_version=decon.CODE_VERSION) as sr:
            todo = decon.pending(wh, decon_fp, refined_fps, doc_fps if decontaminate_documents else [])
            progress("decontaminate", 0, len(todo))
            futures = [decontaminate_task.submit(root, cp, decon_fp, k, fp, s) for k, fp, s in todo]
            res = [f.result() for f in futures]
            sr.add(**counts(todo, n_refined + n_docs, res, "contaminated"))
            summary.update(
                contaminated_pairs=sum(r["contaminated"] for r in res if r["kind"] == "pair"),
                contaminated_documents=sum(r["contaminated"] for r in res if r["kind"] == "document"))

        with wh.stage_run(run_id=rid, stage=export.STAGE, fingerprint=data_fp, outputs=["dataset"], params={},
                          upstream=[dedup_fp, decon_fp, *refined_fps, *doc_fps],
                          code_version=export.CODE_VERSION) as sr:
            done = set(wh.shard_ids("dataset", data_fp))
            todo = [(fp, s) for fp in refined_fps for s in wh.shard_ids("qa_refined", fp)
                    if dedup.shard_name(fp, s) not in done]
            progress("dataset", 0, len(todo))
            futures = [dataset_task.submit(root, data_fp, fp, s, dedup_fp, decon_fp, doc_fps) for fp, s in todo]
            res = [f.result() for f in futures]
            sr.add(**counts(todo, n_refined, res, "rows_out"))
    write_catalog(wh)
    if export_dir:
        summary["export"] = export.export_dataset(wh, export_dir, export_format)
    summary["funnel"] = export.funnel(wh).to_dicts()
    return summary
