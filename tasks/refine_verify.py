"""Checks that a refined pair is no worse than the extracted pair it came from.

Small refiner models often make pairs worse: they turn the question into a statement of its
answer ("The characteristic polynomial of A is ..."), replace a correct final answer, or stop in
the middle of a code block. `verify` compares a refined pair with its source and names the first
such defect; `answer_agreement` measures how far several refiners of one pair agree on its final
result. Pure functions (regex, fractions, polars): no LLM, no warehouse.
"""
from __future__ import annotations

import re
from fractions import Fraction

import polars as pl

# ---- does the question still ask something? -------------------------------------------------

# Question words and auxiliaries that open a direct question ("Is A invertible", "How many ...").
_INTERROGATIVE = ("what|how|why|which|who|whom|whose|is|are|was|were|am|can|does|do|did|should|could|would|will|"
                  "shall|may|might|has|have")
# "When x = 2, y is 7." is a statement: these two only ask when an auxiliary follows.
_WH_CONJUNCTION = (r"(?:when|where)\s+(?:is|are|was|were|do|does|did|can|could|will|would|should|has|have|had|"
                   r"may|might|must|shall)")
# Imperatives of exercises and requests; a declarative sentence rarely opens with a bare verb.
_IMPERATIVE = ("find|compute|calculate|determine|evaluate|solve|prove|show|explain|derive|simplify|write|give|list|"
               "describe|state|estimate|express|sketch|verify|use|identify|define|classify|convert|graph|plot|"
               "factor|factorise|factorize|expand|integrate|differentiate|construct|implement|create|translate|"
               "rewrite|complete|choose|select|compare|discuss|justify|analyse|analyze|check|predict|draw|"
               "approximate|obtain|demonstrate|decide|apply|summarize|summarise|outline|suggest|fix|debug|name|"
               "tell|help|enter|multiply|divide|add|subtract|arrange|reduce|rationalize|rationalise|"
               "let\\s+us\\s+\\w+|let's\\s+\\w+")
# Lead-ins stripped before the first word is looked at: labels, enumerations, politeness, connectives.
_LEAD_IN = re.compile(r"^(?:(?:question|problem|exercise|task|q)\b\s*(?:\d+\s*[:.)-]?|[:.)-])\s*|"
                      r"\(?[a-z0-9]{1,2}[.)]\s+|[-*•]\s*|"
                      r"(?:please|now|then|also|hence|thus|finally|first|so|and|but|next|completely|carefully|"
                      r"briefly)\b,?\s*)+", re.I)
# Verbs that are also common nouns ("..., 2 and 3, sum to 5"): imperatives only at a sentence start.
_IMPERATIVE_AT_START = "sum|round|count|rank|order"
_PREP_WH = r"(?:in|at|for|by|from|to|with|on|of)\s+(?:what|which|how|whom|whose)"  # "In how many ways ..."
_ASK_START = re.compile(rf"^(?:(?:{_INTERROGATIVE})\b|{_WH_CONJUNCTION}\b|{_PREP_WH}\b|"
                        rf"(?:{_IMPERATIVE}|{_IMPERATIVE_AT_START})\b)", re.I)
# Inside a sentence only an imperative or how/what/why opens an ask ("Given $x = -2$ find ...",
# "If she has 10 employees, how much ..."); "which", "in which case" continue a statement.
_ASK_INSIDE = re.compile(rf"(?:,\s*(?:and\s+)?|\$|\\[\])]|\\end\{{\w+\*?\}})\s*(?:please\s+|then\s+)?"
                         rf"(?:{_IMPERATIVE}|how|what|why|(?:in|at|by|to|for)\s+(?:what|how))\b", re.I)
_WANTS_TO_KNOW = re.compile(r"\b(?:wonder(?:s|ing)?|find\s+out|(?:want|need|like)\s+to\s+know|"
                            r"would\s+like\s+to\s+(?:know|see|understand)|"
                            # a forum's request for help: "I need to remove the page parameter ..."
                            r"i(?:\s+am|'m)?\s+(?:need|want|trying|try|looking\s+for\s+a\s+way)\s+to|is\s+there\s+a\s+way)\b",
                            re.I)
