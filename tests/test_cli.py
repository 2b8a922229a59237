"""The `webinstruct` command as a user runs it: ingest, sql (read-only, concurrent), status."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [str(Path(sys.executable).parent / "webinstruct")]


def run_cli(data_dir: Path, *args: str, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WEBINSTRUCT_DATA": str(data_dir)}
    env.pop("PREFECT_HOME", None)  # the CLI keeps Prefect's home inside the data dir
    proc = subprocess.run(CLI + list(args), env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def count(data_dir: Path, sql: str) -> int:
    return int(run_cli(data_dir, "sql", "--format", "csv", sql).stdout.splitlines()[1])


@pytest.fixture
def many_files(tmp_path, sample_crawl) -> Path:
    """Eight crawl files (copies of the real forum WARC) so an ingest run lasts a few seconds."""
    d = tmp_path / "crawl"
    d.mkdir()
    for i in range(8):
        shutil.copy(sample_crawl / "forum_pages.warc.gz", d / f"segment-{i:02d}.warc.gz")
    return d


def test_sql_works_while_another_process_is_ingesting(tmp_path, many_files):
    data_dir = tmp_path / "wh"
    env = {**os.environ, "WEBINSTRUCT_DATA": str(data_dir)}
    env.pop("PREFECT_HOME", None)
    ingest = subprocess.Popen(CLI + ["ingest", "--shard-size", "50", str(many_files)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen_running = seen_rows = 0
    try:
        while ingest.poll() is None:
            proc = run_cli(data_dir, "sql", "--format", "json",
                           "select (select count(*) from documents_all) as docs, "
                           "(select count(*) from stage_runs where status = 'running') as running")
            row = json.loads(proc.stdout)[0]
            seen_running += row["running"] > 0
            seen_rows += row["running"] > 0 and row["docs"] > 0
            time.sleep(0.2)
        out = ingest.stdout.read()
    finally:
        ingest.kill()
    assert ingest.returncode == 0, out
    # Queries ran (and succeeded) while the stage was writing shards.
    assert seen_running >= 1 and seen_rows >= 1
    assert count(data_dir, "select count(*) from documents") == 8 * 183


def test_cli_ingest_status_and_read_only_sql(tmp_path, sample_crawl):
    data_dir = tmp_path / "wh"
    out = run_cli(data_dir, "ingest", str(sample_crawl)).stderr
    assert "12 file(s) ingested" in out and "resiliparse_clipped" in out
    n_docs = count(data_dir, "select count(*) from documents")
    assert n_docs >= 150
    errors = json.loads(run_cli(data_dir, "sql", "-f", "json",
                                "select path, status, error, docs_kept from crawl_files where status <> 'ok'").stdout)
    assert len(errors) == 1 and errors[0]["path"].endswith("resiliparse_clipped.warc.gz")
    assert errors[0]["docs_kept"] == 1 and "cut short" in errors[0]["error"]

    # Again: nothing to do, nothing changes.
    again = run_cli(data_dir, "ingest", str(sample_crawl)).stderr
    assert "0 file(s) ingested, 12 already done" in again
    assert count(data_dir, "select count(*) from documents") == n_docs

    for stmt in ("drop view documents", "create table t as select 1"):
        proc = run_cli(data_dir, "sql", stmt, check=False)
        assert proc.returncode != 0 and "read-only" in proc.stderr
    assert count(data_dir, "select count(*) from documents") == n_docs

    status = run_cli(data_dir, "status").stdout
    assert "documents" in status and str(n_docs) in status
    csv = run_cli(data_dir, "sql", "-f", "csv", "select domain, count(*) n from documents group by 1 order by 2 desc limit 3")
    assert csv.stdout.splitlines()[0] == "domain,n"


def test_user_mistakes_get_one_line_not_a_traceback(data_dir, tmp_path, ingested_sample):
    from typer.testing import CliRunner

    from webinstruct.cli import app

    missing = str(tmp_path / "missing.warc.gz")
    for args in (["ingest", missing], ["run", missing]):
        res = CliRunner().invoke(app, ["--data-dir", str(data_dir), *args])
        assert res.exit_code == 2 and "input not found" in res.output and "Traceback" not in res.output
    # nested columns go to CSV as JSON text instead of failing
    res = CliRunner().invoke(app, ["--data-dir", str(ingested_sample.root), "sql", "--format", "csv",
                                   "select [1, 2] as xs, {'a': 1} as s"])
    assert res.exit_code == 0 and res.output.splitlines()[1] == '"[1, 2]","{""a"": 1}"'
