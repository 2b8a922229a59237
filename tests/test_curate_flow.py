"""The `curate` Prefect flow end to end, incremental over a second segment; the `export` command."""
from __future__ import annotations

import random

import polars as pl
from typer.testing import CliRunner

from tests.fixtures.curate import BENCH
from tests.test_dedup import KINDS, light_edit


def test_curate_flow_then_a_second_segment(prefect_env, curate_wh, real_pairs, tmp_path):
    from flows.curate import curate_flow
    from flows.settings import CurateSettings, ExportSettings
    from warehouse.catalog import query

    wh = curate_wh
    gsm_test = pl.read_ndjson(BENCH / "gsm8k_test.jsonl")[:5].select("question", "answer")
    seg1 = wh.add_refined(pl.concat([real_pairs[3000:3400], real_pairs[3000:3010], gsm_test]), "seg1")
    out = tmp_path / "export"
    # 525 real pairs: the semantic check would add ~30 s of embedding here; the pipeline tests run it
    # through this flow with the default settings, and test_semantic_decontam.py measures it
    settings = dict(curate=CurateSettings(decontaminate_documents=True, semantic_check=False),
                    export=ExportSettings(dir=str(out)))
    s1 = curate_flow(data_dir=str(wh.root), **settings)
    published = query(wh, "SELECT * FROM dataset")
    assert s1["pairs"] == seg1.height and s1["duplicates_dropped"] >= 10 and s1["contaminated_pairs"] >= 5
    assert s1["refiners_disagree"] == 0 and s1["unrefined_rows"] == 0  # one refiner, every pair verified
    assert published["refined"].all() and published["answer_agreement"].is_null().all()
    funnel = {r["stage"]: r["rows"] for r in s1["funnel"]}
    assert funnel["refined"] == seg1.height and funnel["clean"] == s1["export"]["rows"]
    assert funnel["clean"] <= seg1.height - 15 and (out / "README.md").exists()
    stages = wh.manifest("stage_runs").filter(pl.col("stage").is_in(["dedup", "decontaminate", "export"]))
    assert stages.height == 3 and (stages["status"] == "done").all()

    # segment 2: edits of segment-1 questions and new questions; only its shard is processed
    rng = random.Random(5)
    edits = real_pairs[3000:3100].with_columns(pl.Series("question", [
        light_edit(q, KINDS[i % len(KINDS)], rng) for i, q in enumerate(real_pairs["question"][3000:3100])]))
    seg2 = wh.add_refined(pl.concat([edits, real_pairs[4000:4100]]), "seg2")
    s2 = curate_flow(data_dir=str(wh.root), **settings)
    assert s2["pairs"] == seg2.height  # segment 1 was not deduplicated again
    assert s2["dedup_fingerprint"] == s1["dedup_fingerprint"]
    assert s2["dataset_fingerprint"] == s1["dataset_fingerprint"]  # appended to the same version
    # nothing published is retracted or changed, in the table and in the export
    still = query(wh, "SELECT * FROM dataset").join(published.select("refined_id"), on="refined_id", how="semi")
    assert published.height > 0 and still.sort("refined_id").equals(published.sort("refined_id"))
    exported = pl.read_parquet(out / "data" / "*.parquet")
    assert set(published["refined_id"]) <= set(exported["refined_id"]) and exported.height > published.height
    dup2 = wh.read_shard("qa_duplicates", s2["dedup_fingerprint"], "refinedfp000001-seg2")
    assert (~dup2.filter(pl.col("refined_id").is_in(seg2["refined_id"][:100].to_list()))["kept"]).mean() >= 0.99
    clean = {r["stage"]: r["rows"] for r in s2["funnel"]}["clean"]
    assert funnel["clean"] + 95 <= clean <= funnel["clean"] + 100

    # SQL over the views: why is a pair not in the dataset?
    why = query(wh, """
        SELECT r.refined_id, d.kept, d.method, c.benchmark
        FROM qa_refined r LEFT JOIN qa_duplicates d USING (refined_id)
        LEFT JOIN qa_contamination c ON c.id = r.refined_id AND c.level = 'pair'
        WHERE r.refined_id NOT IN (SELECT refined_id FROM dataset)""")
    assert why.height >= 115 and why.filter(pl.col("kept") & pl.col("benchmark").is_null()).height == 0

    # a rerun with nothing new does no work
    s3 = curate_flow(data_dir=str(wh.root), **settings)
    assert s3["pairs"] == 0 and {r["stage"]: r["rows"] for r in s3["funnel"]}["clean"] == clean


def test_export_command(curate_wh, real_pairs, tmp_path, prefect_env):
    from flows.curate import curate_flow
    from webinstruct.cli import app

    wh = curate_wh
    wh.add_refined(real_pairs[:50], "s1")
    curate_flow(data_dir=str(wh.root))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["--data-dir", str(wh.root), "export", "--format", "jsonl", str(out)])
    assert res.exit_code == 0, res.output
    lines = (out / "data" / "train-00000-of-00001.jsonl").read_text().splitlines()
    assert 45 <= len(lines) <= 50 and "## Funnel" in (out / "README.md").read_text()
    bad = CliRunner().invoke(app, ["--data-dir", str(wh.root), "export", "--format", "csv", str(out)])
    assert bad.exit_code == 2