# A cloze asks as well: "The cost price of the fan is", "... the man:", "x = ____"; a statement ends
# on its content, not on a function word. (A stem ending on any other word, "A plant that grows along
# a trellis exhibits", is not told apart from a statement missing its full stop: not counted.)
_CLOZE_END = re.compile(r"(?:\b(?:is|are|was|were|be|equals?|the|an?|of|to|by|for|in|on|at|with|from|when|that|"
                        r"than|as|because|except|called|requires?|entails?)|:|=|\.{3}|…)\s*$", re.I)
_BLANK = re.compile(r"_{3,}")
# Sentence boundaries, also "2^x.$ Find" and "...$.Find" in LaTeX-heavy text.
# (not a factorial "5! is", nor "e.g. the"). "Problem: find x" splits after the colon.
_SENTENCE_SPLIT = re.compile(r"(?:(?<=[.!])|(?<=[.!][$)]))(?:\s+|(?=[A-Z]))(?![a-z])|(?<=[:;])\s+|(?<=[:;]\$)\s+|\n+")


def asks_something(question: str, cloze: bool = True) -> bool:
    """True when the text still asks: a "?", a wish to know, a cloze, a sentence opening with a
    question word or an imperative, or an imperative inside one. Only sentence *starts* count for
    question words, so "The polynomial of A is x^2-5x+6." (an "is" mid-sentence) is no ask.
    `cloze=False` for text copied from a page, where a line ending in ":" or "..." is a cut
    sentence far more often than a fill-in-the-blank stem."""
    if "?" in question or _WANTS_TO_KNOW.search(question) or _ASK_INSIDE.search(question):
        return True
    if cloze and (_CLOZE_END.search(question.replace("$", "").strip()) or _BLANK.search(question)):
        return True
    for sentence in _SENTENCE_SPLIT.split(question):
        sentence = _LEAD_IN.sub("", sentence.strip().lstrip("$\\*_#>\"'(").strip())
        if sentence and _ASK_START.match(sentence):
            return True
    return False


# ---- the final result of an answer ------------------------------------------------------------

_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:/\d+)?%?(?![\w])")
_ANSWER_IS = re.compile(r"\b(?:final\s+answer|answer|result)\s*(?:is|:|=|would\s+be|will\s+be)\s*:?\s*"
                        r"(?P<x>[^\n]+)", re.I)
_GSM_MARK = re.compile(r"####\s*(?P<x>[^\n]+)")
_UNITS = re.compile(r"\\(?:text|mathrm|textbf|mathbf|operatorname|textrm)\s*\{([^{}]*)\}")
_CODE_LINE = re.compile(r"^\s*(?:def |class |import |from \S+ import |#include|public |function |return\b)"
                        r"|[;{}]\s*$", re.M)
_TAIL_CHARS = 80  # a fallback number must sit this close to the end to be "the result"


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """Content of the balanced {...} opening at text[start] and the index after it."""
    if start >= len(text) or text[start] != "{":
        return None
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1:i], i + 1
    return None


def _unwrap_fracs(s: str) -> str:
    r"""\frac{a}{b} (and \dfrac, \tfrac, \frac12) -> a/b, or (a)/(b) when a or b is not a plain token."""
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\1/\2", s)
    while (i := s.find("\\frac")) >= 0:
        num = _braced(s, i + 5)
        den = _braced(s, num[1]) if num else None
        if not den:
            return s[:i] + s[i + 5:]  # malformed: drop the command, keep the rest
        a, b = (x if re.fullmatch(r"[-\w.]+", x) else f"({x})" for x in (num[0].strip(), den[0].strip()))
        s = s[:i] + f"{a}/{b}" + s[den[1]:]
    return s


def canonical_number(s: str) -> str | None:
    """'0.5', '1/2', '2/4', '.50' -> '1/2'; '3.0' -> '3'; '50%' -> '50%'; None when not a number."""
    pct = s.endswith("%")
    body = s[:-1] if pct else s
    body = body.replace(",", "").lstrip("+")
    if not re.fullmatch(r"-?(?:\d+\.?\d*|\.\d+)(?:/\d+)?", body):
        return None
    try:
        f = Fraction(body)
    except (ValueError, ZeroDivisionError):
        return None
    out = str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"
    return out + ("%" if pct else "")


