"""LLM faults across the DAG: the server dies, throttles, errs or answers garbage mid-run"""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from tests.fake_llm_server import error, ok
from tests.faults import scripted_model
from warehouse import Warehouse
from warehouse.catalog import query

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "crawl"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(scripted_server):
    return scripted_server


def settings(server):
    # quick backoff: the faults here last seconds, not minutes
    return server.settings(backoff_base_s=0.1, backoff_max_s=1.0, retry_after_max_s=1.0, timeout_s=10,
                           server_down_after_s=30)


@pytest.fixture(scope="module")
def recalled(prefect_env, server, tmp_path_factory):
    """Ingested and recalled (domains labelled by the LLM), nothing extracted yet."""
    from flows.pipeline import pipeline_flow
    from flows.settings import CrawlSource, ExtractSettings

    root = tmp_path_factory.mktemp("recalled") / "wh"
    pipeline_flow(source=CrawlSource(paths=[str(SAMPLE)]), data_dir=str(root), llm=settings(server),
                  extract=ExtractSettings(max_docs=0))
    return root


def extract_down(server, root: Path, **kwargs) -> dict:
    from flows.extract import extract_flow

    return extract_flow(data_dir=str(root), llm=settings(server), downstream=True, **kwargs)


def copy_of(recalled: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "wh"
    shutil.copytree(recalled, dest, ignore=shutil.ignore_patterns("_prefect", "catalog.duckdb"))
    return dest


def dataset(root: Path):
    return query(Warehouse(root), "select * exclude (fingerprint) from dataset order by refined_id")


@pytest.fixture(scope="module")
def baseline(server, recalled, tmp_path_factory):
    root = copy_of(recalled, tmp_path_factory.mktemp("baseline"))
    server.faults.set(None)
    before = server.completions()
    extract_down(server, root)
    df = dataset(root)
    assert df.height >= 10
    return {"dataset": df, "requests": server.completions() - before}


def test_server_dies_mid_extraction_and_comes_back(server, recalled, baseline, tmp_path, reliability):
    root = copy_of(recalled, tmp_path)

    def outage(kind, n, body):
        if kind == "ExtractReply" and n == 6:
            def bounce():
                server.kill()
                time.sleep(2.0)
                server.restart()
            threading.Thread(target=bounce, daemon=True).start()
            time.sleep(0.2)  # the kill lands while this request is open
        return None

    server.faults.set(outage)
    summary = extract_down(server, root)
    server.faults.set(None)
    same = dataset(root).equals(baseline["dataset"])
    failed = query(Warehouse(root), "select count(*) as n from qa_extracted where status = 'failed'")["n"][0]
    reliability("the LLM server is killed during extraction (connections reset) and restarted 2 s later",
                "the run completes with the retries; same dataset as without the outage",
                f"run completed: {summary['pairs']} pairs, {failed} failed rows; dataset identical: {same}")
    assert same and failed == 0


def test_throttled_then_erroring_for_a_while(server, recalled, baseline, tmp_path, reliability):
    root = copy_of(recalled, tmp_path)

    def bad_spell(kind, n, body):
        if kind in ("ExtractReply", "RefineReply") and n <= 8:
            return error(429, retry_after=0.2) if n <= 4 else error(500)
        return None

    server.faults.set(bad_spell)
    before = server.completions()
    extract_down(server, root)
    server.faults.set(None)
    statuses = [k for _, k in server.log[before:]]
    same = dataset(root).equals(baseline["dataset"])
    reliability("429 (Retry-After 0.2 s) for the first 4 extraction and refinement requests, then 500 for 4 more",
                "backoff and retries; the run completes with the same dataset",
                f"server answered {statuses.count('429')}x 429 and {statuses.count('500')}x 500; "
                f"run completed; dataset identical: {same}")
    assert same and statuses.count("429") == 8 and statuses.count("500") == 8


def test_garbage_replies_fail_their_rows_and_retry_failed_sends_only_those(server, recalled, baseline, tmp_path,
                                                                           reliability):
    root = copy_of(recalled, tmp_path)
    broken: dict[str, set[str]] = {"ExtractReply": set(), "RefineReply": set()}
    quota = {"ExtractReply": 3, "RefineReply": 2}
    first_turn = {"ExtractReply": "Title:", "RefineReply": "Question:"}

    def garbage(kind, n, body):
        if kind not in broken:
            return None
        msg = scripted_model._user(body)  # a chunk or pair, or the client's request to repair a reply
        asked = {m.get("content") for m in body["messages"] if m.get("role") == "user"}
        fresh = msg.startswith(first_turn[kind]) and len(broken[kind]) < quota[kind]
        if asked & broken[kind] or fresh:
            broken[kind].update({msg} if fresh else set())
            return ok(content="Sure! Here is what you asked for: question one... {not json")
        return None

    server.faults.set(garbage)
    first = extract_down(server, root)
    server.faults.set(None)
    wh = Warehouse(root)
    failed = query(wh, "select doc_id, chunk, error from qa_extracted where status = 'failed'")
    failed_refined = first["refine"]["refine"][0]["failed"]
    before = server.completions()
    retry = extract_down(server, root, retry_failed=True)
    resent = server.completions() - before
    new_pairs = query(wh, "select count(*) as n from qa_extracted where attempt = 2 and status = 'ok'")["n"][0]
    still = query(wh, "select (select count(*) from qa_extracted where status = 'failed') + "
                      "(select count(*) from qa_refined where status = 'failed') as n")["n"][0]
    kept = query(wh, "select count(*) as n from qa_extracted_all where status = 'failed'")["n"][0]
    same = dataset(root).equals(baseline["dataset"])
    reliability("garbage (not JSON) replies for 3 extraction chunks and 2 refinements, then `--retry-failed`",
                "those rows fail with their reason and the stages complete; the retry sends only those (and "
                "refines the pairs the retried chunks give); the dataset then equals a run without garbage",
                f"first run completed with {failed.height} failed extraction rows ({failed['error'][0][:60]!r}...) "
                f"and {failed_refined} failed refinements; the retry sent {resent} requests = 3 chunks + 2 "
                f"refinements + {new_pairs} new pairs; failed rows left in the views: {still} (kept in "
                f"qa_extracted_all: {kept}); dataset identical: {same}")
    assert first["failed"] == failed.height == 3 and "parse" in failed["error"][0] and failed_refined == 2
    assert retry["retried_chunks"] == 3 and retry["docs"] <= 3
    assert resent == 3 + 2 + new_pairs
    assert still == 0 and kept == 3 and same


def test_retry_failed_from_the_command_line(server, recalled, tmp_path, reliability):
    import os
    import subprocess
    import sys

    root = copy_of(recalled, tmp_path)
    server.faults.set(lambda kind, n, body: ok(content="{not json") if kind == "ExtractReply" else None)
    extract_down(server, root)
    server.faults.set(None)
    wh = Warehouse(root)
    failed = query(wh, "select count(*) as n from qa_extracted where status = 'failed'")["n"][0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {"COLUMNS": "200"}
    cli = subprocess.run([str(Path(sys.executable).with_name("webinstruct")), "--data-dir", str(root), "mine",
                          "--retry-failed", "--base-url", server.base_url, "--model", server.model],
                         env=env, capture_output=True, text=True, timeout=600)
    line = next((ln for ln in cli.stderr.splitlines() if ln.startswith("retry")), cli.stderr[-500:])
    after = query(wh, "select count(*) filter (where status = 'failed') as failed, "
                      "count(*) filter (where status = 'ok') as ok from qa_extracted").row(0, named=True)
    reliability("every extraction reply garbage, then `webinstruct mine --retry-failed` against a healthy server",
                "exactly the failed chunks of the version last run are sent again; their pairs are extracted and "
                "refined", f"{failed} failed chunks; exit {cli.returncode}: {line!r}; afterwards {after['failed']} "
                f"failed, {after['ok']} pairs")
    assert cli.returncode == 0, cli.stderr
    assert f"{failed} failed chunk(s) sent again" in line and after["failed"] == 0 and after["ok"] > 10
