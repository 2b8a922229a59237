"""DuckDB views over the warehouse, and the read-only SQL connection used for inspection.

Views (for every table in `warehouse.schemas.TABLES`):
    <table>       the current version(s), with a `fingerprint` column
    <table>_all   every version side by side, with a `fingerprint` column
Manifest tables (`runs`, `stage_runs`) have a single view each; `doc_lineage` (lineage.sql)
follows every current document through the stages and names why it stopped.

DuckDB lets one read-write process lock a database file, which would block readers while a
stage runs. So the inspection connection is always a fresh in-memory database whose views are
built from the files on disk; `catalog.duckdb` is rebuilt into a temp file and renamed, so a
user's own `duckdb -readonly catalog.duckdb` never meets a writer either.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

from warehouse.schemas import TABLES
from warehouse.store import PART_GLOB, Warehouse

# Statement types an inspection query may contain; everything else (DDL, COPY, ATTACH,
# SET, INSTALL/LOAD, PRAGMA, CALL, ...) is refused before it reaches the engine.
READ_ONLY_TYPES = {"SELECT", "EXPLAIN"}
# EXPLAIN ANALYZE runs its statement (`EXPLAIN ANALYZE COPY ... TO` would write a file): the
# statement after this prefix (comments, ANALYZE, options) must be read-only too.
_EXPLAIN_PREFIX = re.compile(r"\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*explain\b\s*"
                             r"(?:(?:--[^\n]*\n|/\*.*?\*/|analy[sz]e\b|\([^)]*\))\s*)*", re.I | re.S)
# Views across tables (documents -> dataset), defined in SQL beside this module.
LINEAGE_SQL = (Path(__file__).with_name("lineage.sql")).read_text(encoding="utf-8")


# Every version a stage wrote, named by the settings that made it (compare two refiners in SQL).
VERSIONS_SQL = """CREATE OR REPLACE VIEW versions AS
SELECT stage, fingerprint AS version, fingerprint IN ({current}) AS current,
       arg_max(params, finished_at) AS settings, arg_max(upstream, finished_at) AS upstream,
       arg_max(code_version, finished_at) AS code_version, list_distinct(flatten(list(outputs))) AS tables,
       count(*) AS runs, sum(shards_done) AS shards_written, sum(rows_out) AS rows_written,
       min(started_at) AS first_run, max(finished_at) AS last_run
