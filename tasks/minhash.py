"""MinHash sketches for dedup: tokens of normalized text, rensa signatures, LSH band hashes,
candidate pairs, their estimated Jaccard, connected components. Pure numpy/polars; the stage
(tasks/dedup.py) decides what is a duplicate and what is kept."""
from __future__ import annotations

import gc
from array import array
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa
import rensa

from tasks.benchmarks import HASH_SEED, TOKEN_RE, _MUL, FlatTokens, _mix, ngram_hashes, normalize

if TYPE_CHECKING:
    from tasks.dedup import DedupParams

KEY_SEED = 0xD3D0

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


def band_frame(bands: np.ndarray, rows: np.ndarray) -> pl.DataFrame:
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
    pairs = sorted_unique((first[~start].astype(np.uint64) << np.uint64(32)) | lo[~start].astype(np.uint64))
    return (pairs >> np.uint64(32)).astype(np.int64), (pairs & np.uint64(0xFFFFFFFF)).astype(np.int64)


def sorted_unique(x: np.ndarray) -> np.ndarray:
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


def binary_rows(a: np.ndarray) -> pl.Series:
    """Each row of a 2-D array as one bytes value, without a Python object per row."""
    a = np.ascontiguousarray(a)
    arr = pa.FixedSizeBinaryArray.from_buffers(pa.binary(a.shape[1] * a.itemsize), len(a),
                                               [None, pa.py_buffer(a.tobytes())])
    return pl.Series(arr.cast(pa.binary()))


def matrix_rows(values: pl.Series, width: int) -> np.ndarray:
    """Inverse of `binary_rows`: equal-length bytes values -> (n, width) uint32, via Arrow buffers."""
    arr = values.to_arrow().cast(pa.large_binary())
    if len(arr) == 0:
        return np.zeros((0, width), np.uint32)
    offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset: arr.offset + len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2], np.uint8)[offsets[0]: offsets[-1]]
    return data.view(np.uint32).reshape(len(arr), width)
