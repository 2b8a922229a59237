"""Extraction replies that small models really give: cut off at max_tokens, LaTeX backslashes in
JSON strings, the same question twice, a few-shot example copied; and chunks chosen where the
questions and answers are. The server here is the scripted fake (exact replies, finish_reason)."""
from __future__ import annotations

import json

import polars as pl

from tasks import extract as ex
from tasks.json_repair import repair_escapes
from tasks.llm_client import LLMClient, LLMResult, parse_reply
from tasks.page_clean import CleanParams, prepare_page, qa_signal
from tests.fake_llm_server import ok
from warehouse import Warehouse

PAGE = ("How do I find the limit of (x^2 - 9)/(x - 3) as x goes to 3?\n"
        "Factor the numerator: (x - 3)(x + 3), cancel, and the limit is 6.\n"
        "What is the derivative of x^3?\n"
        "By the power rule it is 3x^2.\n")
TWO_PAIRS = [{"question": "How do I find the limit of (x^2 - 9)/(x - 3) as x goes to 3?",
              "answer": "Factor the numerator: (x - 3)(x + 3), cancel, and the limit is 6."},
             {"question": "What is the derivative of x^3?", "answer": "By the power rule it is 3x^2."}]


def test_a_reply_cut_at_max_tokens_keeps_its_complete_pairs(fake_llm, data_dir):
    cut = json.dumps({"pairs": TWO_PAIRS + [{"question": "What is the integral", "answer": "x"}]})[:-30]
    bodies: list[dict] = []
    server = fake_llm(script=lambda body: bodies.append(body) or ok(cut, finish_reason="length"))
    settings = server.settings(timeout_s=5, max_retries=0)
    wh = Warehouse(data_dir)
    docs = pl.DataFrame({"doc_id": ["d1"], "url": ["https://forum.example/t/1"], "title": ["Limits"], "text": [PAGE]})
    rows, results = ex.extract_pages(LLMClient(settings, wh), settings, ex.ExtractParams(), docs, fp="fp", shard="s")
    assert results[0].ok and "kept the complete items" in results[0].error
    assert rows.filter(pl.col("status") == "ok")["question"].to_list() == [p["question"] for p in TWO_PAIRS]
    calls = wh.read_shard("llm_calls", "fp", "extract-s")
    assert calls["finish_reason"].to_list() == ["length"] and calls["status"].to_list() == ["ok"]
    # the request asked for a reply sized to its chunk, not the settings' maximum
    assert bodies[-1]["max_tokens"] == ex.reply_budget(PAGE, settings.max_tokens) < settings.max_tokens
    # a rerun restores the salvaged reply from the cache, with the same pairs
    again, _ = ex.extract_pages(LLMClient(settings, wh), settings, ex.ExtractParams(), docs, fp="fp", shard="s2")
    assert again.filter(pl.col("status") == "ok").height == 2 and len(bodies) == 1


def test_truncation_with_no_complete_pair_is_a_failure_that_says_so():
    parsed, error = parse_reply(ex.ExtractReply, '{"pairs": [{"question": "What is', "length")
    assert parsed is None and error.startswith("truncated at max_tokens; invalid JSON")


def test_latex_backslashes_in_json_strings_are_repaired():
    raw = r'{"pairs": [{"question": "Simplify \frac{a}{b} \times \beta \neq \sqrt{2}", "answer": "\(x\)\nDone"}]}'
    parsed, error = parse_reply(ex.ExtractReply, raw, "stop")
    assert error is None
    assert parsed.pairs[0].question == r"Simplify \frac{a}{b} \times \beta \neq \sqrt{2}"
    assert parsed.pairs[0].answer == "\\(x\\)\nDone"  # a real newline escape stays a newline
    assert repair_escapes(r'"\\frac and \u00e9"') == r'"\\frac and \u00e9"'  # already escaped / unicode: untouched


def _result(pairs: list[dict]) -> LLMResult:
    return LLMResult("x", "ok", ex.ExtractReply(pairs=pairs), None, None)


def test_one_question_is_kept_once_per_page_with_a_reason_that_says_why():
    seen: dict = {}
    pair = TWO_PAIRS[0]
    first = ex.chunk_rows("d", 0, PAGE, _result([pair, pair]), "m", "p", 0.5, seen)
    assert [r["status"] for r in first] == ["ok", "rejected"]
    assert first[1]["error"].startswith("the model returned this question twice")
    overlap = ex.chunk_rows("d", 1, PAGE, _result([dict(pair, answer=TWO_PAIRS[0]["answer"])]), "m", "p", 0.5, seen)
    assert overlap[0]["status"] == "rejected" and "where chunks 0 and 1 overlap" in overlap[0]["error"]
    later = ex.chunk_rows("d", 3, PAGE, _result([pair]), "m", "p", 0.5, seen)
    assert "the page asks this question again (first in chunk 0" in later[0]["error"]


