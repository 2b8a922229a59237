"""One writer per warehouse: a second run waits for the first (it does not interleave), and SQL
keeps working meanwhile."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from warehouse import Warehouse
from warehouse.catalog import query

CLI = str(Path(sys.executable).parent / "webinstruct")


def test_a_second_run_waits_for_the_warehouse_lock(data_dir, sample_crawl, tmp_path):
    from flows.runtime import warehouse_lock

    wh = Warehouse(data_dir)
    env = {**os.environ, "WEBINSTRUCT_DATA": str(data_dir)}
    env.pop("PREFECT_HOME", None)
    err = tmp_path / "stderr.txt"
    with warehouse_lock(wh):  # another run holds the warehouse
        with open(err, "w") as fh:
            proc = subprocess.Popen([CLI, "ingest", str(sample_crawl / "warcio_example.warc.gz")], env=env,
                                    stdout=subprocess.DEVNULL, stderr=fh)
        deadline = time.monotonic() + 180
        while "waiting for it to finish" not in err.read_text():
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, "the second run neither waited nor said so"
            time.sleep(0.5)
        assert wh.versions("documents") == []  # it wrote nothing while it waited
        assert query(wh, "select count(*) as n from runs")["n"][0] == 0  # SQL works meanwhile
    assert proc.wait(timeout=180) == 0, err.read_text()
    assert query(wh, "select count(*) as n from documents")["n"][0] == 1
