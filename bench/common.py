"""The results convention every bench script follows, and small timing helpers.

A bench given `--results DIR` (default bench/results) writes DIR/<bench>.json:
    {"bench": name, "title": str,
     "rows": [{"measure": str, "ours": number, "peer": str, "peer_value": number,
               "ratio": number, "unit": str, "target": str | null}],
     "notes": [str]}
`ratio` is ours / peer_value for rates (higher is better for us) and is computed within one run
on the same input. bench/performance_doc.py renders every such file into docs/performance.md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def add_results_arg(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder for <bench>.json (default bench/results)")


def row(measure: str, ours: float, peer: str, peer_value: float, unit: str, target: str | None = None,
        ratio: float | None = None) -> dict:
    if ratio is None:
        ratio = ours / peer_value if peer_value else float("nan")
    return {"measure": measure, "ours": _num(ours), "peer": peer, "peer_value": _num(peer_value),
            "ratio": round(ratio, 3), "unit": unit, "target": target}


def _num(x: float) -> float:
    return round(float(x), 3 if abs(x) < 100 else 1)


def write_results(folder: Path, bench: str, title: str, rows: list[dict], notes: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{bench}.json"
    load = os.getloadavg()[0]
    notes = [*notes, f"load average at the end of the run: {load:.1f} on {os.cpu_count()} cores"]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"bench": bench, "title": title, "rows": rows, "notes": notes}, indent=2) + "\n")
    tmp.rename(path)
    print(f"wrote {path}")
    return path


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"{'measure':<44} {'ours':>10} {'peer':>10} {'ratio':>7}  unit  target")
    for r in rows:
        print(f"{r['measure']:<44} {r['ours']:>10.4g} {r['peer_value']:>10.4g} {r['ratio']:>7.2f}  "
              f"{r['unit']:<5} {r['target'] or ''}")


def report(folder: Path, bench: str, title: str, rows: list[dict], notes: list[str]) -> None:
    """Write DIR/<bench>.json and print the same table and notes."""
    write_results(folder, bench, title, rows, notes)
    print_table(title, rows)
    for n in notes:
        print(" -", n)


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (peers that fork workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Timer:
    """`with Timer() as t: ...` -> t.wall, t.cpu (seconds)."""

    def __enter__(self) -> "Timer":
        self._w, self._c = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self._w, cpu_seconds() - self._c