def test_copied_few_shot_examples_and_invented_answers_are_rejected():
    prompt = ex.ChatPrompt.load("extract")
    examples = prompt.example_questions()
    assert len(examples) == 3  # the shipped prompt's positive examples
    copied = json.loads([c for r, c in prompt.prefix if r == "assistant"][0])["pairs"][0]
    page = PAGE + "\n" + copied["question"] + "\n" + copied["answer"]  # even when its words are on the page
    rows = ex.chunk_rows("d", 0, page, _result([copied, dict(TWO_PAIRS[1], answer="It is 7x^9 by magic.")]),
                         "m", "p", 0.5, {}, examples)
    assert rows[0]["status"] == "rejected" and "few-shot example" in rows[0]["error"]
    assert rows[1]["status"] == "rejected" and rows[1]["error"].startswith("answer not found on the page")


def test_few_shot_examples_are_balanced_and_end_with_a_pair():
    prompt = ex.ChatPrompt.load("extract")
    replies = [json.loads(c)["pairs"] for r, c in prompt.prefix if r == "assistant"]
    assert any(not p for p in replies) and sum(bool(p) for p in replies) >= 2
    assert replies[-1], "the example right before the page must not be the empty reply (small models copy it)"


def test_a_long_page_sends_the_chunk_with_the_exercise_and_its_solution():
    intro = "\n".join(f"Section text line {i} about sequences and their history." for i in range(60))
    exercises = "".join(f"Exercise {k}. Find the sum of 2 + 4 + ... + {100 * k}.\n"
                        f"Solution. There are {50 * k} terms with mean {50 * k + 1}, so the sum is "
                        f"{50 * k * (50 * k + 1)}.\n" for k in (1, 2, 3))
    chunks, reason = prepare_page(intro + "\n" + exercises, CleanParams(chunk_chars=600, overlap_chars=0, max_chunks=1))
    assert reason is None and len(chunks) == 1
    number, text = chunks[0]
    assert number > 0 and "Exercise 1." in text and "Solution." in text
    assert qa_signal(text) > qa_signal(intro[:600]) == 0


def test_statements_names_and_one_word_answers_are_not_pairs():
    """What a 1.5B model returned on a real forum thread, each word of it on the page."""
    page = ("hardcorerobot\nJust to make sure that the srt file are stored in UTF-8 format.\n"
            "alvinsiu\nI had similar experience and record my solution in my blog.\n"
            "How do I show Chinese subtitles from an srt file?\nSave the srt file as UTF-8 and pick a CJK font.\n")
    rows = ex.chunk_rows("d", 0, page, _result([
        {"question": "Just to make sure that the srt file are stored in UTF-8 format.", "answer": "hardcorerobot"},
        {"question": "alvinsiu", "answer": "I had similar experience and record my solution in my blog."},
        {"question": "How do I show Chinese subtitles from an srt file?", "answer": "hardcorerobot"},
        {"question": "How do I show Chinese subtitles from an srt file?",
         "answer": "Save the srt file as UTF-8 and pick a CJK font."}]), "m", "p", 0.5, {})
    assert [r["status"] for r in rows] == ["rejected", "rejected", "rejected", "ok"]
    assert rows[0]["error"].startswith("the question asks nothing") and rows[1]["error"].startswith("the question asks")
    assert rows[2]["error"].startswith("the answer is too short")
    # a sentence cut at a colon is not a fill-in-the-blank question here; a signature of links is no answer
    more = ex.chunk_rows("d", 1, page + "\nsee http://alvinsiu.blogspot.hk/2009/08/subtitles-vlc.html\n", _result([
        {"question": "I had similar experience and record my solution in my blog :", "answer": "Save the srt file as UTF-8."},
        {"question": "How do I show Chinese subtitles from an srt file?",
         "answer": "see http://alvinsiu.blogspot.hk/2009/08/subtitles-vlc.html"}]), "m", "p", 0.5, {})
    assert more[0]["error"].startswith("the question asks nothing") and more[1]["error"].startswith("the answer is mostly links")
