"""Stage `export`: the `dataset` table, the funnel, and a Hugging Face `datasets` directory.

`dataset` = refined pairs with status ok (plus, with `keep_unrefined`, the extracted pairs that
stand in for refinements which failed verification: `refined` = false), minus pairs dropped by
dedup, minus pairs (or pairs of pages, level='document') found in `qa_contamination`, minus pairs
whose refiners disagree on the final answer (`answer_agreement` below `min_answer_agreement`;
agreement is measured across every current refiner version of the same shard); with lineage:
refined_id, qa_id, doc_id, url, domain, crawl, refiner model and prompt fingerprint. One dataset
shard per qa_refined shard (dedup and decontamination write one shard per qa_refined shard too),
so a new crawl segment only adds shards.

`export_dataset` writes `OUT/data/train-0000x-of-0000n.parquet|jsonl` plus `OUT/README.md` (a
dataset card with the funnel, crawl sources, models, prompt fingerprints, dedup and
decontamination settings): `datasets.load_dataset("parquet", data_dir=OUT)` loads it.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from tasks.refine_verify import answer_agreement, usable
from warehouse import Warehouse, fingerprint, now_utc
from warehouse.store import is_url, upload_tree

STAGE = "export"
CODE_VERSION = "2"  # 2: columns refined and answer_agreement; unrefined stand-ins; agreement filter


@dataclass(frozen=True)
class DatasetParams:
    keep_unrefined: bool = True  # keep the extracted pair when its refinement failed verification
    min_answer_agreement: float | None = 1.0  # None: keep pairs whatever their refiners' agreement

    def settings(self) -> dict:
        return {"unrefined_pairs": "keep" if self.keep_unrefined else "drop",
                "min_answer_agreement": self.min_answer_agreement}


def dataset_fingerprint(dedup_fp: str, decon_fp: str, refined_fps: list[str], doc_fps: list[str],
                        params: DatasetParams = DatasetParams()) -> str:
    return fingerprint(STAGE, params=params.settings(), code_version=CODE_VERSION,
                       upstream=[dedup_fp, decon_fp, *refined_fps, *doc_fps])


def contaminated_documents(wh: Warehouse, decon_fp: str) -> pl.DataFrame:
    files = [str(wh.shard_path("qa_contamination", decon_fp, s))
             for s in wh.shard_ids("qa_contamination", decon_fp) if s.startswith("doc-")]
    if not files:
        return pl.DataFrame(schema={"doc_id": pl.String})
    return pl.scan_parquet(files).filter(pl.col("flagged").fill_null(True)).select(pl.col("id").alias("doc_id")).unique().collect()


def build_dataset_shard(wh: Warehouse, out_fp: str, refined_fp: str, shard: str, dedup_fp: str,
                        decon_fp: str, doc_fps: list[str], bad_docs: pl.DataFrame | None = None,
                        params: DatasetParams = DatasetParams(), refined_fps: list[str] | None = None) -> dict:
    """Write the dataset shard of one qa_refined shard (needs its dedup and decontamination shards).

    `refined_fps`: the refiner versions whose same shard the answer agreement is measured over
    (default: this version alone, so agreement is null)."""
    from tasks.decontaminate import pair_shard
    from tasks.dedup import shard_name

    refined = wh.read_shard("qa_refined", refined_fp, shard).filter(usable(params.keep_unrefined))
    dropped = wh.read_shard("qa_duplicates", dedup_fp, shard_name(refined_fp, shard)).filter(~pl.col("kept"))
    dirty = wh.read_shard("qa_contamination", decon_fp, pair_shard(refined_fp, shard)).filter(pl.col("flagged").fill_null(True))
    bad_docs = contaminated_documents(wh, decon_fp) if bad_docs is None else bad_docs
    clean = (refined.join(dropped.select("refined_id"), on="refined_id", how="anti")
             .join(dirty.select(pl.col("id").alias("refined_id")).unique(), on="refined_id", how="anti")
             .join(bad_docs, on="doc_id", how="anti")
             .join(shard_agreement(wh, refined_fps or [refined_fp], shard, params), on="refined_id", how="left"))
    agrees = pl.lit(True) if params.min_answer_agreement is None else (
        pl.col("answer_agreement").is_null() | (pl.col("answer_agreement") >= params.min_answer_agreement))
    disagreeing = clean.filter(~agrees).height
    clean = clean.filter(agrees)
    docs = _documents(wh, doc_fps, clean["doc_id"].unique())
    rows = clean.join(docs, on="doc_id", how="left").select(
        "refined_id", "question", "answer", "qa_id", "doc_id", "url", "domain",
        pl.col("model").alias("refiner_model"), "prompt_fingerprint", "crawl",
        (pl.col("status") == "ok").alias("refined"), "answer_agreement")
    wh.write_shard("dataset", out_fp, shard_name(refined_fp, shard), rows)
    return {"rows_in": refined.height, "rows_out": rows.height, "disagreement": disagreeing,
            "unrefined": int((~rows["refined"]).sum())}


def shard_agreement(wh: Warehouse, refined_fps: list[str], shard: str, params: DatasetParams) -> pl.DataFrame:
    """refined_id -> answer_agreement over the refiner versions of one shard (they share the
    qa_extracted shard ids, so a pair's every refinement is in the same-named shard)."""
    frames = [wh.read_shard("qa_refined", fp, shard).filter(usable(params.keep_unrefined))
              .select("qa_id", "refined_id", "answer")
              for fp in dict.fromkeys(refined_fps) if wh.has_shard("qa_refined", fp, shard)]
    if not frames:
        return pl.DataFrame(schema={"refined_id": pl.String, "answer_agreement": pl.Float64})
    return answer_agreement(pl.concat(frames))


def _documents(wh: Warehouse, doc_fps: list[str], doc_ids: pl.Series) -> pl.DataFrame:
    frames = [pl.scan_parquet(str(wh.version_dir("documents", fp) / "part-*.parquet"))
              for fp in doc_fps if wh.shard_ids("documents", fp)]
    if not frames or doc_ids.is_empty():
        return pl.DataFrame(schema={"doc_id": pl.String, "url": pl.String, "domain": pl.String, "crawl": pl.String})
    return (pl.concat(frames, how="diagonal_relaxed").select("doc_id", "url", "domain", "crawl")
            .filter(pl.col("doc_id").is_in(doc_ids.implode())).unique("doc_id").collect())


# ---- funnel --------------------------------------------------------------------------------

def _count(lf: pl.LazyFrame) -> int:
    return int(lf.select(pl.len()).collect().item())


def funnel(wh: Warehouse) -> pl.DataFrame:
    """(stage, rows): documents -> recalled -> extracted -> refined -> deduped -> clean.

    recalled = documents kept by the highest recall round; extracted/refined = pairs with status
    ok; deduped = refined pairs not dropped as duplicates; clean = rows of `dataset`. Works on a
    warehouse where any of these tables is still empty.
    """
    scores = wh.scan("recall_scores")
    top = scores.select(pl.col("round").max()).collect().item()
    recalled = 0 if top is None else _count(
        scores.filter((pl.col("round") == top) & pl.col("kept")).select("doc_id").unique())
    refined = wh.scan("qa_refined").filter(pl.col("status") == "ok").select("refined_id")
    dropped = wh.scan("qa_duplicates").filter(~pl.col("kept")).select("refined_id")
    return pl.DataFrame({
        "stage": ["documents", "recalled", "extracted", "refined", "deduped", "clean"],
        "rows": [
            _count(wh.scan("documents")),
            recalled,
            _count(wh.scan("qa_extracted").filter(pl.col("status") == "ok")),
            _count(refined),
            _count(refined.join(dropped, on="refined_id", how="anti")),
            _count(wh.scan("dataset")),
        ],
    }, schema={"stage": pl.String, "rows": pl.Int64})


# ---- export --------------------------------------------------------------------------------

def _stage_settings(wh: Warehouse, table: str) -> dict:
    """Params of the newest finished stage run that wrote the current version of `table`."""
    fps = wh.current_fingerprints(table)
    runs = wh.manifest("stage_runs").filter(pl.col("fingerprint").is_in(fps) & (pl.col("status") == "done"))
    if runs.is_empty():
        return {}
    return json.loads(runs.sort("finished_at")["params"][-1] or "{}")


def export_dataset(wh: Warehouse, out_dir: str | Path, fmt: str = "parquet", rows_per_file: int = 500_000) -> dict:
    """Write the current `dataset` as a Hugging Face datasets directory with a dataset card."""
    if fmt not in ("parquet", "jsonl"):
        raise ValueError("format must be parquet or jsonl")
    if is_url(out_dir):  # object storage: built locally, then uploaded file by file
        with tempfile.TemporaryDirectory(prefix="webinstruct-export-") as d:
            res = export_dataset(wh, Path(d) / "export", fmt, rows_per_file)
            upload_tree(Path(d) / "export", str(out_dir))
        return res | {"out_dir": str(out_dir)}
    out = Path(out_dir).resolve()
    # Built beside the target and swapped in with renames: a reader (or a crash) never sees a
    # half-written export, and a re-export replaces the previous one whole.
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    data = tmp / "data"
    data.mkdir(parents=True)
    try:
        # Memory holds the sorted ids (~40 bytes a row) and one file's rows, never the whole dataset:
        # each file is the rows whose refined_id falls in its range, read from the shards and sorted.
        rows = wh.scan("dataset").drop("fingerprint")
        ids = rows.select("refined_id").sort("refined_id").collect()
        n_files = max(1, -(-ids.height // rows_per_file))
        bounds = [ids["refined_id"][i * rows_per_file] for i in range(1, n_files)]  # file i: [bounds[i-1], bounds[i])
        for i in range(n_files):
            rid = pl.col("refined_id")
            keep = pl.lit(True)
            if i > 0:
                keep &= rid >= bounds[i - 1]
            if i < n_files - 1:
                keep &= rid < bounds[i]
            part = rows.filter(keep).sort("refined_id", maintain_order=True).collect()
            path = data / f"train-{i:05d}-of-{n_files:05d}.{fmt}"
            part.write_parquet(path) if fmt == "parquet" else part.write_ndjson(path)
        (tmp / "README.md").write_text(dataset_card(wh, ids, fmt))
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out_dir": str(out), "rows": ids.height, "files": n_files, "format": fmt}


def dataset_card(wh: Warehouse, df: pl.DataFrame, fmt: str) -> str:
    """The README of an export; `df`: the dataset's rows (only its height is used)."""
    fun = funnel(wh)
    crawls = wh.scan("crawl_files").filter(pl.col("status") == "ok").group_by("crawl").agg(
        pl.len().alias("files"), pl.col("docs_kept").sum().alias("documents")).sort("crawl").collect()
    # Every model that ran is listed, also one whose pairs were all rejected or failed.
    ok_pairs = [pl.len().alias("rows"), (pl.col("status") == "ok").sum().alias("pairs")]
    unrefined = [*ok_pairs, (pl.col("status") == "unrefined").sum().alias("unrefined")]
    models = wh.scan("qa_refined").group_by("model", "prompt_fingerprint").agg(unrefined).sort("model").collect()
    extract = wh.scan("qa_extracted").group_by("model", "prompt_fingerprint").agg(ok_pairs).sort("model").collect()
    contam = wh.scan("qa_contamination").filter(pl.col("flagged").fill_null(True)).group_by("level", "benchmark", "method").agg(
        pl.col("id").n_unique().alias("items_removed")).sort("level", "benchmark", "method").collect()
    dedup = _stage_settings(wh, "qa_duplicates")
    decon = _stage_settings(wh, "qa_contamination")
    checks = _stage_settings(wh, "dataset")

    def table(frame: pl.DataFrame) -> str:
        if frame.is_empty():
            return "_none_\n"
        head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * frame.width + "\n"
        return head + "".join("| " + " | ".join("" if v is None else str(v) for v in r) + " |\n"
                              for r in frame.iter_rows())

    benches = decon.get("benchmarks", [])
    semantic = {k: v for k, v in (decon.get("semantic") or {}).items() if k != "judge_prompt"} or None
    return f"""---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.{fmt}
---
# webinstruct dataset

Instruction pairs (question -> worked answer) harvested from web crawls with the MAmmoTH2 recipe:
recall (fastText) -> extract (LLM) -> refine (LLMs) -> dedup -> decontaminate. Exported
{now_utc().isoformat(timespec="seconds")} from warehouse `{wh.root}`: {df.height} rows.

Columns: question, answer; refined (false: the refinement failed verification and the pair is
the one extracted from the page), answer_agreement (share of the pair's refiners reaching the same
final answer; empty with fewer than two checkable refiners); lineage: refined_id, qa_id, doc_id,
url, domain, crawl, refiner_model, prompt_fingerprint. Each row can be traced back in the warehouse
with SQL.

## Funnel (rows per stage)
{table(fun)}
## Sources (crawl files ingested)
{table(crawls)}
## Models and prompts
Extraction:

{table(extract)}
Refinement (`unrefined`: replies that failed verification against the extracted pair, such as a
question turned into a statement or a final answer changed without a reason):

{table(models)}
Dataset filters: `{json.dumps(checks, sort_keys=True)}`.

## Deduplication
Exact (normalized text) and near-duplicate (MinHash + LSH, rensa) over the pairs, across every
run; settings: `{json.dumps(dedup, sort_keys=True)}`.

## Decontamination
DeepSeekMath rule: a pair is removed when its question or answer shares a {decon.get("n", 10)}-gram
(normalized tokens) with a benchmark item, or contains a whole benchmark item of
{decon.get("min_tokens", 3)}..{decon.get("n", 10) - 1} tokens; whole pages checked: {decon.get("documents", False)}.
10-grams common in general problem text are not evidence: `{json.dumps(decon.get("stop_ngrams"), sort_keys=True)}`.
Rephrased items (the pairs the n-gram rule left): sentence embeddings of the question and of
question+answer against every benchmark item, removed at cosine >= threshold (or by the LLM judge):
`{json.dumps(semantic, sort_keys=True)}`.
Benchmarks: {", ".join(f"{b['name']} ({'+'.join(b['fields'])}, sha256 {b['sha256']})" for b in benches) or "none"}.

{table(contam)}"""
