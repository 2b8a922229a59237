"""Scale-out: the whole pipeline on a local Dask cluster (2 worker processes) writing into a
warehouse in S3 (a real S3 server on loopback, moto's) gives the local run's rows, table for table;
crawl files are read from the bucket; `make test-ray` runs the pipeline on a local Ray cluster.

Runs go through the real CLI in subprocesses against the scripted model (deterministic, so two
runs can be compared row for row)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pytest

from warehouse.schemas import TABLES

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "crawl"
# The Q&A forum pages (every pair of the sample comes from them) and two crawl samples: few shards,
# so the three runs here stay short; the whole sample goes through the same code in other tests.
CRAWL = [SAMPLE / f for f in ("forum_pages.warc.gz", "dolma_warc_sample-0000.warc.gz", "resiliparse_warcfile.warc.gz")]
WEBINSTRUCT = str(Path(sys.executable).with_name("webinstruct"))
# when and how long: differ between any two runs
VOLATILE = {"ingested_at", "labelled_at", "created_at", "trained_at", "seconds", "train_seconds", "latency_s",
            "call_id"}
BOOKKEEPING = {"runs", "stage_runs", "quality_evals"}  # about the runs themselves, not their output


@pytest.fixture(scope="module")
def server():
    from tests.fake_llm_server import FakeLLMServer
    from tests.faults import scripted_model

    srv = FakeLLMServer(responder=scripted_model.responder()).start()
    yield srv
    srv.stop()


def webinstruct(data_dir: str, *args: str, env: dict | None = None, timeout: int = 900) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    proc = subprocess.run([WEBINSTRUCT, "--data-dir", data_dir, *args], cwd=ROOT, capture_output=True, text=True,
                          env=base | {"COLUMNS": "200"} | (env or {}), timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def run_pipeline(server, data_dir: str, *options: str, env: dict | None = None) -> str:
    return webinstruct(data_dir, *options, "run", *map(str, CRAWL), "--base-url", server.base_url, "--model", server.model,
                       env=env)


def tables(data_dir: str) -> dict[str, pl.DataFrame]:
    """Every output table's current rows, without run times, in a stable order."""
    from warehouse import Warehouse

    wh = Warehouse(data_dir)
    out = {}
    for name in sorted(set(TABLES) - BOOKKEEPING):
        df = wh.scan(name).collect()
        df = df.drop([c for c in df.columns if c in VOLATILE])
        # rows in a stable order whatever order the shards were written in (a hash of every column)
        out[name] = df.with_columns(_row=df.hash_rows(seed=0)).sort("_row").drop("_row")
    return out


@contextmanager
def env_vars(env: dict):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def assert_same_tables(got: dict[str, pl.DataFrame], want: dict[str, pl.DataFrame]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].height == want[name].height, name
        assert got[name].equals(want[name]), f"{name} differs"
    assert want["dataset"].height > 0 and want["documents"].height > 0  # something to compare


@pytest.fixture(scope="module")
def local_run(server, tmp_path_factory) -> dict[str, pl.DataFrame]:
    data = str(tmp_path_factory.mktemp("local") / "wh")
    run_pipeline(server, data)
    return tables(data)


@pytest.mark.ray
def test_ray_cluster_gives_the_local_rows(server, local_run, tmp_path):
    pytest.importorskip("prefect_ray")
    data = str(tmp_path / "wh")
    out = run_pipeline(server, data, "--runner", "ray", "--runner-workers", "2", "-v")
    assert "Started a local Ray instance" in out
    assert_same_tables(tables(data), local_run)


# ---- object storage ---------------------------------------------------------------------------------
BUCKET = "webinstruct-test"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3 server (moto's, in its own process) on loopback holding the sample crawl; `env`
    points boto, fsspec, polars and the CLI at it."""
    pytest.importorskip("moto.server")
    import boto3

    port = _free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",  # polars' own S3 reader: plain http
           "WEBINSTRUCT_STATE_DIR": str(tmp_path_factory.mktemp("state"))}
    try:
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test")
        for _ in range(300):  # it starts in a second or two
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.1)
        for f in CRAWL:
            client.upload_file(str(f), BUCKET, f"crawl/{f.name}")
        yield env, client
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_dask_workers_writing_into_s3_give_the_local_rows(server, local_run, s3):
    """Scale-out as it runs for real: a cluster's worker processes write their shards into the
    bucket and the flow registers them. The crawl is the same local files, so every version (and
    every row) must equal the local run's."""
    pytest.importorskip("prefect_dask")
    env, client = s3
    data = f"s3://{BUCKET}/wh"
    out = run_pipeline(server, data, "--runner", "dask", "--runner-workers", "2", "-v", env=env)
    assert "LocalCluster" in out  # the shard tasks went to the cluster
    assert f"{data}/export/" in out
    with env_vars(env):
        assert_same_tables(tables(data), local_run)

    # `webinstruct sql` reads the Parquet in the bucket through fsspec (no DuckDB extension)
    counts = " union all ".join(f"select '{t}' as t, count(*) as n from {t}" for t in sorted(local_run))
    answer = webinstruct(data, "sql", "-f", "json", counts, env=env)
    assert {r["t"]: r["n"] for r in json.loads(answer[answer.index("["):])} == {
        t: df.height for t, df in local_run.items()}
    refused = subprocess.run([WEBINSTRUCT, "--data-dir", data, "sql", "select * from read_csv('/etc/passwd')"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300,
                             env={k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | env)
    assert refused.returncode != 0 and "error:" in refused.stdout + refused.stderr

    # tables, manifest, models and export are objects in the bucket; this machine keeps only state
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="wh/")
            for o in page.get("Contents", [])]
    assert {"documents", "dataset", "qa_extracted", "_manifest", "_models", "export"} <= {k.split("/")[1] for k in keys}
    assert "wh/export/README.md" in keys
    state = next(Path(env["WEBINSTRUCT_STATE_DIR"]).iterdir())
    assert not (state / "documents").exists() and (state / "catalog.duckdb").exists()


def test_crawl_files_are_read_from_s3(local_run, s3, tmp_path):
    """A crawl in the bucket: listed by prefix, streamed by the reader, the same pages as from disk."""
    from tasks.ingest import IngestParams, expand_inputs, ingest_path

    env, _ = s3
    with env_vars(env):
        files = expand_inputs([f"s3://{BUCKET}/crawl/"])
        assert [f.rsplit("/", 1)[1] for f in files] == sorted(f.name for f in CRAWL)
        row = ingest_path(str(tmp_path / "wh"), f"s3://{BUCKET}/crawl/forum_pages.warc.gz", IngestParams())
        docs = tables(str(tmp_path / "wh"))["documents"]
    assert row["status"] == "ok" and row["docs_kept"] == docs.height > 100
    local = local_run["documents"].filter(pl.col("source_file").str.ends_with("/forum_pages.warc.gz"))
    assert docs["source_file"].unique().to_list() == [f"s3://{BUCKET}/crawl/forum_pages.warc.gz"]
    cols = ["doc_id", "url", "title", "text"]
    assert docs.select(cols).sort("doc_id", "text").equals(local.select(cols).sort("doc_id", "text"))


def test_an_unknown_runner_is_a_two_line_error():
    proc = subprocess.run([WEBINSTRUCT, "--runner", "spark", "status"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")})
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["error: --runner: unknown runner 'spark'", "hint: use --runner local, dask or ray"]
