"""Deployments as Prefect builds them: parameters validate in a fresh process (as a served run
does), entrypoints are module paths, every form field has a description, no secret is a field."""
from __future__ import annotations

import json
import subprocess
import sys

import cloudpickle
import pytest

FLOWS = ["flows.ingest:ingest_flow", "flows.recall:recall_flow", "flows.extract:extract_flow",
         "flows.refine:refine_flow", "flows.curate:curate_flow", "flows.pipeline:pipeline_flow"]

# A fresh interpreter, as a served run is: unpickle each flow, validate its parameters.
CHILD = """
import json, sys, cloudpickle
out = []
for flow, params in cloudpickle.loads(sys.stdin.buffer.read()):
    try:
        out.append({k: type(v).__name__ for k, v in flow.validate_parameters(params).items()})
    except Exception as exc:
        out.append({"error": str(exc)})
print(json.dumps(out))
"""


def validate_in_fresh_process(cases: list) -> list[dict]:
    out = subprocess.run([sys.executable, "-c", CHILD], input=cloudpickle.dumps(cases), capture_output=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    return json.loads(out.stdout)


def load(ref: str):
    import importlib

    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


@pytest.fixture(scope="module")
def deployments(tmp_path_factory):
    from flows.deploy import build_deployments
    from tasks.llm_client import LLMSettings

    root = tmp_path_factory.mktemp("wh") / "my-warehouse"
    return {d.flow_name: d for d in build_deployments(root, llm=LLMSettings(), watch=[str(root / "crawl")],
                                                      cron="0 3 * * *")}


def test_parameters_validate_in_a_fresh_process_after_pickling(deployments):
    from flows.refine import refine_flow

    flows = [load(ref) for ref in FLOWS]
    cases = [(f, dict(deployments[f.name].parameters)) for f in flows]
    # a UI rerun form: another refiner model and base URL, another refine setting
    form = dict(deployments["refine"].parameters)
    form["refiners"] = [dict(form["refiners"][0], model="other-model", base_urls=["http://gpu2:8000/v1"])]
    form["refine"] = {"prompt": "refine", "max_input_chars": 4000}
    typo = dict(form, refine={"prompt": "refine", "no_such_field": 1})
    results = validate_in_fresh_process(cases + [(refine_flow, form), (refine_flow, typo)])
    for (flow, params), types in zip(cases, results):
        assert "error" not in types, (flow.name, types)
        # the forms arrive as the pydantic models the flow declares, not as plain dicts
        for name, expected in {"llm": "LLMSettings", "source": "CrawlSource", "export": "ExportSettings",
                               "refiners": "list"}.items():
            if name in params:
                assert types[name] == expected, (flow.name, name, types)
    assert "error" not in results[-2]
    assert "no_such_field" in results[-1]["error"]  # a typo in the form is refused, not ignored


def test_one_deployment_per_stage_with_module_entrypoints_and_limits(deployments, tmp_path_factory):
    assert set(deployments) == {"webinstruct", "ingest", "recall", "extract", "refine", "curate"}
    for name, d in deployments.items():
        assert d.name == "my-warehouse"
        module, _, fn = d.entrypoint.rpartition(".")
        assert module.startswith("flows.") and load(f"{module}:{fn}").name == name  # no path relative to a cwd
        assert d.concurrency_limit == 1 or d.concurrency_limit.limit == 1
        assert d.parameters["data_dir"].endswith("my-warehouse")
    pipeline = deployments["webinstruct"]
    assert [s.schedule.cron for s in pipeline.schedules] == ["0 3 * * *"]
    assert pipeline.parameters["source"]["paths"][0].endswith("crawl")
    assert deployments["refine"].parameters["downstream"] is True


def schema_of(d) -> dict:
    return d._parameter_openapi_schema.model_dump()


def _fields(schema: dict) -> list[tuple[str, dict]]:
    """Every property of the parameter schema and of every model it references."""
    found = list(schema.get("properties", {}).items())
    for definition in schema.get("definitions", {}).values():
        found += [(f"{definition.get('title')}.{k}", v) for k, v in definition.get("properties", {}).items()]
    return found


@pytest.mark.parametrize("name", ["webinstruct", "ingest", "recall", "extract", "refine", "curate"])
def test_every_form_field_is_described_and_no_secret_is_a_field(name, deployments):
    d = deployments[name]
    schema = schema_of(d)
    fields = _fields(schema)
    assert fields
    undocumented = [k for k, v in fields if not v.get("description")]
    assert undocumented == [], undocumented
    assert not any(k.split(".")[-1] == "api_key" for k, _ in fields)
    assert "api_key\"" not in json.dumps(d.parameters)


def test_choices_are_drop_downs(deployments):
    schema = json.dumps(schema_of(deployments["webinstruct"]))
    for choice in ('"if_missing"', '"always"', '"jsonl"', '"question+answer"', '"gsm8k"'):
        assert choice in schema
