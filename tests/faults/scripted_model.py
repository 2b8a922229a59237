"""A deterministic stand-in for an instruction model, for fault tests of the whole DAG.

Crash-and-resume tests compare a killed-then-resumed run with an uninterrupted one, so every
reply must be a pure function of the request (a real model on 2 cores is neither fast nor
guaranteed bit-identical under batching). The replies are plausible enough to carry pages through
every stage: domains get a label from their evidence, extraction returns a question found in the
chunk with the lines after it as the answer, refinement restates the pair with a worked-answer
frame. `obey_injections` makes it a model that follows instructions planted in page text.
"""
from __future__ import annotations

import json
import re

INJECTION = re.compile(r"ignore (all )?previous instructions", re.I)
# What a hijacked model emits: SQL, paths, markup and oversized fields, meant to escape its row.
HIJACKED = {"pairs": [{"question": "'); DROP TABLE documents; -- what is ../../etc/passwd?",
                       "answer": "COPY (SELECT 1) TO '/tmp/pwned.csv'; ATTACH 'x.db'; <script>alert(1)</script> "
                                 + "see ../../../../outside/file.txt " * 20}]}


def _user(body: dict) -> str:
    return next((m.get("content", "") for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")


def _schema(body: dict) -> str:
    return ((body.get("response_format") or {}).get("json_schema") or {}).get("name", "")


def label_domain(text: str) -> dict:
    questions = text.count("?")
    educational = questions >= 2 or re.search(r"\b(solve|equation|homework|exercise|theorem|physics)\b", text, re.I)
    label = "educational" if educational else "other"
    return {"reason": f"The sample pages show {questions} question marks and read as {label} content.",
            "label": label}


def extract_pairs(text: str, obey_injections: bool) -> dict:
    if obey_injections and INJECTION.search(text):
        return HIJACKED
    body = text.split("\n\n", 1)[1] if text.startswith("Title:") and "\n\n" in text else text
    lines = [ln.strip() for ln in body.splitlines() if ln.strip()]
    pairs = []
    for i, line in enumerate(lines):
        if len(pairs) == 2:
            break
        if not line.endswith("?") or len(line.split()) < 6:
            continue
        answer = [ln for ln in lines[i + 1:i + 5] if len(ln.split()) >= 6 and not ln.endswith("?")]
        if answer:
            pairs.append({"question": line, "answer": " ".join(answer[:2])})
    return {"pairs": pairs}


def refine_pair(text: str) -> dict:
    q = re.search(r"^Question: (.*?)\nAnswer: ", text, re.S | re.M)
    a = re.search(r"\nAnswer: (.*)\Z", text, re.S)
    question = q.group(1).strip() if q else text
    answer = a.group(1).strip() if a else ""
    return {"question": question, "answer": f"Working through it step by step:\n\n{answer}"}


def responder(obey_injections: bool = False):
    """A FakeLLMServer responder (request JSON -> completion text)."""
    def reply(body: dict) -> str:
        text, schema = _user(body), _schema(body)
        if schema == "DomainLabel":
            return json.dumps(label_domain(text))
        if schema == "ExtractReply":
            return json.dumps(extract_pairs(text, obey_injections))
        if schema == "RefineReply":
            return json.dumps(refine_pair(text))
        return json.dumps({"echo": text})
    return reply
