"""Verified refinements: a refined pair that got worse than its source is caught, and refiners that
disagree on a pair's final answer keep it out of the dataset (pure functions; a tmp warehouse)."""
from __future__ import annotations

import polars as pl
import pytest

from tasks import export
from tasks.decontaminate import pair_shard
from tasks.dedup import shard_name
from tasks.refine_verify import answer_agreement, asks_something, final_answer, verify
from warehouse import Warehouse

# The failure measured with a 1.5B refiner: the question became the statement of its answer.
SRC_Q = "Find the characteristic polynomial of A = [[2, 1], [1, 3]]."
SRC_A = ("det(A - xI) = (2 - x)(3 - x) - 1 = x^2 - 5x + 5, so the characteristic polynomial is "
         "$x^2 - 5x + 5$.")


@pytest.mark.parametrize("question", [
    "The characteristic polynomial of A is x^2-5x+6.",
    "When x = 2, the value of y is 7.",
    "This is a statement that is true, and it is long.",
    "However, the result is 5.",
    "Task is hard: the derivative of $x^2$ is $2x$.",
    "Since $5!$ is a factor of all three, their greatest common divisor is $5! = 120$.",
    "The roots of $x^2 - 5x + 6$, which are 2 and 3, sum to 5.",
])
def test_statements_do_not_ask(question):
    assert not asks_something(question)


@pytest.mark.parametrize("question", [
    "What is the characteristic polynomial of A",
    "Find the characteristic polynomial of $A$.",
    "Given a triangle with sides 3, 4 and 5, find its area.",
    "Let $A = [[2,1],[1,3]]$. Compute its eigenvalues.",
    "Problem 3: Prove that $\\sqrt{2}$ is irrational.",
    "(a) Show that f is continuous.",
    "Is every bounded sequence convergent",
    "How long does the pump take to fill the 300 L tank?",
    "Please explain why print fails in Python 3.",
    "If she has 10 employees who make $20,000 per year, how much would her salary be",
    "Let \\[f(x) = 3x + 5.\\]Find $f(-10)$.",  # MATH style: no space after display maths
    "Let $f(x) = 2^x.$ Find $f(3).$",
    "If a man reduces the price of a fan from Rs.400 to Rs.380, his loss rises by 2%. The cost price of the fan is",
    "In how many ways can 3 people be chosen from 6 couples so that no couple is chosen",
])
def test_questions_and_instructions_ask(question):
    assert asks_something(question)


def test_refined_statement_for_a_question_is_flagged():
    bad_q = "The characteristic polynomial of A = [[2, 1], [1, 3]] is $x^2 - 5x + 5$."
    reason = verify(SRC_Q, SRC_A, bad_q, SRC_A)
    assert reason and reason.startswith("refined question no longer asks anything") and "characteristic" in reason
    assert verify(SRC_Q, SRC_A, "Find the characteristic polynomial of $A = \\begin{pmatrix}2&1\\\\1&3\\end{pmatrix}$.",
                  SRC_A) is None


@pytest.mark.parametrize("text", ["0.5", "\\frac{1}{2}", "1/2", "2/4", "$\\dfrac{1}{2}$", "\\boxed{\\tfrac12}",
                                  "so the answer is 0.50.", "#### 1/2", "Hence $p = \\frac{2}{4}$."])
def test_equal_results_normalize_equal(text):
    assert final_answer(text) == "1/2"


def test_final_answer_forms():
    assert final_answer("The total is 1,000 dollars.") == "1000"
    assert final_answer("$$t = \\frac{300}{12} = 25\\ \\text{min}.$$\nThe tank is full after 25 minutes.") == "25"
    assert final_answer("\\boxed{x^2 - 5x + 5}") == final_answer("the answer is $x^2-5x+5$.") == "x^2-5x+5"
    assert final_answer("It rose by 50%.") == "50%"
    assert final_answer("The answer is (C).") == "C"
    assert final_answer("It is $x = 3$. \\boxed{4}? No: the total is \\boxed{5}.") == "5"  # the last box
    # nothing checkable: prose, code, a number far from the end
    assert final_answer("Use print() as a function: the statement form was removed from the language.") is None
    assert final_answer("```python\nfor i in range(10):\n    print(i)\n```") is None
    assert final_answer("Python 3 made print a function, " + "so every call needs parentheses around it " * 3) is None