def normalize_result(x: str) -> str | None:
    """One spelling per result: no $, \\left/\\right, spacing, units after a number, or trailing dot;
    numbers in a canonical reduced form (see canonical_number). None when nothing is left."""
    s = x.strip().replace("$", "")
    s = re.sub(r"\\(?:left|right|displaystyle)\b", "", s)
    s = _unwrap_fracs(s)
    s = s.replace("\\%", "%").replace("^\\circ", "").replace("^{\\circ}", "").replace("°", "")
    s = re.sub(r"\\[,;:! ]|~", " ", s)
    s = _UNITS.sub(lambda m: f" {m.group(1)} ", s).strip().rstrip(".").strip()
    # "25 min", "25\text{ minutes}", "12 dollars" -> 25; but "2x" stays an expression.
    m = re.fullmatch(r"([-+]?[\d.,/]+%?)(?:\s+[A-Za-z][A-Za-z./^\d]*|[A-Za-z]{2,}[A-Za-z./^\d]*)"
                     r"(?:\s+[A-Za-z][\w./^]*)*", s)
    if m and canonical_number(m.group(1)):
        s = m.group(1)
    s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s)  # thousands separators
    s = re.sub(r"\s+", "", s).rstrip(".")
    if not s:
        return None
    return canonical_number(s) or s


def _answer_phrase(x: str) -> str | None:
    """The result in the words after "answer is": a math span, a leading number, or one short token.
    Prose ("that print is a function") is not a checkable result."""
    x = x.strip()
    if x.startswith("$"):
        m = re.match(r"\$\$?(.+?)\$\$?", x)
        return m.group(1) if m else None
    if x.startswith("\\(") or x.startswith("\\["):
        m = re.match(r"\\[(\[](.+?)\\[)\]]", x)
        return m.group(1) if m else None
    if x.startswith("\\boxed"):
        return None  # handled by the \boxed rule
    m = re.match(r"(?:\\frac\s*\{[^{}]*\}\s*\{[^{}]*\}|[-+]?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?%?)", x)
    if m:
        return m.group(0)
    m = re.match(r"\(?([A-Za-z])\)?(?=[\s.,;]|$)", x)  # a multiple-choice letter: "(C)", "B."
    return m.group(1) if m else None


def _looks_like_code(text: str) -> bool:
    return "```" in text or len(_CODE_LINE.findall(text)) >= 2


def _last(pattern: re.Pattern, text: str) -> re.Match | None:
    found = None
    for found in pattern.finditer(text):
        pass
    return found


def final_answer(text: str | None) -> str | None:
    r"""The answer's final result, normalized so equal results compare equal; None when there is
    nothing checkable (prose, code). In order: the last \boxed{...}; "answer is X" / "#### X";
    "= X" near the end; the last number near the end."""
    return _final(text)[0]


def _final(text: str | None) -> tuple[str | None, bool]:
    """(result, marked): marked = stated as the result (boxed, "answer is", "####", "= X"), not just
    the last number of the text, which may be incidental ("... in Python 3.")."""
    if not text:
        return None, False
    boxed = _last(re.compile(r"\\(?:boxed|fbox)\s*(?=\{)"), text)
    if boxed and (inner := _braced(text, boxed.end())) and (r := normalize_result(inner[0])):
        return r, True
    for pattern in (_GSM_MARK, _ANSWER_IS):
        m = _last(pattern, text)
        if m and (phrase := _answer_phrase(m.group("x"))) and (r := normalize_result(phrase)):
            return r, True
    if _looks_like_code(text):
        return None, False
    tail = text.rstrip()[-_TAIL_CHARS * 2:]
    m = _last(re.compile(r"=\s*([^=\n]+?)\s*(?:\$|\\\]|\\\)|\n|\.\s|\.$|,\s|;|$)"), tail)
    if m and m.start() >= len(tail) - _TAIL_CHARS and (phrase := _answer_phrase(m.group(1))):
        if r := normalize_result(phrase):
            return r, True
    numbers = numbers_in(text[-_TAIL_CHARS:])
    return (numbers[-1], False) if numbers else (None, False)


def numbers_in(text: str) -> list[str]:
    """Every number of the text (fractions unwrapped), canonical, in order."""
    flat = _unwrap_fracs(text.replace("$", "")).replace("\\%", "%")
    out = []
    for m in _NUMBER.finditer(flat):
        if re.search(r"\d", m.group(0)) and (n := canonical_number(m.group(0).rstrip("."))):
            out.append(n)
    return out


