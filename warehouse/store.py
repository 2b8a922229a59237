"""The warehouse: a directory of fingerprinted, immutable Parquet shards plus a small manifest.

Layout under the data directory:

    <table>/<fingerprint>/part-<shard>.parquet   table rows, one version per fingerprint
    _manifest/<runs|stage_runs>/<id>.parquet      who wrote what, when, with which settings
    _models/<fingerprint>/...                     side files of a version (e.g. fastText models)
    _empty/<table>-<schema hash>.parquet          zero-row files giving each table its schema in SQL
    catalog.duckdb                                DuckDB views over all of the above

Every file is written to a hidden temp name in the same folder and renamed into place, so a
reader (or a crash) never sees a half-written shard. Shards are never modified once written.

The data directory may be an fsspec URL (s3://bucket/prefix, gs://...): tables, manifest and
models then live in the object store (an upload is atomic: an object appears whole or not at
all), and what belongs to one machine (the write lock, the LLM response cache, catalog.duckdb,
models loaded for scoring) lives in a local state folder (`Warehouse.local`).
"""
from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import polars as pl

from warehouse.fingerprint import content_hash
from warehouse.schemas import TABLES, TableSpec

DEFAULT_DATA_DIR = "webinstruct-data"
PART_GLOB = "part-*.parquet"


def is_url(path) -> bool:
    """An fsspec URL other than file:// (those are local paths)."""
    return "://" in str(path) and not str(path).startswith("file://")


def resolve_data_dir(data_dir=None):
    """A local warehouse as an absolute Path; one in object storage as a UPath (pathlib's API over fsspec)."""
    chosen = data_dir or os.environ.get("WEBINSTRUCT_DATA") or DEFAULT_DATA_DIR
    if not isinstance(chosen, Path) and is_url(chosen):
        from upath import UPath

        return UPath(str(chosen).rstrip("/"))
    return Path(str(chosen).removeprefix("file://")).expanduser().resolve()


def local_state_dir(root) -> Path:
    """Where a warehouse keeps what belongs to this machine: the folder itself when it is local,
    else a folder named after the URL under WEBINSTRUCT_STATE_DIR (default ~/.cache/webinstruct)."""
    if isinstance(root, Path):
        return root
    base = Path(os.environ.get("WEBINSTRUCT_STATE_DIR") or Path.home() / ".cache" / "webinstruct")
    return base / f"{root.protocol}-{content_hash(str(root), 12)}"


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def new_id(prefix: str = "") -> str:
    """Time-sortable unique id: 20261125T071500-3fa2c1."""
    return f"{prefix}{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


TEMP_GLOBS = (".tmp-*", ".train-*", ".part-*")  # scratch files of _write_atomic and of fastText training