def test_changed_final_answer_is_flagged_unless_explained():
    src_a = "The pump fills 12 L per minute and the tank holds 300 L, so 300/12 = 25 minutes."
    changed = "The time is volume over rate: $t = 300 / 15 = 20$ minutes."
    reason = verify("How long does it take?", src_a, "How long does it take to fill the tank?", changed)
    assert reason == "final answer changed from 25 to 20 without saying why"
    explained = ("The page's rate of 12 L/min is a typo: the pump data says 15 L/min, so "
                 "$t = 300 / 15 = 20$ minutes.")
    assert verify("How long does it take?", src_a, "How long does it take to fill the tank?", explained) is None
    # same result, written another way; or the result stated and then re-checked
    assert verify("How long?", "so it is 0.5 hours", "How long does it take?", "It takes $\\frac{1}{2}$ hours.") is None
    assert verify("How long?", src_a, "How long does it take?", "It takes 25 minutes; check: 25 * 12 = 300.") is None
    assert verify("What share is left?", "50 - 20 = 30", "What share of the germs is left?",
                  "There are $50 - 20 = 30\\%$ left.") is None  # 30 and 30% are one result
    # a number that merely ends a prose source ("Python 3") may go; a stated result may not
    assert verify("Why does print fail?", "print became a function in Python 3",
                  "Why does `print \"x\"` fail in Python 3?",
                  "Because print is a function now: call `print(\"x\")`.") is None


def test_cut_short_answers_are_flagged():
    long_a = "First we note that " + "the sum of the first n odd numbers grows like n squared, " * 6 + "so it is n^2."
    assert verify("Why?", long_a, "Why is it n^2?", "Because.").startswith("answer cut short")
    cut = "Use a loop:\n```python\nfor i in range(3):\n    print(i"
    assert verify("How do I print 0..2?", "loop", "How do I print 0, 1 and 2 in Python?", cut).startswith(
        "answer cut short")


def test_agreement_of_refiners():
    df = pl.DataFrame({
        "qa_id": ["q1", "q1", "q2", "q2", "q2", "q3", "q3", "q4"],
        "refined_id": ["a1", "b1", "a2", "b2", "c2", "a3", "b3", "a4"],
        "answer": ["so it is 0.5", "$\\frac{1}{2}$", "x = 3", "x = 4", "\\boxed{3}", "x = 3", "see the page", "7"],
    })
    got = dict(answer_agreement(df).iter_rows())
    assert got["a1"] == got["b1"] == 1.0  # 0.5 and \frac{1}{2} agree
    assert got["a2"] == got["c2"] == pytest.approx(2 / 3) and got["b2"] == pytest.approx(1 / 3)
    assert got["a3"] is None and got["b3"] is None  # one checkable refiner: nothing to compare
    assert got["a4"] is None


def _refined(fp: str, model: str, rows: list[tuple[str, str, str]], status: str = "ok") -> pl.DataFrame:
    return pl.DataFrame({
        "refined_id": [f"{fp}-{qa}" for qa, _, _ in rows], "qa_id": [qa for qa, _, _ in rows],
        "doc_id": [f"doc-{qa}" for qa, _, _ in rows], "question": [q for _, q, _ in rows],
        "answer": [a for _, _, a in rows], "model": model, "prompt_fingerprint": "p", "status": status,
        "error": None})


