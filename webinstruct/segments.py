"""Per stage and version: how many crawl segments (ingested files) are done and how many pending.

Every shard name starts from the documents shard it descends from (`<file key>-<nnnnn>`), with
the upstream version or a batch hash around it, so the segment of any shard is read off its name.
"""
from __future__ import annotations

import json
import re

import polars as pl

from warehouse import Warehouse

_SEGMENT = re.compile(r"([0-9a-f]{16})-\d{5}(?:-|$)")
# stage -> (output table, input table); inputs of the version come from its stage_runs upstream
_SHARDED = {"recall_score": ("recall_scores", "documents"), "refine": ("qa_refined", "qa_extracted"),
            "dedup": ("qa_duplicates", "qa_refined"), "decontaminate": ("qa_contamination", "qa_refined"),
            "export": ("dataset", "qa_refined")}
_ORDER = ["ingest", "recall_score", "extract", "refine", "dedup", "decontaminate", "export"]


def segment_of(shard: str) -> str | None:
    m = _SEGMENT.search(shard)
    return m.group(1) if m else None


def _segments(shards: list[str]) -> set[str]:
    return {s for s in map(segment_of, shards) if s}


def segment_status(wh: Warehouse) -> pl.DataFrame:
    """One row per (stage, version) of the current versions: segments done, pending, pending items."""
    runs = wh.manifest("stage_runs").filter(pl.col("status") == "done")
    rows = []
    files = wh.scan("crawl_files").select("file_key", "status").collect() if wh.versions("crawl_files") else None
    if files is not None and files.height:
        rows.append(dict(stage="ingest", version=wh.current_fingerprints("documents")[-1] if wh.versions("documents") else "-",
                         segments_done=int((files["status"] != "error").sum()),
                         segments_pending=0, pending=f"{int((files['status'] == 'error').sum())} file(s) with errors"))
    for stage in _ORDER[1:]:
        latest = runs.filter(pl.col("stage") == stage).sort("finished_at").unique("fingerprint", keep="last")
        out_table = "qa_extracted" if stage == "extract" else _SHARDED[stage][0]
        current = set(wh.current_fingerprints(out_table, runs))
        for r in latest.filter(pl.col("fingerprint").is_in(list(current))).iter_rows(named=True):
            fp = r["fingerprint"]
            done_shards = wh.shard_ids(out_table, fp)
            if stage == "extract":
                done, pending, items = _extract_status(wh, fp, json.loads(r["params"] or "{}"), r["upstream"])
            else:
                in_table = _SHARDED[stage][1]
                in_fps = [u for u in r["upstream"] if u in set(wh.versions(in_table))]
                inputs = [(u, s) for u in in_fps for s in wh.shard_ids(in_table, u)]
                missing = [s for u, s in inputs if not _has_output(stage, done_shards, u, s)]
                pending = _segments(missing)
                done = _segments([s for _, s in inputs]) - pending
                items = f"{len(missing)} shard(s)"
            rows.append(dict(stage=stage, version=fp, segments_done=len(done), segments_pending=len(pending),
                             pending=items))
    return pl.DataFrame(rows, schema={"stage": pl.String, "version": pl.String, "segments_done": pl.Int64,
                                      "segments_pending": pl.Int64, "pending": pl.String})


def _has_output(stage: str, done: list[str], upstream: str, shard: str) -> bool:
    names = {"recall_score": shard, "refine": shard, "decontaminate": f"pair-{upstream}-{shard}"}
    return names.get(stage, f"{upstream}-{shard}") in set(done)


def _extract_status(wh: Warehouse, fp: str, params: dict, upstream: list[str]) -> tuple[set, set, str]:
    """Segments with recalled pages all extracted (done) or some not yet (pending), and how many pages wait."""
    from tasks.extract import ExtractInput, select_pending

    doc_fps = [u for u in upstream if u in set(wh.versions("documents"))]
    inp = select_pending(wh, ExtractInput(doc_fps, params.get("recall_fingerprint")), fp)
    pending = _segments(list(inp.shards))
    extracted = _segments(wh.shard_ids("qa_extracted", fp))
    return extracted - pending, pending, f"{inp.pending} page(s)"
