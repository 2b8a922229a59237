"""Stage `dedup`: exact and near-duplicate refined pairs, across every run -> `qa_duplicates`.

Text: the question (`fields="question+answer"` uses both), normalized as for decontamination
(tasks.benchmarks: NFKC, lower case, LaTeX formatting dropped, tokens = letter/digit runs), so
case, punctuation, spacing and `$x^2$`-vs-`x^2` edits are *exact* duplicates (same normalized
hash). Near duplicates: MinHash (rensa RMinHash, `num_perm` permutations) over word `shingle_size`-
grams, LSH with `bands` bands, and every candidate pair verified: estimated Jaccard >= `threshold`.
Defaults (word 3-grams, 64 permutations, 32 bands x 2 rows, threshold 0.6), measured on real
questions (tests/test_dedup.py, bench/curate.py): 99.75% of one-word/punctuation/case/spacing edits
of 2,000 GSM8K train questions are merged with their original (128 permutations: 99.8%, at twice the
sketch cost); 0 of the first 5,000 GSM8K train questions are merged; over all 8,981 GSM8K-train +
AQuA + SVAMP questions 37 (0.41%) are, and the ones inspected are template twins (the same problem
with one name or number changed). r=2 rows per band makes LSH generous (J=0.45 is a candidate
99.9% of the time); the verification step is what decides.

Clusters are connected components of verified edges. The representative (kept) is, in order:
a pair already kept by an earlier run (a published row is never retracted by a later duplicate),
then the longest answer, then the smallest refined_id. `method`: unique (no duplicate),
representative (kept, has duplicates), exact or minhash (dropped, and why); `similarity` is the
estimated Jaccard to the representative (1.0 for exact).

Across runs: the kept pairs' exact key, band hashes and signature are stored in `qa_dedup_index`
(same fingerprint as `qa_duplicates`). Each new qa_refined shard is deduplicated against that
index and against the other new shards of its batch; the index is read as a lazy scan filtered to
the new batch's band hashes, so memory scales with the batch (`batch_rows`), not with the dataset.
`per_model=True` deduplicates each refiner version on its own (two refiners' versions of one
question are otherwise near duplicates, and the shorter answer goes).
One qa_refined shard -> one qa_duplicates shard (the commit point, written after the index shard).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib.metadata import version

import numpy as np
import polars as pl

from tasks.benchmarks import NORM_VERSION
from tasks.minhash import (band_frame, binary_rows, candidate_edges, components, dedup_tokens,  # noqa: F401
                           matrix_rows, pair_similarity, similarity, sketch, sorted_unique)
from tasks.refine_verify import usable
from warehouse import Warehouse, fingerprint

STAGE = "dedup"
CODE_VERSION = "1"
INDEX_TABLE = "qa_dedup_index"


@dataclass(frozen=True)
class DedupParams:
    fields: str = "question"  # question | question+answer
    shingle_size: int = 3  # word n-grams
    num_perm: int = 64
    bands: int = 32  # rows per band = num_perm / bands
    threshold: float = 0.6  # estimated Jaccard to call a candidate a duplicate
    seed: int = 42
    batch_rows: int = 200_000  # rows deduplicated in memory at once
    # False: a question refined by two models is one question (the shorter answer is dropped).
    # True: each refiner version is deduplicated on its own (keeps the paper's two-model diversity).
    per_model: bool = False
    # Also the extracted pairs standing in for refinements that failed verification (status unrefined).
    keep_unrefined: bool = True

    def __post_init__(self):
        if self.fields not in ("question", "question+answer"):
            raise ValueError("fields must be 'question' or 'question+answer'")
        if self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be a multiple of bands ({self.bands})")

    def fingerprint(self, upstream: list[str]) -> str:
        p = {k: v for k, v in asdict(self).items() if k != "batch_rows"}
        # Hashes persist in the index: pin the libraries that compute them.
        p.update(norm=NORM_VERSION, rensa=version("rensa"), polars=version("polars"))
        return fingerprint(STAGE, params=p, code_version=CODE_VERSION, upstream=upstream)


# ---- one batch ----------------------------------------------------------------------------

def _index_files(wh: Warehouse, fp: str) -> list[str]:
    return [str(wh.shard_path(INDEX_TABLE, fp, s)) for s in wh.shard_ids(INDEX_TABLE, fp)]


def dedup_frame(pairs: pl.DataFrame, p: DedupParams, index_files: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Deduplicate `pairs` (refined_id, question, answer) against each other and the index.

    Returns (qa_duplicates rows, qa_dedup_index rows of the pairs kept).
    """
    text = pl.col("question") if p.fields == "question" else pl.concat_str(
        ["question", "answer"], separator="\n", ignore_nulls=True)
    # Row order = representative priority: longest answer, then smallest refined_id.
    salt = pl.col("fingerprint") if p.per_model and "fingerprint" in pairs.columns else pl.lit("")
    df = pairs.select("refined_id", text.alias("text"), salt.alias("salt"),
                      pl.col("answer").str.len_chars().fill_null(0).alias("alen")) \
        .sort(["alen", "refined_id"], descending=[True, False])
    n = df.height
    sk = sketch(df["text"], p, df["salt"] if p.per_model else None)
    ids = df["refined_id"]
    keys = pl.Series("exact_key", sk.exact_key)

    # 1. exact: every row points at the first row with its key; keys already kept earlier win.
    _, first, inverse = np.unique(sk.exact_key, return_index=True, return_inverse=True)
    exact_rep = first[inverse.ravel()]  # np.unique's index is the first occurrence
    old_exact = {}
    if index_files and n:
        hit = pl.scan_parquet(index_files).select("exact_key", "refined_id") \
            .filter(pl.col("exact_key").is_in(keys.unique().implode())).collect()
        old_exact = dict(hit.unique("exact_key", keep="first").iter_rows())

    # 2. near duplicates among exact representatives that are new.
    reps = np.flatnonzero((exact_rep == np.arange(n)) & sk.has_tokens)
    if old_exact:
        reps = reps[~keys.gather(reps).is_in(list(old_exact)).to_numpy()]
    a, b = candidate_edges(sk.bands, reps)
    keep_edge = pair_similarity(sk.sig, a, sk.sig, b) >= p.threshold
    label = components(n, a[keep_edge], b[keep_edge])

    # 3. new representatives against the index (band-hash join, verified on the stored signature).
    old_id = np.full(n, None, dtype=object)
    old_sig = np.zeros((n, p.num_perm), np.uint32)
    if index_files and len(reps):
        bf = band_frame(sk.bands, reps)
        index = pl.scan_parquet(index_files).with_row_index("k")  # integer ids: cheap joins
        hits = index.select("k", "band_hashes").explode("band_hashes") \
            .filter(pl.col("band_hashes").is_in(bf["bh"].unique().implode())).collect()
        cand = bf.join(hits.rename({"band_hashes": "bh"}), on="bh")
        packed = sorted_unique((cand["row"].to_numpy().astype(np.uint64) << np.uint64(32))
                           | cand["k"].to_numpy().astype(np.uint64))
        if len(packed):
            rows = (packed >> np.uint64(32)).astype(np.int64)
            ks = (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)
            # signatures of the candidate old pairs only, each decoded once
            old = index.select("k", "refined_id", "signature") \
                .filter(pl.col("k").is_in(pl.Series(sorted_unique(ks)).implode())).collect().sort("k")
            k = np.searchsorted(old["k"].to_numpy(), ks)
            osig = matrix_rows(old["signature"], p.num_perm)
            old_ids = old["refined_id"].to_numpy()
            sim = pair_similarity(sk.sig, rows, osig, k)
            ok = sim >= p.threshold
            best = pl.DataFrame({"row": rows[ok], "sim": sim[ok], "i": np.flatnonzero(ok)}) \
                .sort(["sim", "i"], descending=[True, False]).unique("row", keep="first")
            # a component with any member matching an old pair joins that old pair's cluster
            comp = pl.DataFrame({"label": label[best["row"].to_numpy()], "sim": best["sim"], "i": best["i"]}) \
                .sort(["sim", "i"], descending=[True, False]).unique("label", keep="first")
            lab_i = np.full(n, -1)
            lab_i[comp["label"].to_numpy()] = comp["i"].to_numpy()
            hit_rows = np.flatnonzero(lab_i[label] >= 0)
            i = lab_i[label[hit_rows]]
            old_id[hit_rows] = old_ids[k[i]]
            old_sig[hit_rows] = osig[k[i]]

    # 4. assemble: every row's cluster, representative and similarity.
    row = np.arange(n)
    final = label[exact_rep]  # exact members follow their exact representative's component
    old_of = old_id[final]
    has_old = old_of != None  # noqa: E711 - elementwise on an object array
    same_text = (sk.exact_key == sk.exact_key[final]) & ~has_old
    if old_exact:  # exact copies of a pair kept by an earlier run
        ex = keys.replace_strict(old_exact, default=None, return_dtype=pl.String).to_numpy()
        m = ex != None  # noqa: E711
        old_of[m], has_old[m], same_text[m] = ex[m], True, True
    cluster = np.where(has_old, old_of, ids.to_numpy()[final])
    kept = ~has_old & (row == final)
    sizes = np.bincount(final, minlength=n)
    method = np.where(kept, np.where(sizes[final] > 1, "representative", "unique"),
                      np.where(same_text, "exact", "minhash"))
    sim = np.ones(n)
    est = np.flatnonzero(~same_text)  # estimated only where the texts differ
    sim[est] = similarity(sk.sig[est], np.where(has_old[est, None], old_sig[final[est]], sk.sig[final[est]]))
    dup = pl.DataFrame({"refined_id": ids, "cluster_id": pl.Series(cluster, dtype=pl.String), "kept": kept,
                        "method": method, "similarity": np.where(method == "unique", np.nan, sim)}) \
        .with_columns(pl.col("similarity").fill_nan(None))
    k = np.flatnonzero(kept & sk.has_tokens)
    index = pl.DataFrame({
        "refined_id": ids.gather(k), "exact_key": pl.Series(sk.exact_key[k], dtype=pl.UInt64),
        "band_hashes": pl.Series(sk.bands[k]).cast(pl.List(pl.UInt64)),
        "signature": binary_rows(sk.sig[k]),
    })
    return dup, index


