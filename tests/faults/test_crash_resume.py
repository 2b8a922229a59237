"""Crash and resume: the flow process SIGKILLed during each stage, then run again"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest


ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample" / "crawl"
TIMESTAMPS = ("ingested_at", "labelled_at", "created_at", "trained_at", "seconds", "train_seconds", "latency_s")
IN_FLIGHT = 4  # LLMSettings.max_concurrency: requests a kill can catch on the wire

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(scripted_server):
    return scripted_server


def kill_at_request(kind: str, n: int, pid: int):
    """A fault rule: SIGKILL the flow process when the n-th request of `kind` arrives."""
    def rule(k, seen, body):
        if k == kind and seen == n:
            os.kill(pid, signal.SIGKILL)
    return rule


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return env | {"COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


def start(server, data_dir: Path, kill_write: tuple[str, int] | None = None) -> subprocess.Popen:
    args = ["--data-dir", str(data_dir), "run", str(SAMPLE), "--base-url", server.base_url, "--model", server.model]
    cmd = ([sys.executable, "-m", "tests.faults.kill_at", kill_write[0], str(kill_write[1]), "--", *args]
           if kill_write else [str(Path(sys.executable).with_name("webinstruct")), *args])
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    log = open(data_dir.parent / f"run-{len(list(data_dir.parent.glob('run-*.log')))}.log", "w+")
    # output to a file, not a pipe: a killed run's children would hold a pipe open
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log = log
    return proc


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    rc = proc.wait(timeout=600)
    try:  # a killed run's helpers (Prefect's temporary server) die with it, as on a lost node
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.log.seek(0)
    out = proc.log.read()
    proc.log.close()
    return rc, out


def snapshot(data_dir: Path) -> dict:
    from warehouse import Warehouse
    from warehouse.catalog import query

    wh = Warehouse(data_dir)
    export = sorted((data_dir / "export" / "data").glob("*.parquet"))
    return {
        "dataset": query(wh, "select * from dataset order by refined_id"),
        "export": pl.concat([pl.read_parquet(p) for p in export]).sort("refined_id") if export else None,
        "paid_calls": query(wh, "select count(*) as n from llm_calls_all where not cached")["n"][0],
        "wh": wh,
    }


def duplicate_rows(wh) -> dict[str, int]:
    """Rows that appear twice in a table's current version (timestamps aside)."""
    from warehouse.catalog import query

    dup = {}
    for table in ("crawl_files", "documents", "recall_scores", "recall_examples", "domains", "qa_extracted",
                  "qa_refined", "qa_duplicates", "qa_contamination", "dataset", "llm_calls"):
        cols = query(wh, f"describe {table}")["column_name"].to_list()
        keep = ", ".join(f'"{c}"' for c in cols if c not in TIMESTAMPS)
        n = query(wh, f"select (select count(*) from {table}) - (select count(*) from "
                      f"(select distinct {keep} from {table})) as n")["n"][0]
        if n:
            dup[table] = n
    return dup


def unreadable_shards(data_dir: Path) -> list[str]:
    bad = []
    for p in data_dir.rglob("part-*.parquet"):
        try:
            pl.read_parquet_schema(p)
        except Exception as exc:  # noqa: BLE001 - any unreadable published shard is the failure
            bad.append(f"{p.name}: {exc}")
    return bad


@pytest.fixture(scope="module")
def baseline(server, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("baseline") / "wh"
    before = server.completions()
    rc, out = finish(start(server, data_dir))
    assert rc == 0, out[-3000:]
    snap = snapshot(data_dir) | {"requests": server.completions() - before}
    # The sample holds one page as a WARC response and again in its WET conversion: same doc_id,
    # so its recall scores are equal rows. That is the input, not a crash; a crash must add none.
    snap["duplicates"] = duplicate_rows(snap["wh"])
    assert snap["dataset"].height >= 10, "the scripted model must carry pairs through every stage"
    return snap


# (stage, how it is killed): a table's n-th shard write, or the n-th LLM request of a kind
KILLS = [
    ("ingest", ("write", "documents", 4)),
    ("recall scoring", ("write", "recall_scores", 2)),
    ("domain labelling", ("request", "DomainLabel", 20)),
    ("extraction", ("request", "ExtractReply", 12)),
    ("refinement", ("request", "RefineReply", 10)),
    ("dedup", ("write", "qa_duplicates", 1)),
    ("decontamination", ("write", "qa_contamination", 1)),
    ("dataset", ("write", "dataset", 1)),
    ("export", ("write", "export", 1)),
]


@pytest.mark.parametrize("stage,kill", KILLS, ids=[k[0].replace(" ", "-") for k in KILLS])
def test_killed_during_a_stage_then_rerun_gives_the_same_dataset(stage, kill, server, baseline, tmp_path,
                                                                 reliability):
    data_dir = tmp_path / "wh"
    before = server.completions()
    how, what, n = kill
    if how == "write":
        proc = start(server, data_dir, kill_write=(what, n))
    else:
        proc = start(server, data_dir)
        server.faults.set(kill_at_request(what, n, proc.pid))
    rc, out = finish(proc)
    server.faults.set(None)
    assert rc == -signal.SIGKILL, f"the run was meant to be killed during {stage}:\n{out[-3000:]}"
    hidden = [p.name for p in data_dir.rglob(".tmp-*")]
    assert not unreadable_shards(data_dir)

    rc, out = finish(start(server, data_dir))
    assert rc == 0, out[-3000:]
    after = snapshot(data_dir)
    requests = server.completions() - before
    extra = requests - baseline["requests"]

    assert after["dataset"].equals(baseline["dataset"]), f"dataset differs after a kill during {stage}"
    assert after["export"].equals(baseline["export"])
    assert duplicate_rows(after["wh"]) == baseline["duplicates"]
    assert not unreadable_shards(data_dir)
    assert not list(data_dir.rglob(".tmp-*")), "temp files of the killed run are swept"
    assert after["paid_calls"] == baseline["paid_calls"], "each request is logged once in llm_calls"
    assert 0 <= extra <= IN_FLIGHT, f"{extra} LLM requests paid twice (at most {IN_FLIGHT} were in flight)"
    reliability(f"SIGKILL of the flow process during {stage} ({'the n-th request' if how == 'request' else 'mid-write of shard'} "
                f"{n} of {what}), then the same command again",
                "same dataset and export as an uninterrupted run; no duplicate rows; no partial shard visible; "
                "no LLM request paid twice beyond those in flight",
                f"dataset identical ({after['dataset'].height} rows); {len(hidden)} temp file(s) left by the kill, "
                f"none visible as data and all swept by the rerun; no duplicate row added; llm_calls {after['paid_calls']} "
                f"paid = uninterrupted; server saw {requests} requests vs {baseline['requests']} ({extra} repeated)")
