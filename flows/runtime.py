"""What every flow shares: Prefect's environment, the run record and its lock, the stage runner
(stage_runs row + Prefect artifacts + a log line), progress reporting."""
from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import polars as pl

from flows.runners import RunnerSettings, submit, use_runner
from warehouse import Warehouse, resolve_data_dir
from warehouse.store import StageRun, local_state_dir

log = logging.getLogger("webinstruct")


def configure_prefect(data_dir: str | os.PathLike | None = None, *, quiet: bool = True):
    """Point Prefect at a home inside the data directory (unless PREFECT_HOME is set).

    Must run before `prefect` is imported: Prefect reads these settings at import time.
    """
    root = resolve_data_dir(data_dir)
    home = Path(os.environ.setdefault("PREFECT_HOME", str(local_state_dir(root) / "_prefect")))
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")
    # The ephemeral API server needs ~10 s to start on 2 busy cores; Prefect's default wait is 20 s.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    # With a Prefect server of the user's (PREFECT_API_URL), run logs go to it, so run pages show them.
    os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "true" if os.environ.get("PREFECT_API_URL") else "false")
    if quiet:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    return root


# A progress sink the CLI installs (a rich progress bar); flows and tasks report into it.
# Tasks run in threads of the flow's process, so a module-level hook reaches the terminal.
ProgressHook = Callable[[str, int, int | None], None]  # (label, advance, new_total)
_progress: ProgressHook | None = None


def set_progress(hook: ProgressHook | None) -> None:
    global _progress
    _progress = hook


def progress(label: str, advance: int = 0, total: int | None = None) -> None:
    if _progress is not None:
        _progress(label, advance, total)


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The flow run's logger (its lines reach the Prefect UI), or a plain one outside a run."""
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a flow or task run
        return log


# ---- one writer per warehouse -------------------------------------------------------------------
_held = threading.local()


@contextmanager
def warehouse_lock(wh: Warehouse, wait_log_s: float = 30.0) -> Iterator[None]:
    """Runs on one warehouse take turns (a schedule firing during a UI rerun waits, it does not
    interleave). An OS file lock: released by the kernel when a killed run's process dies."""
    if getattr(_held, "root", None) == wh.root:  # a subflow of the run holding it
        yield
        return
    path = wh.local / "_manifest" / ".write.lock"  # an OS lock: on this machine's disk
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        waited = 0.0
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if waited % wait_log_s == 0:
                    run_logger().warning("another run is writing %s; waiting for it to finish", wh.root)
                time.sleep(1.0)
                waited += 1.0
        _held.root = wh.root
        try:
            yield
        finally:
            _held.root = None
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def pipeline_run(wh: Warehouse, flow: str, params: dict[str, Any], run_id: str | None,
                 runner: RunnerSettings | None = None) -> Iterator[str]:
    """Open a `runs` record (holding the warehouse lock) and enter the task runner's cluster unless
    an outer flow already did; at the end of the outermost run, rebuild the DuckDB catalog once."""
    if run_id:
        yield run_id
        return
    try:
        from prefect.runtime import flow_run

        prefect_id = flow_run.id
    except Exception:  # noqa: BLE001 - outside a flow run
        prefect_id = None
    with warehouse_lock(wh), use_runner(runner):
        if stale := wh.sweep_temp():
            run_logger().warning("removed %d temp file(s) a killed run left, e.g. %s", len(stale), stale[0])
        rid = wh.begin_run(flow, params, run_id=None if prefect_id is None else f"{flow}-{prefect_id}")
        try:
            yield rid
        except BaseException as exc:
            wh.finish_run(rid, "failed", f"{type(exc).__name__}: {exc}")
            raise
        else:
            wh.finish_run(rid, "done")
        finally:
            from warehouse.catalog import write_catalog

            write_catalog(wh)


def remember_settings(wh: Warehouse, **groups) -> None:
    """Keep the settings a stage ran with, so a rerun of an earlier stage carries the later stages
    on as they were last run (`last_settings`). Settings hold no secret (see LLMSettings)."""
    from warehouse.store import write_json_atomic

    for name, value in groups.items():
        data = [v.model_dump(mode="json") for v in value] if isinstance(value, list) else value.model_dump(mode="json")
        write_json_atomic(data, wh.root / "_manifest" / "settings" / f"{name}.json")


def last_settings(wh: Warehouse, name: str, model, default=None):
    """The settings group `name` as a stage last ran with it (a list of models for list groups), else `default`."""
    import json

    path = wh.root / "_manifest" / "settings" / f"{name}.json"
    if not path.exists():
        return default if default is not None else model()
    data = json.loads(path.read_text())
    return [model.model_validate(d) for d in data] if isinstance(data, list) else model.model_validate(data)


def run_stage(stage_flow, **kwargs):
    """Run a stage flow's body inside the current flow run (no subflow run: Prefect spends ~1.5 s
    on each one here, which would dominate a scheduled run with little new); its tasks, logs and
    artifacts land on the calling run. Defaults declared as pydantic Fields are resolved."""
    from prefect.utilities.callables import get_call_parameters

    return stage_flow.fn(**get_call_parameters(stage_flow.fn, (), kwargs))