def _write_atomic(path, write):
    """`write(tmp)` into a hidden temp file beside `path`, then rename it into place; in object
    storage, into a local temp file that is then uploaded in one piece."""
    if not isinstance(path, Path):
        with tempfile.TemporaryDirectory(prefix="webinstruct-upload-") as d:
            tmp = Path(d) / path.name
            write(tmp)
            path.fs.put_file(str(tmp), path.path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{uuid.uuid4().hex}-{path.name}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_parquet_atomic(df: pl.DataFrame, path: Path) -> Path:
    return _write_atomic(path, lambda tmp: df.write_parquet(tmp, compression="zstd", statistics=True))


def write_json_atomic(data, path: Path) -> Path:
    text = json.dumps(data, indent=1, sort_keys=True, default=str)
    return _write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def upload_tree(local: Path, url: str) -> None:
    """Copy a local folder to object storage, then delete the objects there it no longer has (a
    re-export replaces the previous one). Each object appears whole; the folder is not swapped
    at once, so files are named with their count (train-00000-of-00002) and the card comes last."""
    import fsspec

    fs, base = fsspec.core.url_to_fs(url)
    files = sorted((p for p in local.rglob("*") if p.is_file()), key=lambda p: p.name == "README.md")
    for f in files:
        fs.put_file(str(f), f"{base}/{f.relative_to(local).as_posix()}")
    keep = {f"{base}/{f.relative_to(local).as_posix()}" for f in files}
    stale = [p for p in fs.find(base) if p not in keep] if fs.exists(base) else []
    if stale:
        fs.rm(stale)


class Warehouse:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = resolve_data_dir(root)  # Path, or UPath in object storage
        self.remote = not isinstance(self.root, Path)
        self.local = local_state_dir(self.root)
        self.local.mkdir(parents=True, exist_ok=True)

    # ---- paths -------------------------------------------------------------
    @staticmethod
    def spec(table: str) -> TableSpec:
        try:
            return TABLES[table]
        except KeyError:
            raise KeyError(f"unknown table {table!r}; known: {sorted(TABLES)}") from None

    def version_dir(self, table: str, fingerprint: str) -> Path:
        self.spec(table)
        return self.root / table / fingerprint

    def shard_path(self, table: str, fingerprint: str, shard: str) -> Path:
        return self.version_dir(table, fingerprint) / f"part-{shard}.parquet"

    def side_dir(self, kind: str, fingerprint: str) -> Path:
        """A local folder for non-tabular files of a version (models). In object storage it is a
        copy: the files already published are fetched first; `publish_side` uploads new ones."""
        d = self.local / f"_{kind}" / fingerprint
        d.mkdir(parents=True, exist_ok=True)
        if self.remote:
            for f in (self.root / f"_{kind}" / fingerprint).glob("*"):
                if not (d / f.name).exists():
                    _write_atomic(d / f.name, lambda tmp, f=f: f.fs.get_file(f.path, str(tmp)))
        return d

    def publish_side(self, d: Path) -> None:
        """Upload a side folder's files to object storage (a no-op for a local warehouse)."""
        if self.remote:
            rel = d.relative_to(self.local).as_posix()
            for f in sorted(d.iterdir()):
                if f.is_file() and not f.name.startswith("."):  # not fastText's temp files
                    target = self.root / rel / f.name
                    target.fs.put_file(str(f), target.path)

    def local_file(self, rel: str) -> Path:
        """A warehouse file (path relative to the root) as a local file, fetched once if remote."""
        path = self.local / rel
        if self.remote and not path.exists():
            src = self.root / rel
            _write_atomic(path, lambda tmp: src.fs.get_file(src.path, str(tmp)))
        return path

    def manifest_dir(self, table: str) -> Path:
        return self.root / "_manifest" / table

    def empty_file(self, table: str) -> Path:
        """A zero-row Parquet file with the table's schema, so views exist before any data."""
        spec = self.spec(table)
        # named by the schema: a table that gained a column gets a new file, not the stale one
        path = self.local / "_empty" / f"{table}-{content_hash(repr(sorted(spec.schema.items())), 8)}.parquet"
        if not path.exists():
            write_parquet_atomic(spec.empty(), path)
        return path

    def sweep_temp(self) -> list[Path]:
        """Delete the temp files a killed writer left behind (hidden, never read as data). Only
        safe while holding the warehouse's write lock: then no live writer owns one."""
        # temp files exist only on local disks (uploads to object storage are whole objects)
        stale = [p for pattern in TEMP_GLOBS for p in self.local.rglob(pattern)
                 if p.is_file() and "_prefect" not in p.relative_to(self.local).parts]
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    # ---- shards ------------------------------------------------------------
    def has_shard(self, table: str, fingerprint: str, shard: str) -> bool:
        return self.shard_path(table, fingerprint, shard).exists()

    def write_shard(self, table: str, fingerprint: str, shard: str, rows: pl.DataFrame) -> Path:
        """Conform rows to the table's schema and publish them as one immutable shard."""
        df = self.spec(table).conform(rows)
        return write_parquet_atomic(df, self.shard_path(table, fingerprint, shard))

    def shard_ids(self, table: str, fingerprint: str) -> list[str]:
        d = self.version_dir(table, fingerprint)
        return sorted(p.name[len("part-") : -len(".parquet")] for p in d.glob(PART_GLOB))

    def read_shard(self, table: str, fingerprint: str, shard: str, columns: list[str] | None = None) -> pl.DataFrame:
        return pl.read_parquet(str(self.shard_path(table, fingerprint, shard)), columns=columns)

    def shard_rows(self, table: str, fingerprint: str, shard: str) -> int:
        """Rows of a shard, from its Parquet footer."""
        import pyarrow.parquet as pq

        with self.shard_path(table, fingerprint, shard).open("rb") as f:
            return pq.ParquetFile(f).metadata.num_rows

    def scan(self, table: str, fingerprint: str | None = None) -> pl.LazyFrame:
        """Rows of one version (default: the current versions), with a `fingerprint` column."""
        fps = [fingerprint] if fingerprint else self.current_fingerprints(table)
        stored = "fingerprint" in self.spec(table).schema  # the table keeps its version itself
        frames = [
            # shards written before a column was added read it as nulls
            pl.scan_parquet(str(self.version_dir(table, fp) / PART_GLOB), schema=self.spec(table).schema,
                            missing_columns="insert").with_columns(
                pl.col("fingerprint") if stored else pl.lit(fp).alias("fingerprint")
            )
            for fp in fps
            if any(self.version_dir(table, fp).glob(PART_GLOB))
        ]
        if not frames:
            empty = self.spec(table).empty().lazy()
            return empty if stored else empty.with_columns(pl.lit(None, pl.String).alias("fingerprint"))
        return pl.concat(frames, how="diagonal_relaxed")

    def versions(self, table: str) -> list[str]:
        d = self.root / table
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if p.is_dir() and any(p.glob(PART_GLOB)))

    # ---- manifest ----------------------------------------------------------
    def write_manifest_row(self, table: str, row_id: str, row: dict[str, Any]) -> None:
        spec = self.spec(table)
        df = spec.conform(pl.DataFrame([row], schema=spec.schema))
        write_parquet_atomic(df, self.manifest_dir(table) / f"{row_id}.parquet")

    def manifest(self, table: str) -> pl.DataFrame:
        files = sorted(self.manifest_dir(table).glob("*.parquet"))
        if not files:
            return self.spec(table).empty()
        return pl.read_parquet([str(f) for f in files])

    def current_fingerprints(self, table: str, stage_runs: pl.DataFrame | None = None) -> list[str]:
        """The versions written by the newest finished run that wrote `table`.

        A run can write several versions of one table on purpose (two refiner models, two
        recall rounds); all of them are current. Before any run finished, every version is.
        Pass `stage_runs` (the manifest, read once) when asking for many tables.
        """
        runs = self.manifest("stage_runs") if stage_runs is None else stage_runs
        runs = runs.explode("outputs").filter(
            (pl.col("outputs") == table) & (pl.col("status") == "done")
        )
        existing = set(self.versions(table))
        runs = runs.filter(pl.col("fingerprint").is_in(list(existing)))
        if runs.is_empty():
            return sorted(existing)
        latest_run = runs.sort("finished_at").get_column("run_id")[-1]
        return sorted(set(runs.filter(pl.col("run_id") == latest_run).get_column("fingerprint")))

    def begin_run(self, flow: str, params: dict[str, Any], run_id: str | None = None) -> str:
        run_id = run_id or new_id()
        self.write_manifest_row(
            "runs",
            run_id,
            dict(run_id=run_id, flow=flow, params=json.dumps(params, default=str, sort_keys=True),
                 started_at=now_utc(), finished_at=None, status="running", error=None),
        )
        return run_id

    def finish_run(self, run_id: str, status: str = "done", error: str | None = None) -> None:
        row = self.manifest("runs").filter(pl.col("run_id") == run_id).to_dicts()
        if not row:
            raise KeyError(f"unknown run {run_id}")
        self.write_manifest_row("runs", run_id, {**row[0], "finished_at": now_utc(), "status": status, "error": error})

    @contextmanager
    def stage_run(self, *, run_id: str, stage: str, fingerprint: str, outputs: list[str],
                  params: dict[str, Any], upstream: list[str], code_version: str) -> Iterator["StageRun"]:
        """Record a stage execution; marks it failed (with the error) if the body raises."""
        sr = StageRun(self, dict(
            stage_run_id=new_id(f"{stage}-"), run_id=run_id, stage=stage, fingerprint=fingerprint,
            outputs=outputs, params=json.dumps(params, default=str, sort_keys=True), upstream=upstream,
            code_version=code_version, started_at=now_utc(), finished_at=None, status="running",
            shards_total=0, shards_done=0, shards_skipped=0, rows_in=0, rows_out=0, error=None,
        ))
        sr.save()
        try:
            yield sr
        except BaseException as exc:
            sr.row.update(status="failed", error=f"{type(exc).__name__}: {exc}", finished_at=now_utc())
            sr.save()
            raise
        sr.row.update(status="done", finished_at=now_utc())
        sr.save()


@dataclass
class StageRun:
    wh: Warehouse
    row: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)  # rows by outcome, for the stage's artifact

    @property
    def fingerprint(self) -> str:
        return self.row["fingerprint"]

    def add(self, **counters: int) -> None:
        for k, v in counters.items():
            self.row[k] = (self.row.get(k) or 0) + int(v)

    def save(self) -> None:
        self.wh.write_manifest_row("stage_runs", self.row["stage_run_id"], self.row)
