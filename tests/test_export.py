"""The dataset table, the funnel and the Hugging Face export."""
from __future__ import annotations

import polars as pl
import pytest

from tasks import decontaminate as decon
from tasks import dedup, export
from tests.fixtures.curate import BENCH

RFP = "refinedfp000001"


def curate_by_hand(wh, decontaminate_documents: bool = False, semantic: bool = False) -> str:
    """Run the three stages with their stage functions (no Prefect), recording stage runs. The semantic
    check is off unless asked: it is tested in test_semantic_decontam.py and the flow tests."""
    doc_fps = wh.versions("documents")
    dp = dedup.DedupParams()
    cp = decon.DecontamParams(documents=decontaminate_documents, semantic=decon.DecontamParams().semantic if semantic else None)
    dfp = dp.fingerprint([RFP])
    cfp = cp.fingerprint([RFP, *(doc_fps if decontaminate_documents else [])])
    out = export.dataset_fingerprint(dfp, cfp, [RFP], doc_fps)
    run = wh.begin_run("test-curate", {})
    with wh.stage_run(run_id=run, stage="dedup", fingerprint=dfp, outputs=["qa_duplicates", "qa_dedup_index"],
                      params=vars(dp), upstream=[RFP], code_version="1"):
        for batch in dedup.plan_batches(wh, dedup.pending_shards(wh, dfp, [RFP]), dp.batch_rows):
            dedup.dedup_batch(wh, dp, dfp, batch)
    with wh.stage_run(run_id=run, stage="decontaminate", fingerprint=cfp, outputs=["qa_contamination"],
                      params=cp.settings(), upstream=[RFP], code_version="1"):
        for kind, fp, s in decon.pending(wh, cfp, [RFP], doc_fps if decontaminate_documents else []):
            decon.decontaminate_shard(wh, cp, cfp, kind, fp, s)
    with wh.stage_run(run_id=run, stage="export", fingerprint=out, outputs=["dataset"], params={},
                      upstream=[dfp, cfp], code_version="1"):
        for s in wh.shard_ids("qa_refined", RFP):
            export.build_dataset_shard(wh, out, RFP, s, dfp, cfp, doc_fps)
    wh.finish_run(run)
    return out


@pytest.fixture
def curated(curate_wh, real_pairs):
    wh = curate_wh
    gsm_test = pl.read_ndjson(BENCH / "gsm8k_test.jsonl")[:10].select("question", "answer")
    pairs = pl.concat([real_pairs[:300], real_pairs[:20], gsm_test])  # 20 exact copies, 10 contaminated
    rows = wh.add_refined(pairs, "s1")
    failed = wh.add_refined(real_pairs[400:405], "s2").with_columns(
        pl.lit("failed").alias("status"), pl.lit(None, pl.String).alias("question"))
    wh.write_shard("qa_refined", RFP, "s2", failed)
    curate_by_hand(wh)
    return wh, rows


def test_funnel_on_an_empty_warehouse(data_dir):
    from warehouse import Warehouse

    f = export.funnel(Warehouse(data_dir))
    assert f["stage"].to_list() == ["documents", "recalled", "extracted", "refined", "deduped", "clean"]
    assert f["rows"].to_list() == [0] * 6


def test_dataset_is_refined_minus_duplicates_minus_contaminated_with_lineage(curated):
    wh, rows = curated
    ds = wh.scan("dataset").collect()
    dropped = wh.scan("qa_duplicates").filter(~pl.col("kept")).collect()["refined_id"]
    dirty = wh.scan("qa_contamination").collect()["id"]
    expected = set(rows["refined_id"]) - set(dropped) - set(dirty)
    assert set(ds["refined_id"]) == expected and ds.height == len(expected)
    assert set(rows["refined_id"][300:]) <= set(dropped) | set(dirty)  # the 20 copies and 10 test items
    assert set(rows["refined_id"][320:]) <= set(dirty)
    assert ds.height >= 295  # GSM8K train items 20 and 120 share 10-grams with GSM8K test
    docs = wh.scan("documents").select("doc_id", "url", "domain").collect().unique("doc_id")  # ids repeat across files
    joined = ds.join(docs, on="doc_id", suffix="_doc")
    assert joined.height == ds.height and (joined["url"] == joined["url_doc"]).all()
    assert ds["refiner_model"].unique().to_list() == ["refiner-a"] and ds["qa_id"].null_count() == 0
    f = dict(export.funnel(wh).iter_rows())
    assert f["documents"] == 270 and f["refined"] == rows.height and f["clean"] == ds.height
    assert f["deduped"] == rows.height - dropped.len()


def test_document_level_filter_drops_pairs_of_contaminated_pages(curate_wh, real_pairs):
    wh = curate_wh
    rows = wh.add_refined(real_pairs[:40], "s1")
    page = rows["doc_id"][0]
    # plant a GSM8K test question into one page's text (a new documents shard)
    fp = wh.versions("documents")[0]
    doc = wh.scan("documents").filter(pl.col("doc_id") == page).drop("fingerprint").collect()
    q = pl.read_ndjson(BENCH / "gsm8k_test.jsonl")["question"][3]
    for s in wh.shard_ids("documents", fp):  # move the page out of its shard, into its own
        part = wh.read_shard("documents", fp, s)
        if page in part["doc_id"].to_list():
            wh.write_shard("documents", fp, s, part.filter(pl.col("doc_id") != page))
    wh.write_shard("documents", fp, "zz-planted", doc.with_columns(pl.col("text") + "\n" + q))
    out = curate_by_hand(wh, decontaminate_documents=True)
    bad = wh.scan("qa_contamination").filter(pl.col("level") == "document").collect()
    assert page in bad["id"].to_list()
    ds = wh.scan("dataset", out).collect()
    assert page not in ds["doc_id"].to_list()
    pair_level = wh.scan("qa_contamination").filter(pl.col("level") == "pair").collect()["id"]
    dropped = wh.scan("qa_duplicates").filter(~pl.col("kept")).collect()["refined_id"]
    expected = set(rows.filter(pl.col("doc_id") != page)["refined_id"]) - set(pair_level) - set(dropped)
    assert set(ds["refined_id"]) == expected and len(expected) >= 35


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_export_loads_with_datasets(curated, tmp_path, fmt):
    import datasets

    wh, _ = curated
    out = tmp_path / f"export-{fmt}"
    res = export.export_dataset(wh, out, fmt)
    n = wh.scan("dataset").select(pl.len()).collect().item()
    assert res["rows"] == n and (out / "data" / f"train-00000-of-00001.{fmt}").exists()
    hf_cache = str(tmp_path / "hf-cache")  # never a cached split of an earlier run at a reused temp path
    ds = datasets.load_dataset("parquet" if fmt == "parquet" else "json", data_dir=str(out), split="train",
                               cache_dir=hf_cache)
    assert ds.num_rows == n
    assert {"question", "answer", "url", "domain", "doc_id", "qa_id", "refiner_model"} <= set(ds.column_names)
    card = (out / "README.md").read_text()
    for needle in ("## Funnel", "| documents | 270 |", f"| clean | {n} |", "refiner-a", "prompt-fp-1",
                   "gsm8k", "theoremqa", "bbh", "DeepSeekMath", "threshold"):
        assert needle in card, needle
    # the card's YAML config lets `load_dataset(path)` find the files too
    assert datasets.load_dataset(str(out), split="train", cache_dir=hf_cache).num_rows == n
