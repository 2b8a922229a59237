"""Run the webinstruct CLI and SIGKILL its own process at a chosen write, mid-write.

    python -m tests.faults.kill_at TABLE N -- ARGS...

The process dies while publishing the N-th shard of TABLE: the shard's bytes are in their temp
file, the rename that would publish them never happens. TABLE `export` kills the export after its
data files are written and before its folder is swapped in. A real SIGKILL of the flow process
(no Python cleanup, no `finally`), placed where a stage is busiest; the LLM stages are killed from
outside instead, by the scripted server when the N-th request of a kind arrives.
"""
from __future__ import annotations

import os
import signal
import sys


def arm(table: str, n: int) -> None:
    import tasks.export as export
    import warehouse.store as store

    seen = {"writes": 0}

    def die() -> None:
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    if table == "export":
        card = export.dataset_card

        def dataset_card(*args, **kwargs):
            seen["writes"] += 1
            if seen["writes"] == n:
                die()
            return card(*args, **kwargs)

        export.dataset_card = dataset_card
        return
    write_atomic = store._write_atomic

    def _write_atomic(path, write):
        if path.name.startswith("part-") and path.parent.parent.name == table:
            seen["writes"] += 1
            if seen["writes"] == n:
                path.parent.mkdir(parents=True, exist_ok=True)
                write(path.parent / f".tmp-killed-{path.name}")  # the bytes land, the rename never does
                die()
        return write_atomic(path, write)

    store._write_atomic = _write_atomic


if __name__ == "__main__":
    table, n, sep, *args = sys.argv[1:]
    assert sep == "--", "usage: python -m tests.faults.kill_at TABLE N -- ARGS..."
    arm(table, int(n))
    from webinstruct.cli import app

    app(args, prog_name="webinstruct")
