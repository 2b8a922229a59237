"""Repairs applied to a model's JSON before it is validated.

LaTeX inside JSON strings is the common failure of small models on maths pages: `\\frac` written
with one backslash is the JSON escape `\\f` (a form feed) followed by "rac", and `\\sqrt` or `\\(`
is an escape JSON does not know, so the reply does not parse at all.
"""
from __future__ import annotations

import re

_BACKSLASHES = re.compile(r"(\\+)(u[0-9a-fA-F]{4}|[A-Za-z]+|.?)", re.S)
# LaTeX commands that begin with a letter JSON reads as an escape (\b \f \n \r \t \u): a model that
# writes `\frac` in a JSON string means the command, not a form feed followed by "rac".
LATEX_COMMANDS = frozenset("""
frac beta bar bf binom begin boxed big bigg bigl bigr bmod bot backslash bullet bigcup bigcap bigoplus
fbox flat forall frak footnotesize theta tau tan tanh text textbf textit textrm tfrac times to top
triangle tilde tiny therefore neq nabla nu newline not ni nmid nolimits noindent nexists notin nleq ngeq
right rho rangle rightarrow rfloor rceil rm underline underbrace union uparrow upsilon
""".split())


def repair_escapes(raw: str) -> str:
    r"""Double the backslash of LaTeX inside JSON strings: unknown escapes (`\(`, `\sqrt`) would not
    parse, and known ones (`\frac`, `\times`) would parse into control characters."""
    def fix(m: re.Match) -> str:
        slashes, word = m.group(1), m.group(2)
        if len(slashes) % 2 == 0:  # escaped backslashes only
            return m.group(0)
        if not word or word[0] in '"\\/':
            return m.group(0)
        if word[0] in "bfnrtu" and word not in LATEX_COMMANDS and (word[0] != "u" or len(word) == 5):
            return m.group(0)  # a real escape: "\nThe answer", "\u00e9"
        return slashes + "\\" + word
    return _BACKSLASHES.sub(fix, raw) if "\\" in raw else raw
