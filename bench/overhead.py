"""Bench: orchestration overhead. End-to-end wall of a pipeline run vs the stages' bare compute.

    .venv/bin/python bench/overhead.py [--segments 20] [--results bench/results]

One input (`--segments` replicas of the bundled real sample, built as in bench/memory.py), two
runs on fresh warehouses against the scripted model server (tests/faults/scripted_model.py):
  prefect  `webinstruct run` in a fresh process, as a user runs it (Prefect's ephemeral API server;
           its database pre-migrated, as on any run after the first). Timed: process start to exit
           (CLI wall), and the flow run from its creation to its end, from Prefect's own database
           (flow wall: no Python/Prefect import, no API server start, no CLI report).
  bare     the same flow bodies and task functions in a fresh process with Prefect taken out:
           every task is called as its plain function, in order, no task runner, no API, no
           artifacts. Each stage's seconds come from its `stage_runs` row (the stage runner's own
           clock: from before the stage's work to its last shard written).
Overhead share = (wall - sum of the bare stages' seconds) / wall; the issue's target: <= 5% of the
flow wall. The table also splits the gap: inside the stages (task submission, task runners) and
between them (settings, catalog rebuild, artifacts, funnel, the run record).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import report  # noqa: E402
from bench.memory import NEG_SAMPLE, build_input, clean_env, prefect_template, run_cli, scripted_server  # noqa: E402


# ---- the bare run (child process) --------------------------------------------------------------------
class _Done:
    """A finished 'future': the task function already ran."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class _BareRunner:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, task, parameters, *args, **kwargs):
        return _Done(task.fn(**parameters))


def bare_run(data_dir: str, paths: list[str], base_url: str, model: str) -> None:
    """The pipeline flow's body with every Prefect task run replaced by a plain call."""
    t0 = time.perf_counter()
    import prefect.futures
    from prefect import Task

    import flows.ingest
    from flows.pipeline import pipeline_flow
    from flows.runtime import run_stage
    from flows.settings import CrawlSource, ExportSettings, ExtractSettings, RecallSettings
    from webinstruct.llm_server import settings_from_cli

    Task.__call__ = lambda self, *a, **kw: self.fn(*a, **kw)
    Task.submit = lambda self, *a, **kw: _Done(self.fn(*a, **kw))
    prefect.futures.as_completed = lambda futures, *a, **kw: iter(list(futures))
    flows.ingest.as_completed = prefect.futures.as_completed
    flows.ingest._runner = lambda todo, workers: _BareRunner()
    imported = time.perf_counter() - t0
    llm = settings_from_cli([base_url], model, None)
    started = time.perf_counter()
    run_stage(pipeline_flow, source=CrawlSource(paths=paths), data_dir=data_dir, llm=llm,
              recall=RecallSettings(retrain="if_missing", neg_sample=NEG_SAMPLE), extract=ExtractSettings(max_docs=None),
              export=ExportSettings(dir=str(Path(data_dir) / "export")))
    print(json.dumps({"import_s": imported, "flow_s": time.perf_counter() - started}))


# ---- reading the runs --------------------------------------------------------------------------------
def _ts(value) -> float:
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def stage_seconds(data_dir: Path) -> tuple[dict[str, float], dict]:
    """Seconds per stage (rounds of a stage summed) and the run record, from the warehouse manifest."""
    from warehouse import Warehouse

    wh = Warehouse(data_dir)
    per: dict[str, float] = {}
    for r in wh.manifest("stage_runs").sort("started_at").iter_rows(named=True):
        per[r["stage"]] = per.get(r["stage"], 0.0) + _ts(r["finished_at"]) - _ts(r["started_at"])
    run = wh.manifest("runs").row(0, named=True)
    return per, {"run_s": _ts(run["finished_at"]) - _ts(run["started_at"])}