# ---- shards -------------------------------------------------------------------------------

def shard_name(refined_fp: str, shard: str) -> str:
    return f"{refined_fp}-{shard}"


def pending_shards(wh: Warehouse, out_fp: str, refined_fps: list[str]) -> list[tuple[str, str]]:
    """qa_refined shards without a qa_duplicates shard, oldest version/shard first.

    Index shards without their qa_duplicates shard are leftovers of an interrupted run: removed.
    """
    done = set(wh.shard_ids("qa_duplicates", out_fp))
    for stale in set(wh.shard_ids(INDEX_TABLE, out_fp)) - done:
        wh.shard_path(INDEX_TABLE, out_fp, stale).unlink(missing_ok=True)
    return [(fp, s) for fp in sorted(refined_fps) for s in wh.shard_ids("qa_refined", fp)
            if shard_name(fp, s) not in done]


def plan_batches(wh: Warehouse, shards: list[tuple[str, str]], batch_rows: int) -> list[list[tuple[str, str]]]:
    batches, cur, rows = [], [], 0
    for fp, s in shards:
        n = wh.shard_rows("qa_refined", fp, s)
        if cur and rows + n > batch_rows:
            batches.append(cur)
            cur, rows = [], 0
        cur.append((fp, s))
        rows += n
    return batches + ([cur] if cur else [])


