"""Stage `extract`: page cleaning and chunking on real pages, input selection, and extraction
against the real embedded LLM server (SmolLM2-135M: weak, so we assert shapes, statuses,
lineage and caching, never answer quality)."""
from __future__ import annotations

import polars as pl
import pytest

from tasks import extract as ex
from tasks.page_clean import (CleanParams, chunk_text, clean_text, is_boilerplate, prepare_page, qa_signal,
                              select_chunks)

# Real question-answer pages of the bundled forum sample, and one that is empty after cleaning.
QA_PAGES = {
    "regex": "forum.agreper.com/thread/13/",
    "primes": "scienceforums.net/topic/131993-sum-of-prime-numbers",
    "css": "css-tricks.com/forums/topic/last-child-or",
}
EMPTY_PAGE = "forum.worldofplayers.de/forum/threads/1548322"


def page(wh, url_part: str) -> dict:
    df = wh.scan("documents").filter(pl.col("url").str.contains(url_part, literal=True)).collect()
    assert df.height >= 1, url_part
    return df.row(0, named=True)


# ---- cleaning -------------------------------------------------------------------------------
def test_clean_removes_forum_chrome_and_banners_but_keeps_the_posts(ingested_sample):
    raw = page(ingested_sample, QA_PAGES["primes"])["text"]
    cleaned = clean_text(raw)
    for chrome in ["Link to comment", "Share on other sites", "Jump to content", "Sign In Now",
                   "Reveal hidden contents", "We have placed cookies on your device", "Register a new account",
                   "Create an account or sign in to comment"]:
        assert chrome in raw and chrome not in cleaned, chrome
    for content in ["Sum of Prime Numbers", "You are correct, +1.", "I've stumbled upon this puzzle",
                    "Correct, and glad you liked it."]:
        assert content in cleaned
    assert len(cleaned) < 0.5 * len(raw)

    debian = clean_text(page(ingested_sample, "forums.debian.net/viewtopic.php?t=159270")["text"])
    assert "Posts: 3" not in debian and "Joined: 2024-05-16" not in debian and "Has thanked" not in debian
    assert "Post Reply" not in debian
    assert "dpkg-buildpackage: error: fatal error occurred while parsing debian/changelog" in debian
    assert "It looks like your changelog doesn't quite line up" in debian


def test_clean_keeps_code_lines_even_when_repeated(ingested_sample):
    raw = page(ingested_sample, QA_PAGES["css"])["text"]
    cleaned = clean_text(raw)
    # "< /div >" closes several blocks of the posted HTML: a repeated line, but code, not chrome
    assert cleaned.count("< /div >") == raw.count("< /div >") >= 3
    assert ".sliders .slider:nth-child(2) .col:last-child {" in cleaned
    assert "Participant" in raw and "Participant" not in cleaned  # repeated per-post badge


def test_boilerplate_rules_do_not_eat_content():
    for line in ["Reply", "Quote", "Share", "Log in", "Sign In Now", "  • 123", "Reply  Quote  Report",
                 "Joined: 2019-04-16 23:15", "Posts: 701", "Accept all cookies",
                 "This site uses cookies to improve your experience.", "CC BY-SA 3.0", "×"]:
        assert is_boilerplate(line), line
    for line in ["How do I share a folder between two users?", "Show that x^2 + 1 > 0 for all x.", "}", "42",
                 "print('Hello, World!')", "Read the manual page of ls."]:
        assert not is_boilerplate(line), line


# ---- chunking -------------------------------------------------------------------------------
def _overlap(prev: str, nxt: str, limit: int) -> int:
    """Length of the end of `prev` that `nxt` starts with, up to a line break in `nxt` (0 if none)."""
    for k in range(min(limit, len(prev), len(nxt)), 0, -1):
        if prev[-k:] == nxt[:k] and (k == len(nxt) or nxt[k] == "\n"):
            return k
    return 0


def _no_blank_lines(text: str) -> str:
    return "\n".join(ln for ln in text.split("\n") if ln.strip())


def test_chunks_of_a_long_real_page_respect_size_and_overlap(ingested_sample):
    raw = page(ingested_sample, "bbs.archlinux.org/viewtopic.php?id=249553")["text"]  # 108k characters
    cleaned = clean_text(raw)
    size, overlap = 2000, 200
    chunks = chunk_text(cleaned, size, overlap)
    assert len(chunks) > 10
    assert all(0 < len(c) <= size for c in chunks)
    rebuilt = chunks[0]
    for prev, nxt in zip(chunks, chunks[1:]):
        k = _overlap(prev, nxt, overlap)
        assert 0 < k <= overlap  # the next chunk repeats the last whole lines, within the budget
        rebuilt += nxt[k:]
    # nothing lost, nothing repeated beyond the overlap (blank lines at chunk edges are dropped)
    assert _no_blank_lines(rebuilt) == _no_blank_lines(cleaned)

    limited = chunk_text(cleaned, size, overlap, max_chunks=3)
    assert limited == chunks[:3]
    chunks_p, reason = prepare_page(raw, CleanParams(chunk_chars=size, overlap_chars=overlap, max_chunks=4))
    # the four chunks with the most question-and-answer signs, in page order, with their numbers
    assert reason is None and [n for n, _ in chunks_p] == select_chunks(chunks, 4)
    assert [c for _, c in chunks_p] == [chunks[n] for n, _ in chunks_p]
    assert all(qa_signal(c) >= qa_signal(chunks[0]) for _, c in chunks_p)