# ---- the stage runner -----------------------------------------------------------------------------
@contextmanager
def stage(wh: Warehouse, *, run_id: str, name: str, fingerprint: str, outputs: list[str], params: dict[str, Any],
          upstream: list[str], code_version: str) -> Iterator[StageRun]:
    """A stage_runs row around the body; then one Prefect table artifact and one log line.

    The body adds counters (`sr.add(...)`) and may set `sr.reasons` ({reason: rows}) for the
    failures-by-reason table."""
    started = time.perf_counter()
    with wh.stage_run(run_id=run_id, stage=name, fingerprint=fingerprint, outputs=outputs, params=params,
                      upstream=upstream, code_version=code_version) as sr:
        yield sr
    seconds = time.perf_counter() - started
    publish_stage(wh, sr, seconds, "llm_calls" in outputs)


def llm_usage(wh: Warehouse, fingerprint: str, since) -> dict[str, float]:
    """Calls, cache hits and tokens an LLM stage spent since `since` (its llm_calls version)."""
    if fingerprint not in wh.versions("llm_calls"):
        return {}
    calls = wh.scan("llm_calls", fingerprint).filter(pl.col("created_at") >= since).select(
        calls=pl.len(), cached=pl.col("cached").sum(), prompt_tokens=pl.col("prompt_tokens").sum(),
        completion_tokens=pl.col("completion_tokens").sum(), latency_s_p50=pl.col("latency_s").median()).collect()
    return {k: v for k, v in calls.row(0, named=True).items() if v is not None}


def publish_stage(wh: Warehouse, sr: StageRun, seconds: float, uses_llm: bool) -> None:
    row = sr.row
    facts: dict[str, Any] = {
        "stage": row["stage"], "version": row["fingerprint"], "shards done": row["shards_done"],
        "shards skipped": row["shards_skipped"], "rows in": row["rows_in"], "rows out": row["rows_out"],
        "seconds": round(seconds, 2)}
    if uses_llm:
        facts |= {k.replace("_", " "): round(v, 3) if isinstance(v, float) else v
                  for k, v in llm_usage(wh, row["fingerprint"], row["started_at"]).items()}
    reasons = sr.reasons
    run_logger().info("%s %s: %s shard(s) done, %s skipped, %s rows out in %.1f s%s", row["stage"],
                      row["fingerprint"], row["shards_done"], row["shards_skipped"], row["rows_out"], seconds,
                      f"; {reasons}" if reasons else "")
    table = [{"measure": k, "value": str(v)} for k, v in facts.items()]
    table += [{"measure": f"rows: {k}", "value": str(v)} for k, v in sorted(reasons.items())]
    publish_table(f"{row['stage']}-stage", table, f"{row['stage']} {row['fingerprint']}: what this run did")


def publish_table(key: str, table: list[dict], description: str) -> None:
    """A Prefect table artifact on the current run (a no-op outside one)."""
    try:
        from prefect.artifacts import create_table_artifact
        from prefect.context import FlowRunContext

        if FlowRunContext.get() is None:
            return
        create_table_artifact(key=key.replace("_", "-").lower(), table=table, description=description)
    except Exception as exc:  # noqa: BLE001 - an artifact must never fail a stage
        log.warning("could not publish artifact %s: %s", key, exc)


class ProgressArtifact:
    """A Prefect progress artifact for a long stage, updated as its shard tasks finish."""

    def __init__(self, title: str, total: int):
        self.total, self.done, self.id = max(total, 1), 0, None
        try:
            from prefect.artifacts import create_progress_artifact
            from prefect.context import FlowRunContext

            if FlowRunContext.get() is not None and total:
                self.id = create_progress_artifact(progress=0.0, description=title)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not create progress artifact: %s", exc)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.id is None:
            return
        try:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self.id, progress=round(100.0 * self.done / self.total, 1))
        except Exception as exc:  # noqa: BLE001
            log.warning("could not update progress artifact: %s", exc)


def run_shards(task, calls: list[tuple], title: str,
               advance: Callable[[Any], tuple[str, int]] | None = None) -> list[Any]:
    """Submit one task per shard and collect results as they finish, advancing a progress artifact
    and, with `advance(result) -> (label, n)`, the terminal's bar. Progress is counted here, in the
    flow's process, because a task on a cluster worker cannot reach the terminal."""
    from prefect.futures import as_completed

    bar = ProgressArtifact(title, len(calls)) if len(calls) > 1 else None
    futures = [submit(task, args) for args in calls]
    results = []
    for fut in as_completed(futures):
        results.append(fut.result())
        if bar:
            bar.advance()
        if advance:
            progress(*advance(results[-1]))
    return results


def total(results: list[dict], key: str) -> int:
    """Sum one counter over task results (missing or None counts as 0)."""
    return sum(int(r.get(key) or 0) for r in results)
