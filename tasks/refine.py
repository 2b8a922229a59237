"""Stage `refine`: extracted pairs -> `qa_refined`, one version per refiner model.

Each `ok` pair of a `qa_extracted` version is sent to a refiner LLM (prompts/refine.md: fix the
formatting, LaTeX for maths, make the question self-contained, add the missing reasoning, change
the final answer only when very confident). Several refiners can run over the same pairs, as
the paper did for diversity; each one's output is its own fingerprinted version of
`qa_refined`, side by side in `qa_refined_all`, every row with lineage (`qa_id`, `doc_id`).

Small refiners often make a pair worse (a question turned into a statement, a correct result
replaced, an answer cut off), so every reply is checked against its source pair
(tasks/refine_verify.py). The row's status says what happened:
  * `ok`: refined and verified;
  * `unrefined`: the refinement failed verification; the extracted pair stands in unchanged and
    `error` says why (quoting the bad text briefly);
  * `failed`: the call failed, or the reply was empty or invalid (`error` has the reason).
So the count of rows per version always equals the count of `ok` extracted pairs. Shards follow
`qa_extracted` (same shard ids); a shard already written is skipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import polars as pl
import pydantic

from tasks.extract import ChatPrompt, newest_failed
from tasks.llm_client import LLMClient, LLMRequest, LLMSettings
from tasks.refine_verify import verify
from warehouse import Warehouse, content_hash, fingerprint

STAGE = "refine"
CODE_VERSION = "2"  # 2: replies verified against the source pair (status unrefined); max_tokens sized to it


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


def reply_budget(question: str, answer: str, max_tokens: int) -> int:
    """max_tokens for one pair: a refinement may add steps (about double the source, ~3 characters
    per token, plus room for the JSON); a reply far longer than that is a model that runs on."""
    return max(128, min(max_tokens, 2 * (len(question) + len(answer)) // 3 + 192))


RETRY = "-refine-retry"  # a retry shard is named <extraction shard>-refine-retry<attempt>-<hash>


def failed_refinements(wh: Warehouse, fp: str) -> dict[str, tuple[str, list[str], int]]:
    """`--retry-failed`: retry shard -> (its extraction shard, qa_ids whose newest attempt failed,
    attempt). Named by the pairs they retry, so a killed retry resumes its own journal."""
    if fp not in wh.versions("qa_refined"):
        return {}
    shards = (pl.scan_parquet(str(wh.version_dir("qa_refined", fp) / "part-*.parquet"), schema=wh.spec("qa_refined").schema,
                              missing_columns="insert", include_file_paths="_path")
              .with_columns(pl.col("_path").str.extract(r"part-(.+)\.parquet$").str.split(RETRY).list.first()
                            .alias("_source")))
    rows = newest_failed(shards, ["refined_id"], ["qa_id", "_source"]).sort("qa_id").collect()
    out = {}
    for (source,), grp in rows.group_by(["_source"], maintain_order=True):
        ids, attempt = grp["qa_id"].to_list(), int(grp["attempt"].max()) + 1
        out[f"{source}{RETRY}{attempt}-{content_hash(chr(10).join(ids), 8)}"] = (source, ids, attempt)
    return out


def refine_shard(wh: Warehouse, settings: LLMSettings, params: RefineParams, fp: str, extract_fp: str,
                 shard: str, client_factory: Callable[[LLMSettings, Warehouse], LLMClient] = LLMClient,
                 retry: tuple[str, list[str], int] | None = None) -> dict:
    """Refine the ok pairs of one qa_extracted shard with one refiner; returns counters. `retry`
    (extraction shard, qa_ids, attempt) refines only those pairs again, into a shard of its own."""
    if wh.has_shard("qa_refined", fp, shard):
        return {"shard": shard, "skipped": True}
    prompt = ChatPrompt.load(params.prompt)
    source, only, attempt = retry or (shard, None, 1)
    pairs = (wh.read_shard("qa_extracted", extract_fp, source).filter(pl.col("status") == "ok")
             .select("qa_id", "doc_id", "question", "answer"))
    if only is not None:
        pairs = pairs.filter(pl.col("qa_id").is_in(only))
    requests, sent = [], []
    for p in pairs.iter_rows(named=True):
        q, a = _fit(p["question"], p["answer"], params.max_input_chars)
        sent.append((q, a))
        requests.append(LLMRequest(item_id=p["qa_id"], response_model=RefineReply,
                                   messages=prompt.render(question=q, answer=a),
                                   max_tokens=reply_budget(q, a, settings.max_tokens)))
    client = client_factory(settings, wh)
    results = client.run(requests, stage=STAGE, fingerprint=fp, shard=shard)
    rows = []
    for p, (sent_q, sent_a), res in zip(pairs.iter_rows(named=True), sent, results):
        row = dict(refined_id=refined_id(p["qa_id"], fp), qa_id=p["qa_id"], doc_id=p["doc_id"], question=None,
                   answer=None, model=settings.model, prompt_fingerprint=prompt.fingerprint, status="failed",
                   error=None)
        reply = res.parsed if res.ok else None
        if reply is None:
            row["error"] = f"{res.status}: {res.error}"
        elif not reply.question.strip() or not reply.answer.strip():  # type: ignore[attr-defined]
            row["error"] = "empty question or answer in the reply"
        else:
            q, a = reply.question.strip(), reply.answer.strip()  # type: ignore[attr-defined]
            # Checked against what the refiner saw; a failing reply never replaces the good source pair.
            reason = verify(sent_q, sent_a, q, a)
            if reason is None:
                row.update(question=q, answer=a, status="ok")
            else:
                row.update(question=p["question"], answer=p["answer"], status="unrefined", error=reason)
        rows.append(row)
    df = pl.DataFrame(rows, schema=wh.spec("qa_refined").schema).with_columns(attempt=pl.lit(attempt, pl.Int16))
    wh.write_shard("qa_refined", fp, shard, df)
    by_status = {s: int((df["status"] == s).sum()) for s in ("ok", "unrefined", "failed")}
    return {"shard": shard, "skipped": False, "pairs": pairs.height, **by_status,
            "calls": client.network_calls, "cached": sum(r.cached for r in results)}