# ---- verification -----------------------------------------------------------------------------

# A refiner may change a wrong result, but then it must say so (prompts/refine.md asks it to).
_EXPLAINS_CHANGE = re.compile(r"\b(?:incorrect|mistakes?|mistaken|errors?|erroneous|wrong|actually|should\s+be|"
                              r"correct(?:ed|ion|ing)|typo|miscalculat\w*|not\s+correct)\b", re.I)
MIN_LENGTH_SHARE = 0.35  # a refined answer this much shorter than a long source lost content
LONG_SOURCE_CHARS = 200


def _same(a: str | None, b: str | None) -> bool:
    """Equal results; "30%" and "30" count as one (one text writes the sign, the other does not)."""
    return a is not None and b is not None and a.rstrip("%") == b.rstrip("%")


def _contains_result(answer: str, result: str) -> bool:
    """The refined answer still states the source's result somewhere (maybe not last)."""
    if any(_same(result, n) for n in numbers_in(answer)):
        return True
    flat = re.sub(r"\s+", "", _unwrap_fracs(answer.replace("$", "")))
    return canonical_number(result) is None and result in flat


_CONTENT_WORD = re.compile(r"[^\W\d_]{4,}")
MIN_KEPT_WORDS = 0.3  # a refinement adds steps around the source's answer; it does not replace it


def _kept(source: str, refined: str) -> float:
    """Share of the source answer's content words (4+ letters) still in the refined answer; 1.0
    when the source has fewer than 12 (a short answer may be reworded whole)."""
    words = {w.lower() for w in _CONTENT_WORD.findall(source)}
    if len(words) < 12:
        return 1.0
    return len(words & {w.lower() for w in _CONTENT_WORD.findall(refined)}) / len(words)


def _short(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()[:80]


def verify(source_q: str, source_a: str, refined_q: str, refined_a: str) -> str | None:
    """None when the refined pair may replace its source, else why not (quoting the bad text briefly)."""
    if not asks_something(refined_q):
        return f'refined question no longer asks anything: "{_short(refined_q)}"'
    if refined_a.count("```") % 2:
        return "answer cut short: it ends inside a code block"
    if len(source_a) >= LONG_SOURCE_CHARS and len(refined_a) < MIN_LENGTH_SHARE * len(source_a):
        return f"answer cut short: {len(refined_a)} characters for a source of {len(source_a)}"
    before, marked = _final(source_a)
    after = final_answer(refined_a)
    explained = _EXPLAINS_CHANGE.search(refined_a)
    # None: nothing checkable, or an incidental last number the refiner left out of prose
    if before is not None and (after is not None or marked):
        if not _same(after, before) and not _contains_result(refined_a, before) and not explained:
            return f"final answer changed from {before} to {after or 'nothing checkable'} without saying why"
    if _kept(source_a, refined_a) < MIN_KEPT_WORDS:
        return f'the refined answer drops what the source said: "{_short(refined_a)}"'
    return None


def answer_agreement(df: pl.DataFrame) -> pl.DataFrame:
    """refined_id -> answer_agreement: the share of the pair's refiners (those with a checkable final
    answer) that reached this row's final answer. Null when fewer than two refiners are checkable
    (nothing to compare) or when this row has no checkable answer itself."""
    finals = df.select("qa_id", "refined_id", pl.col("answer").map_elements(
        final_answer, return_dtype=pl.String, skip_nulls=True).str.strip_chars_end("%").alias("_final"))
    checkable = pl.col("_final").is_not_null()
    n_checkable = checkable.sum().over("qa_id")
    same = pl.len().over("qa_id", "_final")
    return finals.select("refined_id", pl.when(checkable & (n_checkable >= 2))
                         .then(same / n_checkable).otherwise(None).cast(pl.Float64).alias("answer_agreement"))


def usable(keep_unrefined: bool = True) -> pl.Expr:
    """qa_refined rows that may enter the dataset: verified refinements, plus the extracted pairs
    standing in for failed verifications when the curate setting keeps them."""
    return pl.col("status").is_in(["ok", "unrefined"] if keep_unrefined else ["ok"])
