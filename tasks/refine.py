"""Stage `refine`: extracted pairs -> `qa_refined`, one version per refiner model.

Each `ok` pair of a `qa_extracted` version is sent to a refiner LLM (prompts/refine.md: fix the
formatting, LaTeX for maths, make the question self-contained, add the missing reasoning, change
the final answer only when very confident). Several refiners can run over the same pairs, as
the paper did for diversity; each one's output is its own fingerprinted version of
`qa_refined`, side by side in `qa_refined_all`, every row with lineage (`qa_id`, `doc_id`).

A pair whose call fails, or whose reply is empty, gets a `failed` row with the reason, so the
count of rows per version always equals the count of `ok` pairs. Shards follow `qa_extracted`
(same shard ids); a shard already written is skipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import polars as pl
import pydantic

from tasks.extract import ChatPrompt
from tasks.llm_client import LLMClient, LLMRequest, LLMSettings
from warehouse import Warehouse, content_hash, fingerprint

STAGE = "refine"
CODE_VERSION = "1"


class RefineReply(pydantic.BaseModel):
    question: str
    answer: str


@dataclass(frozen=True)
class RefineParams:
    prompt: str = "refine"
    max_input_chars: int = 6000  # a longer pair is cut (question first) so it fits the context

    def fingerprint(self, settings: LLMSettings, extract_fp: str) -> str:
        # Temperature and max_tokens change the replies, so the same model at another temperature
        # is another version (a cheap second "refiner" for diversity).
        return fingerprint(
            STAGE, code_version=CODE_VERSION, upstream=[extract_fp], prompt=ChatPrompt.load(self.prompt).text,
            model=settings.model,
            params={"max_input_chars": self.max_input_chars, "temperature": settings.temperature,
                    "max_tokens": settings.max_tokens},
        )


def refined_id(qa_id: str, fp: str) -> str:
    """Unique across versions: the same pair refined by two models gives two ids."""
    return content_hash(f"{qa_id}|{fp}")


def _fit(question: str, answer: str, limit: int) -> tuple[str, str]:
    q = question[: limit // 2] if len(question) + len(answer) > limit and len(question) > limit // 2 else question
    return q, answer[: max(0, limit - len(q))]


def refine_shard(wh: Warehouse, settings: LLMSettings, params: RefineParams, fp: str, extract_fp: str,
                 shard: str, client_factory: Callable[[LLMSettings, Warehouse], LLMClient] = LLMClient) -> dict:
    """Refine the ok pairs of one qa_extracted shard with one refiner; returns counters."""
    if wh.has_shard("qa_refined", fp, shard):
        return {"shard": shard, "skipped": True}
    prompt = ChatPrompt.load(params.prompt)
    pairs = (wh.read_shard("qa_extracted", extract_fp, shard).filter(pl.col("status") == "ok")
             .select("qa_id", "doc_id", "question", "answer"))
    requests = []
    for p in pairs.iter_rows(named=True):
        q, a = _fit(p["question"], p["answer"], params.max_input_chars)
        requests.append(LLMRequest(item_id=p["qa_id"], response_model=RefineReply,
                                   messages=prompt.render(question=q, answer=a)))
    client = client_factory(settings, wh)
    results = client.run(requests, stage=STAGE, fingerprint=fp, shard=shard)
    rows = []
    for p, res in zip(pairs.iter_rows(named=True), results):
        row = dict(refined_id=refined_id(p["qa_id"], fp), qa_id=p["qa_id"], doc_id=p["doc_id"], question=None,
                   answer=None, model=settings.model, prompt_fingerprint=prompt.fingerprint, status="failed",
                   error=None)
        reply = res.parsed if res.ok else None
        if reply is None:
            row["error"] = f"{res.status}: {res.error}"
        elif not reply.question.strip() or not reply.answer.strip():  # type: ignore[attr-defined]
            row["error"] = "empty question or answer in the reply"
        else:
            row.update(question=reply.question.strip(), answer=reply.answer.strip(), status="ok")  # type: ignore[attr-defined]
        rows.append(row)
    df = pl.DataFrame(rows, schema=wh.spec("qa_refined").schema)
    wh.write_shard("qa_refined", fp, shard, df)
    ok = int((df["status"] == "ok").sum())
    return {"shard": shard, "skipped": False, "pairs": pairs.height, "ok": ok, "failed": df.height - ok,
            "calls": client.network_calls, "cached": sum(r.cached for r in results)}
