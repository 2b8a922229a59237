"""`webinstruct plan`: rates measured on a small warehouse written through the Warehouse API with
known counts, times and token usage, then scaled to 90,000 WARC files with a GPU profile."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest
from typer.testing import CliRunner

from warehouse import Warehouse
from webinstruct.cli import app
from webinstruct.plan import RATES, estimate, load_profile, override, shipped_profiles
from webinstruct.plan_rates import measure

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=timezone.utc)
H100 = load_profile("h100-qwen72b.toml")  # tp 4, 12,000 prompt tok/s, 2,200 generated tok/s per replica


def rows(wh: Warehouse, table: str, n: int, **cols) -> pl.DataFrame:
    """n rows of `table`: the given columns (a value or a list of n), every other column null."""
    schema = wh.spec(table).schema
    data = {c: (v if isinstance(v, list) else [v] * n) for c, v in cols.items()}
    return pl.DataFrame({c: data.get(c, [None] * n) for c in schema}, schema=schema)


def stage_run(wh: Warehouse, stage: str, fp: str, outputs: list[str], seconds: float, rows_in: int,
              shards_done: int = 1) -> None:
    wh.write_manifest_row("stage_runs", f"{stage}-{fp}", dict(
        stage_run_id=f"{stage}-{fp}", run_id="run-1", stage=stage, fingerprint=fp, outputs=outputs, params="{}",
        upstream=[], code_version="1", started_at=T0, finished_at=T0 + timedelta(seconds=seconds), status="done",
        shards_total=shards_done, shards_done=shards_done, shards_skipped=0, rows_in=rows_in, rows_out=rows_in,
        error=None))


def calls(wh: Warehouse, stage: str, fp: str, items: list[str], prompt: int, completion: int,
          cached: bool = False, shard: str = "s0") -> None:
    wh.write_shard("llm_calls", fp, f"{stage}-{shard}", rows(
        wh, "llm_calls", len(items), call_id=[f"{fp}-{shard}-{i}" for i in range(len(items))], stage=stage,
        fingerprint=fp, shard=shard, item_id=items, model="Qwen2.5-Coder-1.5B-Instruct", prompt_tokens=prompt,
        completion_tokens=completion, cached=cached, status="ok"))


@pytest.fixture(scope="module")
def small_wh(tmp_path_factory) -> Warehouse:
    """4 WARC files of 25 documents; recall keeps 40 then 20 of 100; 20 pages extracted in 30
    requests into 10 pairs; two refiners (19 usable of 20); dedup keeps 15 of 19; 12 in dataset."""
    wh = Warehouse(tmp_path_factory.mktemp("plan") / "warehouse")
    wh.write_shard("crawl_files", "ing1", "files", rows(
        wh, "crawl_files", 4, path=[f"f{i}.warc.gz" for i in range(4)], docs_kept=25, seconds=0.5, status="ok"))
    for rnd, kept, fp in ((1, 40, "rs1"), (2, 20, "rs2")):
        wh.write_shard("recall_models", f"rm{rnd}", "model", rows(wh, "recall_models", 1, round=rnd))
        stage_run(wh, "recall_train", f"rm{rnd}", ["recall_models", "recall_examples"], 2.0 + 2 * rnd, 0)
        wh.write_shard("recall_scores", fp, "s0", rows(
            wh, "recall_scores", 100, round=rnd, doc_id=[f"d{i}" for i in range(100)], score=0.5,
            kept=[i < kept for i in range(100)]))
        stage_run(wh, "recall_score", fp, ["recall_scores"], 1.0, 100)
        wh.write_shard("domains", f"dom{rnd}", "s0", rows(wh, "domains", 2, round=rnd, domain=["a.org", "b.org"]))
        calls(wh, "domains", f"dom{rnd}", ["a.org", "b.org"], 400, 50)
    calls(wh, "domains", "dom2", ["a.org"], 999, 999, cached=True, shard="s0.r1")  # a rerun's cached copy

    pages = [f"d{i}" for i in range(20)]
    wh.write_shard("qa_extracted", "ex1", "s0", rows(
        wh, "qa_extracted", 20, qa_id=[f"q{i}" for i in range(20)], doc_id=pages, chunk=0,
        status=["ok"] * 10 + ["no_pairs"] * 10))
    calls(wh, "extract", "ex1", [f"{d}#0" for d in pages] + [f"{d}#1" for d in pages[:10]], 2000, 100)
    calls(wh, "extract", "ex1", ["d0#0"], 2000, 100, shard="s0.r1")  # the same request logged again
    for fp, status in (("rf1", ["ok"] * 10), ("rf2", ["ok"] * 8 + ["unrefined", "failed"])):
        wh.write_shard("qa_refined", fp, "s0", rows(
            wh, "qa_refined", 10, refined_id=[f"{fp}-{i}" for i in range(10)], qa_id=[f"q{i}" for i in range(10)],
            doc_id=pages[:10], status=status))
        calls(wh, "refine", fp, [f"q{i}" for i in range(10)], 600, 150)

    wh.write_shard("qa_duplicates", "dd1", "s0", rows(
        wh, "qa_duplicates", 19, refined_id=[f"r{i}" for i in range(19)], kept=[i < 15 for i in range(19)]))
    wh.write_shard("qa_contamination", "dc1", "s0", rows(wh, "qa_contamination", 1, id="r15", level="pair"))
    wh.write_shard("dataset", "ds1", "s0", rows(wh, "dataset", 12, refined_id=[f"r{i}" for i in range(12)]))
    stage_run(wh, "dedup", "dd1", ["qa_duplicates", "qa_dedup_index"], 1.9, 19)
    stage_run(wh, "decontaminate", "dc1", ["qa_contamination"], 0.95, 19)
    stage_run(wh, "export", "ds1", ["dataset"], 0.19, 19)
    return wh


def test_rates_are_measured_with_their_observations(small_wh):
    r = measure(small_wh)
    assert set(r) == set(RATES)
    expect = {"docs_per_warc": (25, 4), "ingest_s_per_doc": (0.02, 100), "recall_rounds": (2, 2),
              "recall_train_s": (5.0, 2), "recall_score_s_per_doc": (0.01, 200), "recall_keep": (0.2, 100),
              "domain_calls_per_doc": (4 / 200, 200), "domains_prompt_tokens": (400, 4),
              "extract_calls_per_page": (1.5, 20), "extract_prompt_tokens": (2000, 31),
              "extract_completion_tokens": (100, 31), "pairs_per_page": (0.5, 20),
              "refine_calls_per_pair": (2.0, 10), "refine_completion_tokens": (150, 20),
              "refined_per_pair": (1.9, 10), "curate_s_per_pair": (0.1 + 0.05 + 0.01, 19),
              "dedup_keep": (15 / 19, 19), "dataset_keep": (0.8, 15)}
    for name, (value, obs) in expect.items():
        assert r[name].value == pytest.approx(value, rel=1e-9), name
        assert r[name].observations == obs, name
    assert r["domains_completion_tokens"].model == "Qwen2.5-Coder-1.5B-Instruct"


def test_plan_arithmetic_for_90000_warc_files(small_wh):
    p = estimate(measure(small_wh), H100, warc_files=90_000, gpus=8, cpu_cores=64)
    assert p.replicas == 2 and p.documents == 2_250_000
    st = {s.stage: s for s in p.stages}
    ext = st["extract"]
    assert ext.items == pytest.approx(2_250_000 * 0.2 * 1.5)  # recalled pages x requests per page
    assert ext.prompt_tokens == pytest.approx(675_000 * 2000) and ext.completion_tokens == pytest.approx(675_000 * 100)
    replica_s = 1.35e9 / 12_000 + 6.75e7 / 2_200
    assert ext.gpu_hours == pytest.approx(replica_s * 4 / 3600, rel=1e-12)
    assert ext.wall_hours == pytest.approx(replica_s / 2 / 3600, rel=1e-12)
    assert st["refine"].items == pytest.approx(225_000 * 2)
    assert st["refine"].gpu_hours == pytest.approx((450_000 * 600 / 12_000 + 450_000 * 150 / 2_200) * 4 / 3600)
    assert st["domains"].items == pytest.approx(4_500_000 * 0.02)
    assert st["ingest"].core_hours == pytest.approx(2_250_000 * 0.02 / 3600)
    assert st["ingest"].wall_hours == pytest.approx(2_250_000 * 0.02 / 64 / 3600)
    # recall: scoring spreads over the cores, the two trainings (5 s each) do not
    assert st["recall"].wall_hours == pytest.approx((4_500_000 * 0.01 / 64 + 10) / 3600)
    assert st["curate"].core_hours == pytest.approx(427_500 * 0.16 / 3600)
    assert p.gpu_hours == pytest.approx(sum(st[s].gpu_hours for s in ("domains", "extract", "refine")))
    assert p.funnel["refined"] == pytest.approx(427_500) and p.pairs == pytest.approx(427_500 * 15 / 19 * 0.8)
    assert any("docs_per_warc" in n and "tens of thousands" in n for n in p.notes)


def test_rate_overrides_and_documents(small_wh):
    rates = override(measure(small_wh), ["pairs_per_page=1", "dedup_keep=1"])
    p = estimate(rates, H100, documents=1_000_000, gpus=4, cpu_cores=8)
    assert p.warc_files is None and p.replicas == 1
    assert p.pairs == pytest.approx(1_000_000 * 0.2 * 1 * 1.9 * 1 * 0.8)
    assert next(r for r in p.rates if r.name == "pairs_per_page").source == "--rate"


def test_cli_prints_the_plan_and_the_rates(small_wh):
    args = ["--data-dir", str(small_wh.root), "plan", "--warc-files", "90000", "--gpu-profile", "h100-qwen72b.toml",
            "--gpus", "8", "--cpu-cores", "64"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert "90,000 WARC files = 2.25M documents; 8 GPUs (2 x Qwen/Qwen2.5-72B-Instruct)" in lines[0]
    extract = next(ln for ln in lines if ln.startswith("│ extract"))
    assert "675,000" in extract and "1.35B" in extract and "159.1" in extract and "19.9 h" in extract
    assert any(ln.startswith("│ total") for ln in lines)
    assert "expected pairs: 270,000" in res.stdout
    row = next(ln for ln in lines if ln.startswith("│ pairs_per_page"))
    assert "0.5" in row and "20 pages" in row and "qa_extracted" in row
    assert "source: placeholder" in res.stdout
    data = json.loads(CliRunner().invoke(app, args + ["--json"]).stdout)
    assert data["totals"]["pairs"] == pytest.approx(270_000)
    assert data["inputs"]["replicas"] == 2 and len(data["rates"]) == 20


def test_bad_profile_and_missing_rates(small_wh, tmp_path):
    bad = tmp_path / "mine.toml"
    bad.write_text('name = "mine"\nmodel = "m"\ndevice = "1x L4"\ngpus_per_replica = 1\nconcurrency = 8\n'
                   'prefill_tokens_per_s = 5000\nsource = "my bench"\n')
    base = ["--data-dir", str(small_wh.root), "plan", "--warc-files", "10"]
    res = CliRunner().invoke(app, base + ["--gpu-profile", str(bad)])
    assert res.exit_code == 2
    assert f"error: GPU profile {bad}: generation_tokens_per_s: field required" in res.stderr
    assert "hint: a profile has the fields" in res.stderr
    res = CliRunner().invoke(app, base + ["--gpu-profile", "a100-nothing"])
    assert res.exit_code == 2 and "h100-qwen72b.toml" in res.stderr.splitlines()[1]

    empty = Warehouse(tmp_path / "empty")
    small_wh_files = pl.read_parquet(small_wh.shard_path("crawl_files", "ing1", "files"))
    empty.write_shard("crawl_files", "ing1", "files", small_wh_files)  # ingested, nothing else
    res = CliRunner().invoke(app, ["--data-dir", str(empty.root), "plan", "--warc-files", "10",
                                   "--gpu-profile", "h100-qwen72b"])
    assert res.exit_code == 2
    err = res.stderr.splitlines()
    assert err[0].startswith("error: the warehouse has no measurement of recall_rounds, recall_train_s")
    assert "run `webinstruct recall`, then `webinstruct mine`, then `webinstruct curate`" in err[1]


def test_shipped_profiles_load():
    assert {"h100-qwen72b.toml", "cpu-qwen2.5-coder-1.5b.toml"} <= set(shipped_profiles())
    for name in shipped_profiles():
        prof = load_profile(name)
        assert prof.source and prof.prefill_tokens_per_s > prof.generation_tokens_per_s