FROM stage_runs WHERE status = 'done' GROUP BY stage, fingerprint"""


class ReadOnlyViolation(ValueError):
    pass


def _q(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _version_select(wh: Warehouse, table: str, fp: str) -> str:
    glob = wh.version_dir(table, fp) / PART_GLOB
    # Tables that already store their version (llm_calls, recall_models) keep their own column.
    extra = "" if "fingerprint" in wh.spec(table).schema else f", '{fp}' AS fingerprint"
    # The table's empty file joins the union so shards written before a column existed read it as NULL.
    return f"SELECT *{extra} FROM read_parquet([{_q(glob)}, {_q(wh.empty_file(table))}], union_by_name=true)"


def _union(wh: Warehouse, table: str, fps: list[str]) -> str:
    if not fps:
        extra = "" if "fingerprint" in wh.spec(table).schema else ", NULL::VARCHAR AS fingerprint"
        return f"SELECT *{extra} FROM read_parquet({_q(wh.empty_file(table))})"
    return "\nUNION ALL BY NAME\n".join(_version_select(wh, table, fp) for fp in fps)


def _latest_attempts(spec, select: str) -> str:
    """A failed row superseded by a newer attempt of the same unit (`--retry-failed`) is left out."""
    if not spec.attempt_key:
        return select
    att = "coalesce(attempt, 1)"
    return (f"SELECT * FROM ({select}) QUALIFY status <> 'failed' OR {att} = "
            f"max({att}) OVER (PARTITION BY fingerprint, {', '.join(spec.attempt_key)})")


def view_statements(wh: Warehouse) -> list[str]:
    stmts = []
    stage_runs = wh.manifest("stage_runs")  # read once, not once per table
    current: set[str] = set()
    for name, spec in TABLES.items():
        if spec.manifest:
            files = list(wh.manifest_dir(name).glob("*.parquet"))
            src = wh.manifest_dir(name) / "*.parquet" if files else wh.empty_file(name)
            stmts.append(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({_q(src)}, union_by_name=true)")
            continue
        versions = wh.versions(name)
        cur = [fp for fp in wh.current_fingerprints(name, stage_runs) if fp in versions]
        current.update(cur)
        stmts.append(f"CREATE OR REPLACE VIEW {name} AS {_latest_attempts(spec, _union(wh, name, cur))}")
        stmts.append(f"CREATE OR REPLACE VIEW {name}_all AS {_union(wh, name, versions)}")
    stmts.append(VERSIONS_SQL.replace("{current}", ", ".join(f"'{fp}'" for fp in sorted(current)) or "NULL"))
    stmts.append(LINEAGE_SQL)
    return stmts


@contextmanager
def connect(wh: Warehouse) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory connection with every view, locked down to reading the warehouse."""
    # DuckDB adds its spill folder to the allowed ones (by default ./.tmp of the working directory,
    # someone else's files): give it a fresh one of its own, made only if a query spills.
    spill = Path(tempfile.gettempdir()) / f"webinstruct-duckdb-{uuid.uuid4().hex}"
    con = duckdb.connect(":memory:")
    try:
        _object_storage(con, wh)
        for stmt in view_statements(wh):
            con.execute(stmt)
        con.execute(f"SET temp_directory={_q(spill)}")
        readable = dict.fromkeys(str(d).rstrip("/") + "/" for d in (wh.root, wh.local))  # the data, the state
        con.execute(f"SET allowed_directories=[{', '.join(map(_q, readable))}]")
        con.execute("SET enable_external_access=false")
        con.execute("SET lock_configuration=true")
        yield con
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse anything but reads; a query DuckDB cannot parse raises its ParserException."""
    statements = con.extract_statements(sql)
    if not statements:
        raise ReadOnlyViolation("empty query")
    for st in statements:
        kind = st.type.name
        if kind not in READ_ONLY_TYPES:
            raise ReadOnlyViolation(
                f"{kind} statements are not allowed: `webinstruct sql` is read-only "
                "(SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN)"
            )
        if kind == "EXPLAIN":
            prefix = _EXPLAIN_PREFIX.match(st.query)
            if prefix is None:
                raise ReadOnlyViolation("EXPLAIN of a statement that cannot be checked is not allowed")
            check_read_only(con, st.query[prefix.end():])


def query(wh: Warehouse, sql: str):
    """Run a read-only query and return a polars DataFrame of the last statement's result."""
    with connect(wh) as con:
        check_read_only(con, sql)
        statements = con.extract_statements(sql)
        for st in statements[:-1]:  # run to the end for their errors; only the last one's rows are shown
            con.execute(st)
            con.complete()
        rel = con.sql(statements[-1].query)
        # polars cannot import INTERVAL columns (e.g. finished_at - started_at): show them as text.
        intervals = [c for c, t in zip(rel.columns, rel.types) if str(t) == "INTERVAL"]
        if intervals:
            rel = rel.project(", ".join(
                f'CAST("{c}" AS VARCHAR) AS "{c}"' if c in intervals else f'"{c}"' for c in rel.columns))
        return rel.pl()


def _object_storage(con: duckdb.DuckDBPyConnection, wh: Warehouse) -> None:
    """A warehouse in object storage is read through its fsspec filesystem (no DuckDB extension
    to download; credentials and endpoint as fsspec/boto find them)."""
    if wh.remote:
        con.register_filesystem(wh.root.fs)


def write_catalog(wh: Warehouse) -> Path:
    """Rebuild `catalog.duckdb` (views only) beside the data (in the local state folder of a
    warehouse in object storage), atomically."""
    target = wh.local / "catalog.duckdb"
    tmp = wh.local / f".tmp-{uuid.uuid4().hex}-catalog.duckdb"
    try:
        con = duckdb.connect(str(tmp))
        try:
            _object_storage(con, wh)
            for stmt in view_statements(wh):
                con.execute(stmt)
        finally:
            con.close()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        Path(str(tmp) + ".wal").unlink(missing_ok=True)
    return target
