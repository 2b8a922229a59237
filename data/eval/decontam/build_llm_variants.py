"""Rewrite benchmark items with an LLM, for the decontamination calibration set (run by hand, output committed).

    .venv/bin/python data/eval/decontam/build_llm_variants.py [--base-url URL --model NAME]

Without --base-url the embedded llama.cpp server is started with the default embedded model.
Writes, next to this script:
  * rephrase_math.jsonl   - MATH test problems reworded, same mathematics (kind `rephrased`);
  * reversed_gsm8k.jsonl  - GSM8K test problems turned around GSM-Plus style: the answer is given
                            and one of the original quantities is asked for (kind `reversed`).
Each line: {"benchmark", "item_id", "kind", "text", "model"}. Items are a fixed stride through the
test sets, so a rebuild asks for the same items; replies that are empty, lack a question, or repeat
the item unchanged, or are far longer than it (a solution, not a rewrite) are dropped (and counted). Lines are appended as replies arrive and items already
in a file are not asked again, so an interrupted build resumes (delete the files to rebuild).
"""
from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import polars as pl

HERE = Path(__file__).resolve().parent
BENCH = HERE.parents[1] / "benchmarks"

SYSTEM = ("You rewrite math problems for a test of plagiarism detectors. You never solve a problem and never "
          "explain anything: you reply with one JSON object {\"problem\": \"...\"} holding the new problem text.")
REPHRASE = (
    "Reword this problem: change the wording and the order of the sentences, keep every number, every "
    "formula and exactly what is asked, so that the answer stays the same. Do not solve it.\n\n"
    "Example. Problem: Tom has 3 apples and buys 5 more. How many apples does he have?\n"
    "Reply: {{\"problem\": \"After buying another 5 apples, how many apples does Tom own if he started with 3?\"}}\n\n"
    "Problem: {text}")
REVERSE = (
    "Turn this problem around: its answer is {answer}. State that answer as a known fact, remove one of the "
    "numbers given in the problem, and ask for that number instead. Keep the story and the other numbers. "
    "Do not solve it.\n\n"
    "Example. Problem: Tom has 3 apples and buys 5 more. How many apples does he have? (answer 8)\n"
    "Reply: {{\"problem\": \"Tom has some apples and buys 5 more. Now he has 8 apples. How many apples did he "
    "have at first?\"}}\n\n"
    "Problem: {text}")
SCHEMA = {"type": "json_schema", "json_schema": {"name": "Rewrite", "schema": {
    "type": "object", "properties": {"problem": {"type": "string"}}, "required": ["problem"]}}}


def ask(client: openai.OpenAI, model: str, prompt: str) -> str:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
        temperature=0.7, max_tokens=300, seed=7, response_format=SCHEMA)
    if reply.choices[0].finish_reason != "stop":
        return ""
    try:
        return str(json.loads(reply.choices[0].message.content or "{}").get("problem", "")).strip()
    except ValueError:
        return ""


def build(client: openai.OpenAI, model: str, jobs: list[dict], out: Path) -> None:
    done = {json.loads(line)["item_id"] for line in out.read_text().splitlines()} if out.exists() else set()
    todo = [j for j in jobs if j["item_id"] not in done]
    kept = 0
    with ThreadPoolExecutor(2) as pool, out.open("a", encoding="utf-8") as f:
        for j, t in zip(todo, pool.map(lambda j: ask(client, model, j["prompt"]), todo)):
            # a reply that solves the problem instead (much longer than it) is not a rewrite
            if t and t.strip() != j["original"].strip() and len(t) < 2 * len(j["original"]) + 80:
                f.write(json.dumps(dict(benchmark=j["benchmark"], item_id=j["item_id"], kind=j["kind"], text=t,
                                        model=model), ensure_ascii=False) + "\n")
                f.flush()
                kept += 1
    print(f"{out.name}: {kept} of {len(todo)} new replies kept ({len(done)} were there)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url")
    ap.add_argument("--model")
    ap.add_argument("--math", type=int, default=40)
    ap.add_argument("--gsm8k", type=int, default=30)
    a = ap.parse_args()
    math = pl.read_ndjson(BENCH / "math_test.jsonl").with_row_index("item_id")
    gsm = pl.read_ndjson(BENCH / "gsm8k_test.jsonl").with_row_index("item_id")
    math_jobs = [dict(benchmark="math", item_id=str(r["item_id"]), kind="rephrased", original=r["problem"],
                      prompt=REPHRASE.format(text=r["problem"]))
                 for r in math.gather_every(len(math) // a.math).head(a.math).iter_rows(named=True)]
    gsm_jobs = [dict(benchmark="gsm8k", item_id=str(r["item_id"]), kind="reversed", original=r["question"],
                     prompt=REVERSE.format(text=r["question"], answer=r["answer"].split("####")[-1].strip()))
                for r in gsm.gather_every(len(gsm) // a.gsm8k, offset=5).head(a.gsm8k).iter_rows(named=True)]

    def run(base_url: str, model: str) -> None:
        client = openai.OpenAI(base_url=base_url, api_key="none", timeout=1800)
        build(client, model, math_jobs, HERE / "rephrase_math.jsonl")
        build(client, model, gsm_jobs, HERE / "reversed_gsm8k.jsonl")

    if a.base_url:
        run(a.base_url, a.model)
    else:
        from webinstruct.llm_server import EmbeddedServer
        with EmbeddedServer(n_parallel=2) as srv:
            run(srv.base_url, a.model or srv.model_name)


if __name__ == "__main__":
    main()