def test_chunking_splits_a_single_huge_line_and_short_pages_are_not_sent():
    line = " ".join(f"word{i}" for i in range(3000))  # ~26k characters, no newline
    chunks = chunk_text(line, 1000, 100)
    assert all(len(c) <= 1000 for c in chunks)
    rebuilt = chunks[0]
    for prev, nxt in zip(chunks, chunks[1:]):
        k = _overlap(prev, nxt, 100)
        assert 0 < k <= 100  # a word-aligned piece of the cut line is carried over
        rebuilt += nxt[k:]
    assert rebuilt.split() == line.split()
    assert chunk_text("short page", 1000, 100) == ["short page"]
    chunks, reason = prepare_page("Reply\nQuote\nok", CleanParams())
    assert chunks == [] and "too short after cleaning" in reason
    with pytest.raises(ValueError):
        CleanParams(chunk_chars=1000, overlap_chars=600)


# ---- prompt ---------------------------------------------------------------------------------
def test_prompt_prefix_is_fixed_and_the_page_comes_last():
    prompt = ex.ChatPrompt.load("extract")
    a = prompt.render(title="A", url="u1", text="first page")
    b = prompt.render(title="B", url="u2", text="second page {{not a placeholder}}")
    assert a[:-1] == b[:-1] and len(a) >= 5  # system + few-shot turns, byte-identical
    assert a[0]["role"] == "system" and a[-1]["role"] == "user"
    assert a[-1]["content"].endswith("first page") and "{{not a placeholder}}" in b[-1]["content"]
    assert any(m["content"] == '{"pairs": []}' for m in a if m["role"] == "assistant")  # "none" is shown
    for m in a[:-1]:
        if m["role"] == "assistant":
            ex.ExtractReply.model_validate_json(m["content"])  # the examples obey the schema


# ---- input selection ------------------------------------------------------------------------
def write_recall(wh, keep: list[str], round_: int, model_fp: str) -> str:
    """A recall_scores version keeping exactly `keep` (as recall would have)."""
    docs = wh.scan("documents").select("doc_id").collect()
    rows = docs.with_columns(model_fingerprint=pl.lit(model_fp), round=pl.lit(round_, pl.Int32),
                             score=pl.col("doc_id").is_in(keep).cast(pl.Float32),
                             kept=pl.col("doc_id").is_in(keep))
    fp = f"recall-{model_fp}"
    wh.write_shard("recall_scores", fp, "all", rows)
    return fp


def pending(wh, recall=None, max_docs=None, fp="x"):
    return ex.select_pending(wh, ex.resolve_input(wh, recall), fp, max_docs)


def test_select_pending_reads_the_newest_recall_round_or_every_document(ingested_sample, copy_warehouse):
    wh = copy_warehouse(ingested_sample)
    everything = pending(wh)
    assert everything.recall_fp is None and "no recall_scores" in everything.warning
    n = wh.scan("documents").select("doc_id").collect()["doc_id"].n_unique()  # a WET record shares its WARC's id
    assert everything.n_docs == everything.pending == n
    five = pending(wh, max_docs=5)
    assert five.n_docs == 5 and five.pending == n  # the budget leaves the rest pending

    ids = [page(wh, u)["doc_id"] for u in QA_PAGES.values()]
    write_recall(wh, ids[:1], 1, "m1")
    fp2 = write_recall(wh, ids, 2, "m2")
    chosen = pending(wh)
    assert chosen.recall_fp == fp2 and chosen.warning is None
    assert sorted(d for v in chosen.shards.values() for d in v[2]) == sorted(ids)
    assert pending(wh, recall="m1").n_docs == 1  # by model fingerprint too
    two = pending(wh, max_docs=2)  # equal scores: doc_id decides, so the choice never depends on file hashes
    assert sorted(d for v in two.shards.values() for d in v[2]) == sorted(ids)[:2]
    # the shard names are the same for the same choice (a killed run resumes its shards)
    assert sorted(pending(wh, max_docs=2).shards) == sorted(two.shards)


def test_select_pending_highest_score_first_and_skips_extracted(ingested_sample, copy_warehouse):
    wh = copy_warehouse(ingested_sample)
    docs = wh.scan("documents").select("doc_id").sort("doc_id").collect()["doc_id"].to_list()[:4]
    rows = pl.DataFrame({"doc_id": docs, "score": [0.6, 0.9, 0.7, 0.8]}).with_columns(
        model_fingerprint=pl.lit("m"), round=pl.lit(1, pl.Int32), kept=pl.lit(True),
        score=pl.col("score").cast(pl.Float32))
    wh.write_shard("recall_scores", "r", "all", rows)
    top = pending(wh, max_docs=2, fp="v")
    assert sorted(d for v in top.shards.values() for d in v[2]) == sorted([docs[1], docs[3]])
    done = pl.DataFrame({"qa_id": ["q"], "doc_id": [docs[1]], "chunk": [0], "question": [None], "answer": [None],
                         "model": ["m"], "prompt_fingerprint": ["p"], "grounding": [None], "status": ["no_pairs"],
                         "error": [None], "attempt": [1]}, schema=wh.spec("qa_extracted").schema)
    wh.write_shard("qa_extracted", "v", "s", done)
    nxt = pending(wh, max_docs=2, fp="v")
    assert sorted(d for v in nxt.shards.values() for d in v[2]) == sorted([docs[3], docs[2]])
    assert nxt.pending == 3


