"""Concurrent use: SQL while a stage writes, two runs started on one warehouse at once"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from warehouse import Warehouse
from warehouse.catalog import query

CLI = str(Path(sys.executable).parent / "webinstruct")


def env_for(data_dir: Path) -> dict:
    env = {**os.environ, "WEBINSTRUCT_DATA": str(data_dir), "COLUMNS": "200"}
    env.pop("PREFECT_HOME", None)  # the CLI keeps Prefect's home inside the data dir
    return env


@pytest.fixture
def many_files(tmp_path, sample_crawl) -> Path:
    """Eight crawl files (copies of the real forum WARC) so an ingest run lasts a few seconds."""
    d = tmp_path / "crawl"
    d.mkdir()
    for i in range(8):
        shutil.copy(sample_crawl / "forum_pages.warc.gz", d / f"segment-{i:02d}.warc.gz")
    return d


@pytest.mark.slow
def test_a_second_run_waits_for_the_warehouse_lock(data_dir, sample_crawl, tmp_path, reliability):
    from flows.runtime import warehouse_lock

    wh = Warehouse(data_dir)
    err = tmp_path / "stderr.txt"
    with warehouse_lock(wh):  # another run holds the warehouse
        with open(err, "w") as fh:
            proc = subprocess.Popen([CLI, "ingest", str(sample_crawl / "warcio_example.warc.gz")],
                                    env=env_for(data_dir), stdout=subprocess.DEVNULL, stderr=fh)
        deadline = time.monotonic() + 180
        while "waiting for it to finish" not in err.read_text():
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, "the second run neither waited nor said so"
            time.sleep(0.5)
        wrote = wh.versions("documents")
        runs = query(wh, "select count(*) as n from runs")["n"][0]  # SQL works meanwhile
    rc = proc.wait(timeout=180)
    said = next(ln for ln in err.read_text().splitlines() if "waiting" in ln)
    reliability("a run started while another run holds the warehouse",
                "it waits (and says so), writes nothing meanwhile, then runs; SQL works all along",
                f"said {said.split(' - ')[-1].strip()!r}; wrote {len(wrote)} versions while waiting; SQL answered "
                f"(runs={runs}); exit {rc} once the lock was free")
    assert wrote == [] and runs == 0 and rc == 0, err.read_text()
    assert query(wh, "select count(*) as n from documents")["n"][0] == 1


@pytest.mark.slow
def test_two_runs_started_at_once_take_turns(tmp_path, many_files, reliability):
    data_dir = tmp_path / "wh"
    logs = [open(tmp_path / f"run-{i}.log", "w+") for i in range(2)]
    procs = [subprocess.Popen([CLI, "ingest", "--shard-size", "100", str(many_files)], env=env_for(data_dir),
                              stdout=log, stderr=subprocess.STDOUT) for log in logs]
    rcs = [p.wait(timeout=600) for p in procs]
    outs = []
    for log in logs:
        log.seek(0)
        outs.append(log.read())
    wh = Warehouse(data_dir)
    files = query(wh, "select count(*) as n, count(distinct path) as paths from crawl_files")
    docs = query(wh, "select count(*) as n, count(distinct doc_id || source_file) as distinct_docs from documents")
    runs = query(wh, "select status, count(*) as n from runs group by all")
    reliability("two `webinstruct ingest` runs of the same 8 files started at the same moment on one warehouse",
                "one waits for the other; the second finds the files done; no row twice",
                f"exit codes {rcs}; one said it waited: {any('waiting' in o for o in outs)}; crawl_files "
                f"{files['n'][0]} rows for {files['paths'][0]} files; documents {docs['n'][0]} rows, "
                f"{docs['distinct_docs'][0]} distinct; runs {dict(runs.iter_rows())}")
    assert rcs == [0, 0], outs
    assert any("waiting for it to finish" in o for o in outs)
    assert files["n"][0] == files["paths"][0] == 8
    assert docs["n"][0] == docs["distinct_docs"][0] == 8 * 183
    assert dict(runs.iter_rows()) == {"done": 2}


@pytest.mark.slow
def test_sql_works_while_another_process_is_ingesting(tmp_path, many_files, reliability):
    data_dir = tmp_path / "wh"
    ingest = subprocess.Popen([CLI, "ingest", "--shard-size", "50", str(many_files)], env=env_for(data_dir),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen_running = seen_rows = queries = 0
    try:
        while ingest.poll() is None:
            proc = subprocess.run([CLI, "sql", "--format", "json",
                                   "select (select count(*) from documents_all) as docs, "
                                   "(select count(*) from stage_runs where status = 'running') as running"],
                                  env=env_for(data_dir), capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stderr
            row = json.loads(proc.stdout)[0]
            queries += 1
            seen_running += row["running"] > 0
            seen_rows += row["running"] > 0 and row["docs"] > 0
            time.sleep(0.2)
        out = ingest.stdout.read()
    finally:
        ingest.kill()
    total = query(Warehouse(data_dir), "select count(*) as n from documents")["n"][0]
    reliability("`webinstruct sql` in a loop while another process ingests 8 files",
                "every query answers (read-only, never blocked by the writer), seeing the shards published so far",
                f"{queries} queries answered, {seen_rows} of them saw rows while the stage was running; "
                f"ingest exit {ingest.returncode}, {total} documents")
    assert ingest.returncode == 0, out
    assert seen_running >= 1 and seen_rows >= 1
    assert total == 8 * 183