def prefect_times(home: Path) -> dict:
    """The flow run's and its task runs' times from the ephemeral server's database."""
    con = sqlite3.connect(f"file:{home / 'prefect.db'}?mode=ro", uri=True)
    created, start, end = con.execute("select created, start_time, end_time from flow_run").fetchone()
    tasks = con.execute("select count(*), sum(julianday(end_time) - julianday(start_time)) * 86400 "
                        "from task_run").fetchone()
    events = con.execute("select count(*) from events").fetchone()[0]
    artifacts = con.execute("select count(*) from artifact").fetchone()[0]
    con.close()
    return {"created": _ts(created), "start": _ts(start), "end": _ts(end), "task_runs": tasks[0],
            "task_run_s": tasks[1] or 0.0, "events": events, "artifacts": artifacts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segments", type=int, default=20, help="input size: replicas of the sample (~270 pages each)")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (inputs are reused)")
    ap.add_argument("--bare", nargs=4, metavar=("DATA_DIR", "PATHS_JSON", "BASE_URL", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare:
        data_dir, paths, base_url, model = args.bare
        return bare_run(data_dir, json.loads(paths), base_url, model)

    tmp = args.keep or Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    for old in list(tmp.glob("wh-*")):
        shutil.rmtree(old)
    server = scripted_server()
    try:
        inp = build_input(tmp / "crawl" / f"{args.segments}seg", args.segments)
        template = prefect_template(tmp)
        load = [os.getloadavg()[0]]
        t_spawn = time.time()
        cli = run_cli(tmp / "wh-prefect", inp["paths"], server, template, tmp / "run-prefect.log")
        t_exit = t_spawn + cli["wall_s"]
        pf = prefect_times(tmp / "wh-prefect-prefect")
        load.append(os.getloadavg()[0])
        started = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--bare", str(tmp / "wh-bare"), json.dumps(inp["paths"]),
                              server.base_url, server.model], cwd=ROOT, env=clean_env(), capture_output=True,
                             text=True)
        if out.returncode:
            raise RuntimeError(f"bare run failed:\n{out.stderr[-3000:]}")
        bare = json.loads(out.stdout.strip().splitlines()[-1]) | {"wall_s": time.perf_counter() - started}
        ours_stages, ours_run = stage_seconds(tmp / "wh-prefect")
        bare_stages, _ = stage_seconds(tmp / "wh-bare")
        from bench.memory import counts

        docs = counts(tmp / "wh-prefect")
    finally:
        server.stop()
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)

    compute = sum(bare_stages.values())
    flow_wall = pf["end"] - pf["created"]
    cli_wall = cli["wall_s"]
    in_stages = sum(ours_stages.values())

    def row(measure, ours, peer, peer_value, unit="s", target=None):
        return {"measure": measure, "ours": round(ours, 3), "peer": peer, "peer_value": round(peer_value, 3),
                "ratio": round(ours / peer_value, 3) if peer_value else None, "unit": unit, "target": target}

    share = lambda wall: 100.0 * (wall - compute) / wall  # noqa: E731
    rows = [
        row("overhead share of the flow wall", share(flow_wall), "share of the CLI wall", share(cli_wall), "%",
            "<= 5"),
        row("flow wall (flow run created -> end)", flow_wall, "sum of bare stage compute", compute),
        row("CLI wall (process start -> exit)", cli_wall, "sum of bare stage compute", compute),
        row("CLI: start -> flow run created (imports, API server)", pf["created"] - t_spawn, "CLI wall", cli_wall),
        row("CLI: flow end -> exit (funnel, report, server stop)", t_exit - pf["end"], "CLI wall", cli_wall),
        row("flow: inside stages (Prefect)", in_stages, "inside stages (bare)", compute),
        row("flow: between stages (Prefect)", flow_wall - in_stages, "between stages (bare)",
            bare["flow_s"] - compute),
        row("bare flow body wall", bare["flow_s"], "sum of bare stage compute", compute),
    ]
    rows += [row(f"stage {name} (Prefect)", ours_stages.get(name, 0.0), "bare", secs)
             for name, secs in bare_stages.items()]
    notes = [
        f"input: {args.segments} segment(s), {docs['docs']} documents, {docs['pairs']} extracted pairs, "
        f"{docs['dataset']} dataset rows; scripted LLM server; 2 task-runner threads in the Prefect run, "
        "tasks one after another in the bare run.",
        f"Prefect run: {pf['task_runs']} task runs ({pf['task_run_s']:.1f} s inside them), {pf['events']} events, "
        f"{pf['artifacts']} artifacts; the run record (lock to curate's end) took {ours_run['run_s']:.1f} s.",
        f"bare run: imports {bare['import_s']:.1f} s, whole process {bare['wall_s']:.1f} s.",
        "Overhead share = (wall - sum of the bare run's stage seconds) / wall.",
        f"load average (1 min) at the start {load[0]:.1f}, after the Prefect run {load[1]:.1f}, at the end "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: a stage slower in one run than in the other with "
        "no task-run bookkeeping to explain it (one recall_train task) is other load on the machine.",
    ]
    title = "Orchestration overhead: end-to-end wall vs the stages' bare compute"
    report(args.results, "overhead", title, rows, notes)


if __name__ == "__main__":
    main()
