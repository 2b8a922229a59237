"""Where shard tasks run: the flow's own threads (local), a Dask cluster or a Ray cluster.

The flows and tasks are the same on all three. A worker writes its shard into the warehouse (a
shared folder or object storage) and returns a small summary; only the flow records the stage
(`stage_runs`) and rebuilds the catalog. One cluster serves a whole run: the outermost flow
enters it and the stage flows it calls submit to it.
"""
from __future__ import annotations

import inspect
import logging
import os
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


class RunnerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "dask", "ray"] = Field("local", description=(
        "local: threads of the flow's process; dask or ray: the shard tasks run on that cluster "
        "(the dask or ray extra: pip install -e '.[dask]')"))
    address: Optional[str] = Field(None, description=(
        "The cluster to use: tcp://host:8786 (Dask scheduler) or ray://host:10001 / auto (Ray); "
        "empty = start a local cluster for this run and stop it after"))
    workers: Optional[int] = Field(None, ge=1, description="Worker processes of a local cluster (default: all cores)")


_active: ContextVar[Any] = ContextVar("webinstruct_task_runner", default=None)
_default = RunnerSettings()


def set_default(settings: RunnerSettings) -> None:
    """The runner for flows called without one (the CLI's --runner)."""
    global _default
    _default = settings


def build(settings: RunnerSettings):
    """A Prefect task runner for a cluster (not entered yet)."""
    workers = settings.workers or os.cpu_count() or 1
    env = _api_env()
    try:
        if settings.kind == "dask":
            from prefect_dask import DaskTaskRunner

            # its INFO lines drown the run's; at shutdown the nanny warns of workers it stops on purpose
            logging.getLogger("distributed").setLevel(logging.WARNING)
            logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
            if settings.address:
                return DaskTaskRunner(address=settings.address)
            # one thread per worker: HTML parsing and fastText hold the GIL, processes are the parallelism
            return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                                  "dashboard_address": ":0", "env": env})
        if settings.kind == "ray":
            from prefect_ray import RayTaskRunner

            if settings.address:
                return RayTaskRunner(address=settings.address)
            return RayTaskRunner(init_kwargs={"num_cpus": workers, "include_dashboard": False,
                                              "runtime_env": {"env_vars": env}})
    except ImportError as exc:
        raise RuntimeError(f"runner {settings.kind!r} needs its extra: pip install -e '.[{settings.kind}]' in the "
                           f"webinstruct checkout ({exc})") from None
    raise ValueError(f"no cluster for runner kind {settings.kind!r}")


def _api_env() -> dict[str, str]:
    """The Prefect API this run reports to, for the workers of a local cluster. Without it each
    worker process would start a temporary Prefect server of its own (~10 s each) when the run
    uses Prefect's temporary server rather than PREFECT_API_URL."""
    try:
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        url = os.environ.get("PREFECT_API_URL") or (str(ctx.client.api_url) if ctx else None)
    except Exception:  # noqa: BLE001 - outside a flow run
        url = None
    return {"PREFECT_API_URL": url} if url else {}


@contextmanager
def use_runner(settings: RunnerSettings | None) -> Iterator[Any]:
    """Enter the cluster runner for this run (unless an outer flow already did); local runs use
    the flow's own task runner and yield None."""
    outer = _active.get()
    chosen = settings or _default
    if outer is not None or chosen.kind == "local":
        yield outer
        return
    with build(chosen) as runner:
        token = _active.set(runner)
        try:
            yield runner
        finally:
            _active.reset(token)


def active_runner():
    return _active.get()


def submit(task, args: tuple):
    """`task.submit(*args)` on the cluster when one is active, else on the flow's task runner."""
    runner = _active.get()
    if runner is None:
        return task.submit(*args)
    parameters = inspect.signature(task.fn).bind(*args).arguments
    return runner.submit(task, dict(parameters))
