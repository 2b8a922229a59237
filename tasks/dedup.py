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

import gc
from array import array
from dataclasses import asdict, dataclass
from importlib.metadata import version
from itertools import chain

import numpy as np
import polars as pl
import pyarrow as pa
import rensa

from tasks.benchmarks import (HASH_SEED, NORM_VERSION, TOKEN_RE, _MUL, FlatTokens, _mix, ngram_hashes,
                              normalize)
from tasks.refine_verify import usable
from warehouse import Warehouse, fingerprint

STAGE = "dedup"
CODE_VERSION = "1"
INDEX_TABLE = "qa_dedup_index"
KEY_SEED = 0xD3D0


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


# ---- tokens -------------------------------------------------------------------------------

# Byte classes of the token rule (tasks.benchmarks.TOKEN_RE) on ASCII: letters 1, digits 2, others 0.
_ASCII_CLASS = np.zeros(256, np.int8)
for _lo, _hi, _c in ((b"a", b"z", 1), (b"A", b"Z", 1), (b"0", b"9", 2)):
    _ASCII_CLASS[_lo[0]:_hi[0] + 1] = _c


_NO_TOKENS = pl.Series("t", [], pl.String)
_NO_LISTS = pl.Series("t", [], pl.List(pl.String))


def dedup_tokens(texts: pl.Series) -> tuple[FlatTokens, pl.Series]:
    """`tasks.benchmarks.flat_tokens(texts)`'s token hashes and row offsets (its `tokens` and `lists`
    are left empty: dedup needs neither), and each row's tokens joined by single spaces.

    After normalization most texts are ASCII, where a token is a run of letters or a run of digits:
    those rows are cut into tokens with numpy over the Arrow byte buffer, which spares the regex
    and a list of strings per row (the tokenizer was a third of the stage). Other rows go through
    the Unicode regex of `tasks.benchmarks.tokens`. tests/test_dedup.py checks the two agree.
    """
    norm = normalize(texts).rename("t")
    n = len(norm)
    ascii_rows = (norm.str.len_bytes() == norm.str.len_chars()).to_numpy()
    if ascii_rows.all():
        return _ascii_tokens(norm)
    parts = [(rows, *fn(norm.gather(rows))) for rows, fn in ((np.flatnonzero(ascii_rows), _ascii_tokens),
                                                              (np.flatnonzero(~ascii_rows), _regex_tokens))]
    # the two parts back in row order
    counts = np.zeros(n, np.int64)
    for rows, ft, _ in parts:
        counts[rows] = ft.lengths
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    hashes = np.empty(offsets[-1], np.uint64)
    for rows, ft, _ in parts:
        hashes[np.repeat(offsets[:-1][rows] - ft.offsets[:-1], ft.lengths) + np.arange(len(ft.hashes))] = ft.hashes
    joined = pl.concat([j for *_, j in parts]).gather(np.argsort(np.concatenate([r for r, *_ in parts])))
    return FlatTokens(_NO_TOKENS, _NO_LISTS, hashes, offsets), joined


def _regex_tokens(norm: pl.Series) -> tuple[FlatTokens, pl.Series]:
    lists = norm.str.extract_all(TOKEN_RE)
    lengths = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    toks = lists.explode().drop_nulls() if len(lists) else pl.Series("t", [], pl.String)
    hashes = toks.hash(seed=HASH_SEED).to_numpy() if len(toks) else np.zeros(0, np.uint64)
    return FlatTokens(_NO_TOKENS, _NO_LISTS, hashes, offsets), lists.list.join(" ").rename("t")


