"""The `recall` Prefect flow on a copy of the ingested sample: two rounds, reruns, new versions."""
from __future__ import annotations

import polars as pl

from warehouse.catalog import query


def test_recall_flow_two_rounds_rerun_and_new_threshold(prefect_env, ingested_sample, copy_warehouse, tmp_path):
    from flows.recall import recall_flow
    from flows.settings import DomainSettings, RecallSettings

    wh = copy_warehouse(ingested_sample)
    overrides = tmp_path / "overrides.csv"
    overrides.write_text("domain,label\nstackexchange.com,educational\nfutura-sciences.com,educational\n"
                         "uraharajuku.st,other\n")
    # min_domain_docs above any domain's count: labels come from the override file alone (no LLM
    # call; the real server is exercised in test_recall_domains).
    kwargs = dict(data_dir=str(wh.root), domains=DomainSettings(min_domain_docs=10_000, overrides=str(overrides)))
    first = recall_flow(**kwargs)

    r1, r2 = first["rounds"]
    assert (r1["round"], r2["round"]) == (1, 2) and r1["trained"] and r2["trained"]
    assert r1["docs_scored"] == r2["docs_scored"] == 270
    assert r1["educational"] == r2["educational"] == ["futura-sciences.com", "stackexchange.com"]
    assert first["final_scores_fingerprint"] == r2["scores_fingerprint"]

    # round 2 learned from the labelled domains: their pages are positives, the `other` site's negatives
    ex = wh.scan("recall_examples", r2["model_fingerprint"]).collect()
    origins = dict(ex.group_by("origin").len().iter_rows())
    english = wh.scan("documents").filter(pl.col("language") == "en").group_by("domain").len().collect()
    n_en = dict(english.iter_rows())
    # overrides are the user's word (no evidence needed); pages outside the seeds' language never train
    assert origins["educational_domain"] == n_en["stackexchange.com"] + n_en.get("futura-sciences.com", 0)
    assert origins.get("other_domain", 0) == n_en.get("uraharajuku.st", 0) and origins["seed"] > 0
    assert set(ex.filter(pl.col("origin") == "educational_domain")["label"]) == {1}

    models = query(wh, "SELECT round, f1, threshold FROM recall_models ORDER BY round")
    assert models["round"].to_list() == [1, 2] and all(0 < t < 1 for t in models["threshold"])
    scores = query(wh, "SELECT round, count(*) n, count(DISTINCT model_fingerprint) m FROM recall_scores GROUP BY round ORDER BY round")
    assert scores["n"].to_list() == [270, 270] and scores["m"].to_list() == [1, 1]
    doms = query(wh, "SELECT round, label_source, count(*) n FROM domains GROUP BY ALL ORDER BY ALL")
    assert set(doms["label_source"]) == {"override", "below_min_docs"}

    again = recall_flow(**kwargs)  # same settings: every stage skipped, same versions
    assert [r["trained"] for r in again["rounds"]] == [False, False]
    assert [r["scores_fingerprint"] for r in again["rounds"]] == [r1["scores_fingerprint"], r2["scores_fingerprint"]]
    runs = wh.manifest("stage_runs").filter(pl.col("stage") == "recall_score").sort("started_at")
    assert runs["shards_skipped"].to_list()[-2:] == [10, 10] and runs["shards_done"].to_list()[-2:] == [0, 0]

    # no new domain: nothing labelled again
    assert [r["new_domains"] for r in again["rounds"]] == [0, 0]

    lower = recall_flow(**kwargs, recall=RecallSettings(threshold=0.3))  # new versions beside the old ones
    assert lower["rounds"][0]["model_fingerprint"] != r1["model_fingerprint"]
    assert not lower["rounds"][0]["trained"]  # the pinned model, evaluated at another threshold
    assert lower["rounds"][0]["docs_kept"] >= r1["docs_kept"]
    all_models = query(wh, "SELECT threshold, count(*) n FROM recall_models_all GROUP BY ALL ORDER BY ALL")
    assert all_models["threshold"].to_list()[0] == 0.3 and all_models["n"].to_list() == [2, 1, 1]
    keys = query(wh, "SELECT round, count(DISTINCT train_key) n FROM recall_models_all GROUP BY ALL ORDER BY ALL")
    assert keys["n"].to_list()[0] == 1  # round 1: one training, two thresholds
    current = query(wh, "SELECT DISTINCT threshold FROM recall_models")
    assert current["threshold"].to_list() == [0.3]