# ---- extraction against the real embedded server --------------------------------------------
def run_extract(wh, settings, params):
    inp = ex.resolve_input(wh)
    fp = params.fingerprint(settings, inp.upstream)
    inp = ex.select_pending(wh, inp, fp)

    def counting_client(s, w):
        client = ex.LLMClient(s, w)
        clients.append(client)
        return client

    clients: list = []
    stats = [ex.extract_shard(wh, settings, params, fp, shard, *inp.shards[shard], client_factory=counting_client)
             for shard in sorted(inp.shards)]
    calls = sum(c.network_calls for c in clients)
    return fp, inp, stats, calls


def tree(wh) -> set[str]:
    return {str(p.relative_to(wh.root)) for t in ("qa_extracted", "llm_calls") for p in (wh.root / t).rglob("*")}


def test_extract_real_pages_then_rerun_costs_no_calls(ingested_sample, copy_warehouse, llm_server):
    wh = copy_warehouse(ingested_sample)
    ids = {k: page(wh, u)["doc_id"] for k, u in QA_PAGES.items()}
    empty_id = page(wh, EMPTY_PAGE)["doc_id"]
    write_recall(wh, [*ids.values(), empty_id], 2, "m")
    settings = llm_server.model_copy(update={"max_tokens": 192})
    params = ex.ExtractParams(clean=CleanParams(chunk_chars=1200, overlap_chars=150, max_chunks=2))

    fp, inp, stats, calls = run_extract(wh, settings, params)
    out = wh.scan("qa_extracted", fp).collect()
    assert wh.spec("qa_extracted").conform(out.drop("fingerprint")).height == out.height
    # every selected page has rows, and the css page was long enough to be cut into chunks
    assert set(out["doc_id"]) == {*ids.values(), empty_id}
    assert out.filter(pl.col("doc_id") == ids["css"])["chunk"].max() >= 1
    assert set(out["status"]) <= {"ok", "no_pairs", "failed", "rejected"}
    empty = out.filter(pl.col("doc_id") == empty_id).row(0, named=True)
    assert empty["status"] == "no_pairs" and empty["error"].startswith("not sent: too short")
    ok = out.filter(pl.col("status") == "ok")
    assert ok.filter((pl.col("question").str.strip_chars() == "") | pl.col("answer").is_null()).height == 0
    assert (ok["grounding"] >= params.min_grounding).all()
    assert out.filter(pl.col("status") == "failed")["error"].null_count() == 0
    assert out.filter(pl.col("status") == "no_pairs")["question"].null_count() == out.filter(
        pl.col("status") == "no_pairs").height
    assert out["qa_id"].n_unique() == out.height
    assert (out["model"] == settings.model).all() and out["prompt_fingerprint"].n_unique() == 1

    sent = sum(s["chunks"] for s in stats)
    log = wh.scan("llm_calls", fp).collect()
    assert log.height == sent and int(log["attempts"].sum()) == calls  # one row per chunk sent
    assert not log["cached"].any() and set(log["item_id"]) == {
        f"{d}#{c}" for d, c in out.filter(~pl.col("error").str.starts_with("not sent").fill_null(False))
        .select("doc_id", "chunk").unique().iter_rows()}

    # same settings again: every shard exists, so no call and no new file
    before = tree(wh)
    _, inp2, stats2, calls2 = run_extract(wh, settings, params)
    assert calls2 == 0 and inp2.pending == 0 and stats2 == [] and tree(wh) == before

    # a lost output shard is rebuilt from the response cache: no call but for the chunks that
    # failed (failures are never cached: they are asked again), logged as cached
    for shard in wh.shard_ids("qa_extracted", fp):
        wh.shard_path("qa_extracted", fp, shard).unlink()
    _, _, stats3, calls3 = run_extract(wh, settings, params)
    failed = out.filter(pl.col("status") == "failed").height
    assert sum(s["cached"] for s in stats3) == sent - failed and (calls3 >= failed) and (calls3 == 0) == (failed == 0)
    again = wh.scan("qa_extracted", fp).collect()
    cached_rows = pl.col("status") != "failed"  # a failed chunk was asked again: its reply may differ
    assert again.filter(cached_rows).sort("qa_id").equals(out.filter(cached_rows).sort("qa_id"))
    log = wh.scan("llm_calls", fp).collect()
    assert log.height == 2 * sent and log.filter(pl.col("shard").str.contains(r"\.r1$"))["cached"].sum() == sent - failed