def dedup_batch(wh: Warehouse, p: DedupParams, out_fp: str, shards: list[tuple[str, str]]) -> dict:
    """Deduplicate a batch of qa_refined shards against the index; write one output per shard."""
    frames = [wh.read_shard("qa_refined", fp, s).with_columns(pl.lit(shard_name(fp, s)).alias("_shard"),
                                                              pl.lit(fp).alias("fingerprint"))
              for fp, s in shards]
    rows = pl.concat(frames) if frames else wh.spec("qa_refined").empty().with_columns(
        _shard=pl.lit(""), fingerprint=pl.lit(""))
    pairs = rows.filter(usable(p.keep_unrefined))
    dup, index = dedup_frame(pairs, p, _index_files(wh, out_fp))
    dup = dup.join(pairs.select("refined_id", "_shard"), on="refined_id", how="left")
    index = index.join(pairs.select("refined_id", "_shard"), on="refined_id", how="left")
    for fp, s in shards:  # index first, then the commit point
        name = shard_name(fp, s)
        wh.write_shard(INDEX_TABLE, out_fp, name, index.filter(pl.col("_shard") == name))
    for fp, s in shards:
        name = shard_name(fp, s)
        wh.write_shard("qa_duplicates", out_fp, name, dup.filter(pl.col("_shard") == name))
    return {"rows_in": pairs.height, "kept": int(dup["kept"].sum()), "dropped": int((~dup["kept"]).sum()),
            "shards": len(shards)}


__all__ = ["STAGE", "CODE_VERSION", "DedupParams", "dedup_frame", "dedup_batch", "pending_shards",
           "plan_batches", "sketch", "similarity", "components", "candidate_edges"]