def test_disagreeing_refiners_are_left_out_of_the_dataset(tmp_path):
    wh = Warehouse(tmp_path / "warehouse")
    shard, dfp, cfp = "s-00000", "dedupfp", "deconfp"
    a = _refined("ra", "model-a", [("q1", "What is 1/2 as a decimal?", "It is 0.5."),
                                   ("q2", "How many apples are left?", "10 - 3 = 7 apples."),
                                   ("q3", "Explain recursion.", "A function that calls itself.")])
    b = _refined("rb", "model-b", [("q1", "Write 1/2 as a decimal.", "$\\frac{1}{2} = 0.5$"),
                                   ("q2", "How many apples remain?", "10 - 4 = 6 apples.")])
    b = pl.concat([b, _refined("rb", "model-b", [("q3", "Explain recursion.", "Calls itself.")], "unrefined")])
    for fp, rows in (("ra", a), ("rb", b)):
        wh.write_shard("qa_refined", fp, shard, rows)
        # nothing duplicated or contaminated: the agreement filter alone decides
        wh.write_shard("qa_duplicates", dfp, shard_name(fp, shard), wh.spec("qa_duplicates").empty())
        wh.write_shard("qa_contamination", cfp, pair_shard(fp, shard), wh.spec("qa_contamination").empty())

    def build(params: export.DatasetParams) -> tuple[pl.DataFrame, list[dict]]:
        out = export.dataset_fingerprint(dfp, cfp, ["ra", "rb"], [], params)
        res = [export.build_dataset_shard(wh, out, fp, shard, dfp, cfp, [], params=params, refined_fps=["ra", "rb"])
               for fp in ("ra", "rb")]
        return wh.scan("dataset", out).collect(), res

    ds, res = build(export.DatasetParams())  # the defaults: keep unrefined, full agreement
    assert sorted(ds["refined_id"]) == ["ra-q1", "ra-q3", "rb-q1", "rb-q3"]  # q2: 7 against 6
    assert sum(r["disagreement"] for r in res) == 2 and sum(r["rows_in"] for r in res) == 6
    got = dict(zip(ds["refined_id"], ds["answer_agreement"]))
    assert got["ra-q1"] == got["rb-q1"] == 1.0 and got["ra-q3"] is None
    assert dict(zip(ds["refined_id"], ds["refined"])) == {"ra-q1": True, "ra-q3": True, "rb-q1": True,
                                                          "rb-q3": False}

    ds, res = build(export.DatasetParams(keep_unrefined=False, min_answer_agreement=0.5))
    assert sorted(ds["refined_id"]) == ["ra-q1", "ra-q2", "ra-q3", "rb-q1", "rb-q2"]
    assert ds.filter(pl.col("qa_id") == "q2")["answer_agreement"].to_list() == [0.5, 0.5]
    assert sum(r["disagreement"] for r in res) == 0

    ds, _ = build(export.DatasetParams(min_answer_agreement=None))
    assert ds.height == 6


def test_unrefined_pairs_follow_the_curate_setting(tmp_path):
    """Dedup and decontamination see the unrefined stand-ins only when the dataset may keep them,
    and the setting is part of every fingerprint it changes."""
    from flows.settings import CurateSettings
    from tasks import decontaminate as decon
    from tasks import dedup

    assert CurateSettings().unrefined_pairs == "keep" and CurateSettings().min_answer_agreement == 1.0
    wh = Warehouse(tmp_path / "warehouse")
    rows = pl.concat([_refined("ra", "m", [("q1", "What is 2 + 2?", "4")]),
                      _refined("ra", "m", [("q2", "What is 3 + 3?", "6")], "unrefined"),
                      _refined("ra", "m", [("q3", "What is 5 + 5?", None)], "failed")])
    wh.write_shard("qa_refined", "ra", "s1", rows)
    for keep in (True, False):
        dp, cp = dedup.DedupParams(keep_unrefined=keep), decon.DecontamParams(keep_unrefined=keep)
        dfp, cfp = dp.fingerprint(["ra"]), cp.fingerprint(["ra"])
        assert dedup.dedup_batch(wh, dp, dfp, [("ra", "s1")])["rows_in"] == (2 if keep else 1)
        assert decon.decontaminate_shard(wh, cp, cfp, "pair", "ra", "s1")["rows_in"] == (2 if keep else 1)
    assert dedup.DedupParams().fingerprint(["ra"]) != dedup.DedupParams(keep_unrefined=False).fingerprint(["ra"])
    assert decon.DecontamParams().fingerprint(["ra"]) != decon.DecontamParams(keep_unrefined=False).fingerprint(["ra"])
    fps = {export.dataset_fingerprint("d", "c", ["ra"], [], export.DatasetParams(k, a))
           for k in (True, False) for a in (1.0, 0.5, None)}
    assert len(fps) == 6


def test_a_refinement_that_replaces_the_source_answer_is_flagged():
    src_a = ("Open the Settings page, choose Vulnerability, then switch off the Wi-Fi Security Advisor; "
             "the notification stops appearing after the next restart of the application window.")
    invented = "The title of the blog post is 'Solving a Quadratic Equation Using the Quadratic Formula'."
    assert verify("How do I turn off the notification?", src_a, "How do I turn off the notification?",
                  invented).startswith("the refined answer drops what the source said")
    kept = "Open Settings, choose Vulnerability and switch off the Wi-Fi Security Advisor; after a restart of the application the notification stops."
    assert verify("How do I turn off the notification?", src_a, "How do I turn off the notification?", kept) is None
