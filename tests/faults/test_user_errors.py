"""User errors on the command line: one or two lines saying what and what to do; -v adds the traceback.

Every case runs the installed `webinstruct` in a subprocess at COLUMNS=40 (a narrow terminal would
wrap a path if anything did), so what is checked is what a user reads. Expected text is matched on
one line: a path cut by wrapping fails the test. The SQL guard is checked on the query function
`webinstruct sql` runs (refusals are cheap there) and end to end for one refusal of each kind.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [str(Path(sys.executable).parent / "webinstruct")]
DEAD_SERVER = ["--base-url", "http://127.0.0.1:9/v1", "--model", "x"]  # port 9 (discard): refused at once
MAX_LINES = 3  # `error:` + `hint:`, and one line of slack


def cli(data_dir: Path, *args: str, verbose: bool = False, columns: str | None = "40") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WEBINSTRUCT_", "PREFECT_")) and k not in ("FORCE_COLOR", "PY_COLORS", "TERMINAL_WIDTH")}
    env.pop("COLUMNS", None)
    if columns is not None:
        env["COLUMNS"] = columns
    data_dir.parent.mkdir(parents=True, exist_ok=True)  # the working directory: never the checkout
    argv = CLI + ["--data-dir", str(data_dir)] + (["-v"] if verbose else []) + list(args)
    return subprocess.run(argv, env=env, cwd=data_dir.parent, capture_output=True, text=True, timeout=300)


def lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]


def assert_short_error(proc, code: int, needle: str) -> list[str]:
    out = lines(proc)
    assert proc.returncode == code, "\n".join(out)
    assert "Traceback" not in proc.stdout + proc.stderr and "Encountered exception" not in proc.stderr, "\n".join(out)
    assert len(out) <= MAX_LINES, "\n".join(out)
    assert any(ln.startswith("error: ") for ln in out) and any(ln.startswith("hint: ") for ln in out), out
    assert any(needle in ln for ln in out), f"{needle!r} not on one line of: {out}"
    return out


def assert_traceback_with_v(data_dir: Path, args: list[str], code: int, needle: str) -> None:
    proc = cli(data_dir, *args, verbose=True)
    assert proc.returncode == code, proc.stderr
    assert "Traceback (most recent call last)" in proc.stderr, proc.stderr
    assert any(needle in ln for ln in lines(proc)), proc.stderr


# (case id, fault, command line ({tmp}: the test's folder), exit code, text on one line; usage
# errors found by the option parser have no traceback to show: -v prints the same two lines)
CASES = [
    ("missing-path-ingest", "ingest of a path that does not exist",
     ["ingest", "{tmp}/missing.warc.gz"], 2, "input not found: {tmp}/missing.warc.gz"),
    ("missing-path-run", "run of a path that does not exist",
     ["run", "{tmp}/missing.warc.gz", *DEAD_SERVER], 2, "input not found: {tmp}/missing.warc.gz"),
    ("glob-matching-nothing", "ingest of a glob that matches no file",
     ["ingest", "{tmp}/*.warc.gz"], 2, "no crawl files in {tmp}/*.warc.gz"),
    ("bad-format", "sql --format xml (not a format)", ["sql", "--format", "xml", "select 1"], 2, "unknown format 'xml'"),
    ("negative-max-docs", "run --max-docs -1 (the settings refuse it)",
     ["run", "{tmp}/crawl", "--max-docs", "-1", *DEAD_SERVER], 2, "--max-docs: Input should be greater than or equal to 0"),
    ("non-int-max-docs", "mine --max-docs abc (the option parser refuses it)",
     ["mine", "--max-docs", "abc"], 2, "Invalid value for '--max-docs'"),
    ("bad-config-value", "curate --threshold 2 (a Jaccard threshold above 1)",
     ["curate", "--threshold", "2"], 2, "--threshold: Input should be less than or equal to 1 (got 2.0)"),
    ("bad-sql", "sql with a syntax error", ["sql", "selec 1"], 2, 'syntax error at or near "selec"'),
    ("unknown-table", "sql on a table that does not exist",
     ["sql", "select * from documnts"], 2, 'Table with name documnts does not exist! Did you mean "documents"?'),
    ("sql-write", "sql INSERT (the guard refuses it)",
     ["sql", "insert into runs select * from runs"], 2, "INSERT statements are not allowed"),
    ("sql-outside-file", "sql reading /etc/passwd",
     ["sql", "select * from read_text('/etc/passwd')"], 2, 'Cannot access file "/etc/passwd"'),
    ("damaged-warehouse", "a warehouse file that is not Parquet (a bug or damage: not a user's mistake)",
     ["status"], 1, "run again with -v for the traceback"),
]
CLICK_USAGE = {"non-int-max-docs"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_user_error_is_two_lines_and_v_shows_the_traceback(case, tmp_path, reliability):
    name, fault, argv, code, needle = case
    data = tmp_path / "wh"
    if name == "damaged-warehouse":
        (data / "_manifest" / "runs").mkdir(parents=True)
        (data / "_manifest" / "runs" / "broken.parquet").write_text("not parquet")
    (tmp_path / "crawl").mkdir()
    (tmp_path / "crawl" / "segment.warc.gz").write_bytes(b"")  # an input that exists (not read)
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    needle = needle.replace("{tmp}", str(tmp_path))
    proc = cli(data, *args)
    out = lines(proc)
    reliability(fault, f"exit {code}; `error:` and `hint:` lines, no traceback; -v: the traceback",
                f"exit {proc.returncode}; {out!r}")
    assert_short_error(proc, code, needle)
    if name in CLICK_USAGE:
        verbose = cli(data, *args, verbose=True)
        assert verbose.returncode == code and lines(verbose) == out
    else:
        assert_traceback_with_v(data, args, code, needle)


@pytest.mark.parametrize("command", [["run", "{tmp}/crawl"], ["mine"]], ids=["run", "mine"])
def test_unreachable_llm_server_fails_fast_and_writes_nothing(command, tmp_path, reliability):
    (tmp_path / "crawl").mkdir()
    (tmp_path / "crawl" / "segment.warc.gz").write_bytes(b"")  # only its name is looked at first
    data = tmp_path / "wh"
    args = [a.replace("{tmp}", str(tmp_path)) for a in command] + DEAD_SERVER
    start = time.monotonic()
    proc = cli(data, *args)
    seconds = time.monotonic() - start
    out = lines(proc)
    written = sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_file() and "_prefect" not in p.parts)
    reliability(f"`{command[0]}` with --base-url at a port where nothing listens",
                "exit 1 at once with the URL and what to start; no run recorded, nothing written",
                f"exit {proc.returncode} after {seconds:.1f} s; {out!r}; files written: {written or 'none'}")
    assert_short_error(proc, 1, "http://127.0.0.1:9/v1 does not answer")
    assert any(ln.startswith("hint: ") and "webinstruct serve" in ln for ln in out)
    assert written == [] and seconds < 60
    if command[0] == "run":
        assert_traceback_with_v(data, args, 1, "http://127.0.0.1:9/v1")


@pytest.mark.slow  # a flow run starts Prefect's local server: ~20 s a run on 2 busy cores
def test_error_inside_a_flow_run_hides_prefects_report(tmp_path, reliability):
    data = tmp_path / "wh"
    args = ["curate", "--benchmark", f"mine={tmp_path}/missing.jsonl:question"]
    proc = cli(data, *args)
    reliability("curate against a benchmark file that does not exist (raised inside the flow run)",
                "exit 2, two lines; Prefect's ERROR log with its traceback kept off the terminal (shown with -v)",
                f"exit {proc.returncode}; {lines(proc)!r}")
    assert_short_error(proc, 2, f"benchmark file not found: {tmp_path}/missing.jsonl")
    verbose = cli(data, *args, verbose=True)
    assert verbose.returncode == 2 and "Encountered exception" in verbose.stderr and "Traceback" in verbose.stderr


def test_long_paths_are_never_wrapped(tmp_path, reliability):
    long_dir = tmp_path.joinpath(*[f"a-rather-long-folder-name-{i:02d}" for i in range(8)])
    assert len(str(long_dir)) > 200
    data = long_dir / "wh"
    observed = []
    for columns in ("40", None):  # a narrow terminal, and none at all (rich's default width)
        missing = cli(data, "ingest", f"{long_dir}/missing.warc.gz", columns=columns)
        assert_short_error(missing, 2, f"input not found: {long_dir}/missing.warc.gz")
        status = cli(data, "status", columns=columns)
        assert status.returncode == 0 and any(f"warehouse {data}" in ln for ln in lines(status)), status.stdout
        report = cli(data, "report", f"{long_dir}/report.html", columns=columns)
        assert report.returncode == 0 and f"{long_dir}/report.html" in report.stdout.splitlines(), report.stdout
        observed.append(f"COLUMNS={columns or 'unset'}: the {len(str(data))}-character path whole on one line "
                        "in the error, the status title and the report path")
    reliability("a warehouse path over 200 characters, printed at COLUMNS=40 and with COLUMNS unset",
                "every path printed whole on one line (copyable)", "; ".join(observed))


def test_nested_values_in_csv_are_json_text(tmp_path, reliability):
    proc = cli(tmp_path / "wh", "sql", "--format", "csv", "select [1, 2] as xs, {'a': 1} as s")
    reliability("sql --format csv of a list and a struct column", "exit 0; the values as JSON text",
                f"exit {proc.returncode}; {proc.stdout.splitlines()!r}")
    assert proc.returncode == 0 and proc.stdout.splitlines() == ["xs,s", '"[1, 2]","{""a"": 1}"']


# ---- the read-only SQL guard (tests/test_warehouse.py has DROP, CREATE TABLE, COPY, ATTACH, INSTALL,
# SET, PRAGMA, a trailing DROP and read_csv('/etc/passwd')) -------------------------------------------
REFUSED = {
    "insert": "insert into runs select * from runs",
    "update": "update runs set status = 'done'",
    "delete": "delete from runs",
    "create-view": "create view v as select 1",
    "copy-into-warehouse": "copy (select 1) to '{root}/x.csv'",
    "explain-analyze-copy": "explain analyze copy (select 1) to '{root}/x.csv'",
    "explain-analyze-create": "/* c */ explain /* d */ analyze create table t as select 1",
    "export": "export database '{root}/exp'",
    "attach-in-warehouse": "attach '{root}/x.db' as x",
    "detach": "detach memory",
    "load": "load httpfs",
    "force-install": "force install httpfs",
    "set-external-access": "set enable_external_access = true",
    "reset": "reset allowed_directories",
    "use": "use memory",
    "pragma": "pragma enable_profiling",
    "call": "call pragma_version()",
    "after-a-select": "select 1; insert into runs select * from runs",
}
OUTSIDE = {
    "read-text-etc-passwd": "select * from read_text('/etc/passwd')",
    "read-blob": "select * from read_blob('/etc/hostname')",
    "glob-etc": "select * from glob('/etc/*')",
    "dot-dot": "select * from read_csv('{root}/../outside.csv')",
    "relative-dot-dot": "select * from read_csv('../outside.csv')",
    "symlink-out": "select * from read_csv('{root}/link/outside.csv')",
    "cwd-spill-folder": "select * from read_csv('.tmp/outside.csv')",
    "url": "select * from read_csv('https://example.com/x.csv')",
}
ALLOWED = {
    "select": "select count(*) as n from documents",
    "with": "with d as (select * from runs) select count(*) as n from d",
    "describe": "describe documents",
    "show": "show tables",
    "summarize": "summarize select 1 as n",
    "explain-analyze-select": "explain analyze select count(*) from documents",
    "two-selects": "select 1 as a; select 2 as b",
    "glob-inside": "select * from glob('{root}/_empty/*')",
}


def test_sql_guard_refuses_writes_settings_and_files_outside(tmp_path, monkeypatch, reliability):
    import duckdb

    from warehouse import Warehouse
    from warehouse.catalog import ReadOnlyViolation, query

    wh = Warehouse(tmp_path / "wh")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "outside.csv").write_text("secret\n42\n")
    (tmp_path / "outside.csv").write_text("secret\n42\n")
    (wh.root / "link").symlink_to(outside)  # a folder in the warehouse that points out of it
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / "outside.csv").write_text("secret\n42\n")  # DuckDB's default spill folder
    monkeypatch.chdir(tmp_path)
    query(wh, "select 1")  # the first query writes the empty tables' schema files
    before = sorted(p.name for p in wh.root.iterdir())

    def sql(text: str) -> str:
        return text.replace("{root}", str(wh.root))

    refused = {}
    for name, text in REFUSED.items():
        with pytest.raises(ReadOnlyViolation) as exc:
            query(wh, sql(text))
        refused[name] = str(exc.value).split(":")[0]
    denied = {}
    for name, text in OUTSIDE.items():
        with pytest.raises(duckdb.PermissionException) as exc:
            query(wh, sql(text))
        denied[name] = "Permission Error" in str(exc.value)
    rows = {name: query(wh, sql(text)).height for name, text in ALLOWED.items()}
    after = sorted(p.name for p in wh.root.iterdir())
    reliability("writes, EXPLAIN ANALYZE of a write, ATTACH/DETACH, LOAD/INSTALL, SET/RESET/USE, PRAGMA, CALL",
                "every one refused before it runs", f"refused: {refused}")
    reliability("reads of /etc, ../, a symlink out of the warehouse, ./.tmp (DuckDB's spill folder), a URL",
                "every one refused with DuckDB's Permission Error", f"permission errors: {denied}")
    reliability("SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN ANALYZE SELECT, two SELECTs, glob in the warehouse",
                "allowed", f"rows: {rows}; warehouse files before {before}, after {after}")
    assert all(denied.values()) and before == after
    assert all(n >= 1 for n in rows.values())


def test_sql_guard_end_to_end_for_explain_analyze_copy(tmp_path, reliability):
    data = tmp_path / "wh"
    proc = cli(data, "sql", f"explain analyze copy (select 1) to '{data}/x.csv'")
    reliability("webinstruct sql \"EXPLAIN ANALYZE COPY ... TO '<warehouse>/x.csv'\" (ran the COPY before)",
                "exit 2, refused, no file written",
                f"exit {proc.returncode}; {lines(proc)!r}; x.csv written: {(data / 'x.csv').exists()}")
    assert_short_error(proc, 2, "COPY statements are not allowed")
    assert not (data / "x.csv").exists()
