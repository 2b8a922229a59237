"""The `webinstruct` command as a user runs it: ingest, sql (read-only, concurrent), status."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


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


def test_cli_ingest_status_and_read_only_sql(tmp_path, sample_crawl):
    data_dir = tmp_path / "wh"
    out = run_cli(data_dir, "ingest", str(sample_crawl)).stderr
    assert "12 file(s) ingested" in out and "resiliparse_clipped" in out
    row = json.loads(run_cli(data_dir, "sql", "-f", "json", """
        select (select count(*) from documents) as n_docs,
               (select list({'path': path, 'error': error, 'docs_kept': docs_kept})
                from crawl_files where status <> 'ok') as errors""").stdout)[0]
    n_docs, errors = row["n_docs"], row["errors"]
    assert n_docs >= 150
    assert len(errors) == 1 and errors[0]["path"].endswith("resiliparse_clipped.warc.gz")
    assert errors[0]["docs_kept"] == 1 and "cut short" in errors[0]["error"]

    # (A second ingest that finds nothing new: tests/test_ingest.py; refused writes, odd input:
    # tests/faults/test_user_errors.py.)
    status = run_cli(data_dir, "status").stdout
    assert "documents" in status and str(n_docs) in status
    csv = run_cli(data_dir, "sql", "-f", "csv", "select domain, count(*) n from documents group by 1 order by 2 desc limit 3")
    assert csv.stdout.splitlines()[0] == "domain,n"
