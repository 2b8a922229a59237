"""What every flow shares: Prefect's environment, the run record, progress reporting."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from warehouse import Warehouse, resolve_data_dir


def configure_prefect(data_dir: str | os.PathLike | None = None, *, quiet: bool = True) -> Path:
    """Point Prefect at a home inside the data directory (unless PREFECT_HOME is set).

    Must run before `prefect` is imported: Prefect reads these settings at import time.
    """
    root = resolve_data_dir(data_dir)
    home = Path(os.environ.setdefault("PREFECT_HOME", str(root / "_prefect")))
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")
    # The ephemeral API server needs ~10 s to start on 2 busy cores; Prefect's default wait is 20 s.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    if quiet:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
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


@contextmanager
def pipeline_run(wh: Warehouse, flow: str, params: dict[str, Any], run_id: str | None) -> Iterator[str]:
    """Open a `runs` record unless an outer flow already did (then reuse its run id)."""
    if run_id:
        yield run_id
        return
    try:
        from prefect.runtime import flow_run

        prefect_id = flow_run.id
    except Exception:  # noqa: BLE001 - outside a flow run
        prefect_id = None
    rid = wh.begin_run(flow, params, run_id=None if prefect_id is None else f"{flow}-{prefect_id}")
    try:
        yield rid
    except BaseException as exc:
        wh.finish_run(rid, "failed", f"{type(exc).__name__}: {exc}")
        raise
    wh.finish_run(rid, "done")


def total(results: list[dict], key: str) -> int:
    """Sum one counter over task results (missing or None counts as 0)."""
    return sum(int(r.get(key) or 0) for r in results)