def _ascii_tokens(norm: pl.Series) -> tuple[FlatTokens, pl.Series]:
    """Tokens of ASCII texts from their bytes: letter runs and digit runs, nothing else."""
    n = len(norm)
    arr = norm.to_arrow()
    arr = (arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr).cast(pa.large_string())
    if n == 0:
        return FlatTokens(_NO_TOKENS, _NO_LISTS, np.zeros(0, np.uint64), np.zeros(1, np.int64)), _NO_TOKENS
    row_off = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset: arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], np.uint8)[row_off[0]: row_off[-1]] if row_off[-1] > row_off[0] \
        else np.zeros(0, np.uint8)
    row_off = row_off - row_off[0]
    cls = _ASCII_CLASS[data]
    # tokens start and end where the class changes, and at row ends
    edge = np.empty(len(cls) + 1, bool)
    edge[0] = edge[-1] = True
    np.not_equal(cls[1:], cls[:-1], out=edge[1:-1])
    edge[row_off] = True
    tok = cls != 0
    starts = np.flatnonzero(edge[:-1] & tok)
    ends = np.flatnonzero(edge[1:] & tok) + 1
    lens = ends - starts
    counts = np.diff(np.searchsorted(starts, row_off))
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    # tokens back to back (separators out): one Arrow string array, hashed by polars as before
    kept = data[tok]
    tok_off = np.zeros(len(starts) + 1, np.int64)
    np.cumsum(lens, out=tok_off[1:])
    toks = pl.from_arrow(pa.LargeStringArray.from_buffers(len(starts), pa.py_buffer(tok_off),
                                                          pa.py_buffer(kept))).rename("t")
    hashes = toks.hash(seed=HASH_SEED).to_numpy() if len(toks) else np.zeros(0, np.uint64)
    # joined: each row's tokens with one space before every token but its row's first
    later = np.ones(len(starts), bool)
    later[offsets[:-1][counts > 0]] = False
    space = tok_off[:-1][later]
    space += np.arange(len(space))  # positions in the joined bytes
    out = np.full(len(kept) + len(space), ord(" "), np.uint8)
    fill = np.ones(len(out), bool)
    fill[space] = False
    out[fill] = kept
    j_off = tok_off[offsets] + np.concatenate([[0], np.cumsum(np.maximum(counts - 1, 0))])
    joined = pl.from_arrow(pa.LargeStringArray.from_buffers(n, pa.py_buffer(j_off), pa.py_buffer(out))).rename("t")
    return FlatTokens(_NO_TOKENS, _NO_LISTS, hashes, offsets), joined


# ---- signatures -------------------------------------------------------------------------

@dataclass
class Sketches:
    exact_key: np.ndarray  # uint64 hash of the normalized token string
    has_tokens: np.ndarray  # bool
    sig: np.ndarray  # (n, num_perm) uint32 MinHash signature
    bands: np.ndarray  # (n, bands) uint64 band hashes


def sketch(texts: pl.Series, p: DedupParams, salt: pl.Series | None = None) -> Sketches:
    """`salt` (one string per text) keeps texts of different salts from ever matching."""
    ft, joined = dedup_tokens(texts)
    text_key = joined.hash(seed=KEY_SEED).to_numpy()
    exact_key = (salt + "\x00" + joined).hash(seed=KEY_SEED).to_numpy() if salt is not None else text_key
    rows, _, shingles = ngram_hashes(ft, p.shingle_size, whole_if_shorter=True)
    # Equal token strings have equal signatures: MinHash each distinct one once.
    _, first, inverse = np.unique(text_key, return_index=True, return_inverse=True)
    counts = np.bincount(rows, minlength=len(texts))
    if len(first) < len(texts):
        order = np.argsort(first)  # distinct texts in row order, as their shingles are
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        take = np.zeros(len(texts), bool)
        take[first] = True
        sig = _signatures(shingles[take[rows]], counts[first[order]], p)[rank[inverse.ravel()]]
    else:
        sig = _signatures(shingles, counts, p)
    bands = band_hashes(sig, p.bands)
    if salt is not None:
        bands = _mix(bands ^ salt.hash(seed=KEY_SEED).to_numpy()[:, None])
    return Sketches(exact_key, ft.lengths > 0, sig, bands)


def _signatures(shingles: np.ndarray, counts: np.ndarray, p: DedupParams) -> np.ndarray:
    """(rows, num_perm) uint32 rensa RMinHash signatures; row i hashes the next counts[i] shingles.

    rensa hands its matrix back only as Python lists (one int object per value); the cyclic GC
    would scan those lists again and again while they are built (half the conversion time), so
    it is paused, and array.array reads the ints without numpy's per-item type discovery.
    """
    if len(counts) == 0:
        return np.zeros((0, p.num_perm), np.uint32)
    offsets = np.zeros(len(counts) + 1, dtype=np.uint64)
    np.cumsum(counts, out=offsets[1:])
    matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(shingles, offsets, p.num_perm, p.seed)
    enabled = gc.isenabled()
    gc.disable()
    try:
        flat = array("I", chain.from_iterable(matrix.to_rows()))
    finally:
        if enabled:
            gc.enable()
    return np.frombuffer(flat, np.uint32).reshape(len(counts), p.num_perm)


def band_hashes(sig: np.ndarray, bands: int) -> np.ndarray:
    n, perm = sig.shape
    r = perm // bands
    s = sig.reshape(n, bands, r).astype(np.uint64)
    acc = np.broadcast_to(np.arange(1, bands + 1, dtype=np.uint64), (n, bands)).copy()  # band id
    for j in range(r):
        acc = acc * _MUL + s[:, :, j]
    return _mix(acc)


def similarity(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard: share of equal MinHash values, row by row."""
    if len(sig_a) == 0:
        return np.zeros(0)
    return np.count_nonzero(sig_a == sig_b, axis=1) / sig_a.shape[1]


def pair_similarity(sig_a: np.ndarray, ia: np.ndarray, sig_b: np.ndarray, ib: np.ndarray,
                    chunk: int = 65_536) -> np.ndarray:
    """similarity(sig_a[ia], sig_b[ib]) in chunks, so candidate lists never copy whole signatures."""
    out = np.empty(len(ia))
    for s in range(0, len(ia), chunk):
        out[s:s + chunk] = similarity(sig_a[ia[s:s + chunk]], sig_b[ib[s:s + chunk]])
    return out


def _band_frame(bands: np.ndarray, rows: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({"row": np.repeat(rows, bands.shape[1]), "bh": bands[rows].ravel()})


def candidate_edges(bands: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a < b) of `rows` sharing a band hash: a sort-based group-by over all band hashes.

    Each key packs the band hash's high bits with the row number in the low bits, so one numpy
    sort groups the buckets and orders each bucket by row; every member is linked to its bucket's
    first (highest-priority) row. Rows that share a band share it in every bucket they meet, so
    stars lose nothing in practice and keep the edge count linear. Packing drops `bits` bits of
    the band hash: an accidental bucket costs one extra verified candidate, never a merge.
    """
    e = np.zeros(0, np.int64)
    if len(rows) < 2:
        return e, e
    bits = np.uint64(max(1, int(rows.max()).bit_length()))
    keys = ((bands[rows] >> bits) << bits) | rows.astype(np.uint64)[:, None]
    keys = np.sort(keys.ravel())
    hi, lo = keys >> bits, (keys & ((np.uint64(1) << bits) - np.uint64(1))).astype(np.int64)
    start = np.ones(len(keys), bool)
    start[1:] = hi[1:] != hi[:-1]
    first = lo[np.maximum.accumulate(np.where(start, np.arange(len(keys)), 0))]
    pairs = _sorted_unique((first[~start].astype(np.uint64) << np.uint64(32)) | lo[~start].astype(np.uint64))
    return (pairs >> np.uint64(32)).astype(np.int64), (pairs & np.uint64(0xFFFFFFFF)).astype(np.int64)


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """np.unique by sorting (numpy 2's hash-based unique is slower on these integer keys)."""
    x = np.sort(x)
    keep = np.ones(len(x), bool)
    keep[1:] = x[1:] != x[:-1]
    return x[keep]


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components; each row's label is the smallest row of its component."""
    label = np.arange(n)
    if len(a) == 0:
        return label
    while True:
        m = np.minimum(label[a], label[b])
        new = label.copy()
        np.minimum.at(new, a, m)
        np.minimum.at(new, b, m)
        new = new[new]  # pointer jumping: halves the remaining path lengths
        if np.array_equal(new, label):
            return label
        label = new


def _binary_rows(a: np.ndarray) -> pl.Series:
    """Each row of a 2-D array as one bytes value, without a Python object per row."""
    a = np.ascontiguousarray(a)
    arr = pa.FixedSizeBinaryArray.from_buffers(pa.binary(a.shape[1] * a.itemsize), len(a),
                                               [None, pa.py_buffer(a.tobytes())])
    return pl.Series(arr.cast(pa.binary()))


def _matrix_rows(values: pl.Series, width: int) -> np.ndarray:
    """Inverse of `_binary_rows`: equal-length bytes values -> (n, width) uint32, via Arrow buffers."""
    arr = values.to_arrow().cast(pa.large_binary())
    if len(arr) == 0:
        return np.zeros((0, width), np.uint32)
    offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset: arr.offset + len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2], np.uint8)[offsets[0]: offsets[-1]]
    return data.view(np.uint32).reshape(len(arr), width)


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
        bf = _band_frame(sk.bands, reps)
        index = pl.scan_parquet(index_files).with_row_index("k")  # integer ids: cheap joins
        hits = index.select("k", "band_hashes").explode("band_hashes") \
            .filter(pl.col("band_hashes").is_in(bf["bh"].unique().implode())).collect()
        cand = bf.join(hits.rename({"band_hashes": "bh"}), on="bh")
        packed = _sorted_unique((cand["row"].to_numpy().astype(np.uint64) << np.uint64(32))
                           | cand["k"].to_numpy().astype(np.uint64))
        if len(packed):
            rows = (packed >> np.uint64(32)).astype(np.int64)
            ks = (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)
            # signatures of the candidate old pairs only, each decoded once
            old = index.select("k", "refined_id", "signature") \
                .filter(pl.col("k").is_in(pl.Series(_sorted_unique(ks)).implode())).collect().sort("k")
            k = np.searchsorted(old["k"].to_numpy(), ks)
            osig = _matrix_rows(old["signature"], p.num_perm)
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
        "signature": _binary_rows(sk.sig[k]),
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
