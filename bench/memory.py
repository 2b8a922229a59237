"""Bench: flat memory. Peak RSS of a whole pipeline run (ingest -> curate) on 1x and 10x the input.

    .venv/bin/python bench/memory.py [--base 1] [--scale 10] [--results bench/results]

Input: every intact HTML response of the bundled real crawl files (data/sample/crawl) becomes one
"segment" .warc.gz; segment k is a replica with new WARC-Record-IDs, new URLs (registered domain
renamed per copy, so domains grow with the input too) and every 4th word of the page text swapped
for a common word chosen by (k, position): new documents whose pairs are not near-duplicates of
another copy's. 1x = `--base` segments, 10x = `--base * --scale`.

Each size runs `webinstruct run` (the real command line, with recall training on a fixed
NEG_SAMPLE negatives, see there) in a fresh process on a fresh warehouse (a fresh copy of one
pre-migrated Prefect database, so both sizes start alike) against the scripted OpenAI-compatible
model of the fault suite (tests/faults/scripted_model.py: deterministic, instant). Measured:
  tree peak   the peak over time of the summed RSS of the CLI process and every descendant
              (Prefect's ephemeral API server, ingest worker processes), sampled from /proc every 0.1 s
  per process the kernel's own high-water mark (VmHWM) of each process of the tree, exact;
              `largest` is wait4()'s ru_maxrss of the CLI process (it and the children it reaped)
Target: tree peak at 10x <= 1.5 x tree peak at 1x.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import report  # noqa: E402

CRAWL = ROOT / "data" / "sample" / "crawl"
# intact files with HTML responses (resiliparse_clipped.warc.gz is cut short on purpose)
SOURCES = ["forum_pages.warc.gz", "dolma_warc_sample-0000.warc.gz", "dolma_warc_sample-0001.warc.gz",
           "resiliparse_warcfile.warc.gz", "resiliparse_clueweb-quirk.warc.gz", "ccwhirlwind_whirlwind.warc.gz",
           "warcio_example.warc.gz", "warcio_example-iana.org-chunked.warc"]
WORDS = (b"about after again also answer around because before between both change could each every find "
         b"first found from give great group have help here high just know large last later little long "
         b"make many might more most much must never next number often only other over part place point "
         b"right same seem should show since small some still such take than that their them then there "
         b"these thing think those three through time together under until very water well were what "
         b"when where which while with without word work world would write year young").split()
TEXT = re.compile(rb">([^<>]+)<")
WORD = re.compile(rb"(?<![&\w])[A-Za-z]{4,}")  # not an entity (&nbsp;)
MIB = 2**20
# Recall trains on this many negatives (and as many positives) at every input size, as at crawl scale
# (paper: 100K + 100K). Left to grow with the input, the negatives of a replicated sample are mostly
# copies of its Q&A pages: the 10x model learns them as negatives and recalls 1 page in 2,680.
NEG_SAMPLE = 150


# ---- input ---------------------------------------------------------------------------------------
def sample_records() -> list[tuple[str, str, list[tuple[str, str]], str, bytes]]:
    """(uri, warc date, http headers, status line, decoded body) of every HTML response in SOURCES."""
    from warcio.archiveiterator import ArchiveIterator

    out = []
    for name in SOURCES:
        with open(CRAWL / name, "rb") as fh:
            for rec in ArchiveIterator(fh):
                if rec.rec_type != "response" or rec.http_headers is None:
                    continue
                if not (rec.http_headers.get_header("Content-Type") or "").lower().startswith("text/html"):
                    continue
                body = rec.content_stream().read()  # de-chunked, decompressed
                headers = [(k, v) for k, v in rec.http_headers.headers
                           if k.lower() not in ("content-encoding", "transfer-encoding", "content-length")]
                out.append((rec.rec_headers.get_header("WARC-Target-URI"), rec.rec_headers.get_header("WARC-Date"),
                            headers, rec.http_headers.statusline, body))
    return out


def vary_body(body: bytes, k: int) -> bytes:
    """Every 4th word (4+ letters) of the text between tags replaced, chosen by (copy, position)."""
    n = 0

    def words(m: re.Match) -> bytes:
        nonlocal n
        n += 1
        if n % 4:
            return m.group(0)
        return WORDS[zlib.crc32(f"{k}:{n}".encode()) % len(WORDS)]

    return TEXT.sub(lambda m: b">" + WORD.sub(words, m.group(1)) + b"<", body)


def vary_uri(uri: str, k: int) -> str:
    m = re.match(r"^(\w+://)([^/:?#]+)(.*)$", uri or "")
    if not m:
        return f"http://copy{k}.example.org/{uri}"
    labels = m.group(2).split(".")
    labels[-2 if len(labels) > 1 else 0] += f"-c{k}"
    return m.group(1) + ".".join(labels) + m.group(3)


def write_segment(path: Path, records, k: int) -> int:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as fh:
        w = WARCWriter(fh, gzip=True)
        w.write_record(w.create_warcinfo_record(path.name, {"software": "bench/memory.py", "isPartOf": "bench"}))
        for i, (uri, date, headers, status, body) in enumerate(records):
            new_body, new_uri = vary_body(body, k), vary_uri(uri, k)
            http = StatusAndHeaders(status, headers + [("Content-Length", str(len(new_body)))], protocol="HTTP/1.1")
            rid = f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{k}/{i}/{new_uri}')}>"
            w.write_record(w.create_warc_record(new_uri, "response", payload=BytesIO(new_body), http_headers=http,
                                                warc_headers_dict={"WARC-Record-ID": rid, "WARC-Date": date}))
    os.replace(tmp, path)
    return len(records)


def build_input(folder: Path, copies: int) -> dict:
    """`copies` segments (seg-00000.warc.gz ...) in `folder`, reusing segments already there."""
    folder.mkdir(parents=True, exist_ok=True)
    records = None
    for k in range(copies):
        path = folder / f"seg-{k:05d}.warc.gz"
        if not path.exists():
            records = records or sample_records()
            write_segment(path, records, k)
    files = sorted(folder.glob("seg-*.warc.gz"))[:copies]
    return {"paths": [str(p) for p in files], "bytes": sum(p.stat().st_size for p in files)}


# ---- the scripted model and Prefect's database -----------------------------------------------------
def scripted_server():
    from tests.fake_llm_server import FakeLLMServer
    from tests.faults import scripted_model

    return FakeLLMServer(responder=scripted_model.responder()).start()


def prefect_template(tmp: Path) -> Path:
    """A Prefect home whose database is migrated once; each run gets a fresh copy of it."""
    home = tmp / "prefect-template"
    home.mkdir(parents=True, exist_ok=True)
    env = clean_env() | {"PREFECT_HOME": str(home)}
    subprocess.run([str(Path(sys.executable).with_name("prefect")), "server", "database", "upgrade", "-y"],
                   env=env, check=True, capture_output=True)
    return home


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "WEBINSTRUCT_"))}
    return env | {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


# ---- measuring a process tree ---------------------------------------------------------------------
def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:", "PPid:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return out


def _cmd(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    for role, pat in (("prefect server", "uvicorn"), ("ingest worker", "multiprocessing"), ("cli", "--child")):
        if pat in raw:
            return role
    return raw[:60]


class TreeSampler(threading.Thread):
    """Samples the summed RSS of a process and its descendants; keeps each process's VmHWM."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.interval, self.stop = pid, interval, threading.Event()
        self.peak_kb, self.hwm, self.roles, self.samples, self.peak_at = 0, {}, {}, 0, 0.0

    def descendants(self) -> list[int]:
        parent = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                st = _status(int(d))
                if "PPid" in st:
                    parent[int(d)] = st["PPid"]
        tree, frontier = [self.pid], [self.pid]
        while frontier:
            frontier = [p for p, pp in parent.items() if pp in frontier]
            tree += frontier
        return tree

    def run(self) -> None:
        while not self.stop.is_set():
            total = 0
            for pid in self.descendants():
                st = _status(pid)
                total += st.get("VmRSS", 0)
                if "VmHWM" in st:
                    self.hwm[pid] = max(self.hwm.get(pid, 0), st["VmHWM"])
                    self.roles.setdefault(pid, _cmd(pid))
            if total > self.peak_kb:
                self.peak_kb, self.peak_at = total, time.time()
            self.samples += 1
            self.stop.wait(self.interval)

    def per_role(self) -> dict[str, float]:
        """Largest VmHWM per role, MiB (several ingest workers: the largest one)."""
        out: dict[str, float] = {}
        for pid, kb in self.hwm.items():
            role = self.roles.get(pid, "?")
            out[role] = max(out.get(role, 0.0), kb / 1024)
        return out


def cli_child(neg_sample: int, argv: list[str]) -> int:
    """`webinstruct ARGV` (the real command line), with recall training on `neg_sample` negatives
    (`run` has no option for it)."""
    from webinstruct.cli import app
    from webinstruct.commands import pipeline

    real = pipeline._run_pipeline

    def run_pipeline(*args, recall=None, **kwargs):
        return real(*args, recall={**(recall or {}), "neg_sample": neg_sample}, **kwargs)

    pipeline._run_pipeline = run_pipeline
    sys.argv = ["webinstruct", *argv]
    return app()


def run_cli(data_dir: Path, paths: list[str], server, prefect_home: Path | None, log: Path,
            neg_sample: int = NEG_SAMPLE) -> dict:
    """`webinstruct run` (as `cli_child`) in a fresh process; wall and memory of its process tree."""
    env = clean_env()
    if prefect_home is not None:
        home = data_dir.parent / f"{data_dir.name}-prefect"
        shutil.copytree(prefect_home, home)
        env["PREFECT_HOME"] = str(home)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(neg_sample), "--data-dir", str(data_dir),
           "run", *paths, "--base-url", server.base_url, "--model", server.model]
    with open(log, "w") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop.set()
        sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"webinstruct run failed ({proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    return {"wall_s": wall, "tree_peak_mib": sampler.peak_kb / 1024, "largest_mib": usage.ru_maxrss / 1024,
            "per_role_mib": sampler.per_role(), "samples": sampler.samples, "processes": len(sampler.hwm),
            "peak_in": stage_at(data_dir, sampler.peak_at)}


def stage_at(data_dir: Path, when: float) -> str:
    """The stage that was running at time `when` (from stage_runs), or where in the run it was."""
    from datetime import timezone

    from warehouse import Warehouse

    runs = Warehouse(data_dir).manifest("stage_runs")
    for r in runs.iter_rows(named=True):
        a, b = (r[k].replace(tzinfo=r[k].tzinfo or timezone.utc).timestamp() for k in ("started_at", "finished_at"))
        if a <= when <= b:
            return r["stage"]
    first = min((r.timestamp() for r in runs["started_at"]), default=when)
    return "before the first stage" if when < first else "between or after the stages"


def counts(data_dir: Path) -> dict:
    from warehouse import Warehouse
    from warehouse.catalog import query

    wh = Warehouse(data_dir)
    row = query(wh, "select (select count(*) from documents) as docs, (select count(*) from qa_extracted "
                    "where status = 'ok') as pairs, (select count(*) from dataset) as dataset, "
                    "(select count(*) from qa_refined) as refined").row(0, named=True)
    return row


# ---- the bench --------------------------------------------------------------------------------------
def measure(size: str, copies: int, tmp: Path, server, template: Path) -> dict:
    inp = build_input(tmp / "crawl" / size, copies)
    data_dir = tmp / f"wh-{size}"
    res = run_cli(data_dir, inp["paths"], server, template, tmp / f"run-{size}.log")
    res |= counts(data_dir) | {"size": size, "segments": copies, "input_mib": inp["bytes"] / MIB}
    print(f"  {size:>4}: {res['segments']} segment(s), {res['input_mib']:.1f} MiB, {res['docs']} docs, "
          f"{res['pairs']} pairs, {res['dataset']} dataset rows; tree peak {res['tree_peak_mib']:.0f} MiB, "
          f"largest process {res['largest_mib']:.0f} MiB (tree peak during {res['peak_in']}), "
          f"wall {res['wall_s']:.0f} s", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=int, default=1, help="segments in the 1x input (each ~290 pages, 7 MiB)")
    ap.add_argument("--scale", type=int, default=10, help="the big input is this many times the 1x")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (inputs are reused)")
    if sys.argv[1:2] == ["--child"]:
        return cli_child(int(sys.argv[2]), sys.argv[3:])
    args = ap.parse_args()
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="bench-memory-"))
    for old in tmp.glob("wh-*"):
        shutil.rmtree(old)
    server = scripted_server()
    try:
        template = prefect_template(tmp)
        small = measure("1x", args.base, tmp, server, template)
        big = measure(f"{args.scale}x", args.base * args.scale, tmp, server, template)
    finally:
        server.stop()
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    big_name = f"{args.scale}x input"

    def row(measure, key, unit, target=None):
        ratio = big[key] / small[key] if small[key] else float("nan")
        return {"measure": measure, "ours": round(big[key], 1), "peer": "1x input", "peer_value": round(small[key], 1),
                "ratio": round(ratio, 3), "unit": unit, "target": target}

    rows = [row(f"peak RSS, process tree, {big_name}", "tree_peak_mib", "MiB", "<= 1.5"),
            row(f"peak RSS, largest process, {big_name}", "largest_mib", "MiB", "<= 1.5")]
    for role in sorted(set(small["per_role_mib"]) & set(big["per_role_mib"])):
        small[f"r:{role}"], big[f"r:{role}"] = small["per_role_mib"][role], big["per_role_mib"][role]
        rows.append(row(f"peak RSS (VmHWM), {role}, {big_name}", f"r:{role}", "MiB"))
    rows += [row(f"documents, {big_name}", "docs", "docs"), row(f"extracted pairs, {big_name}", "pairs", "pairs"),
             row(f"dataset rows, {big_name}", "dataset", "rows"), row(f"wall, {big_name}", "wall_s", "s")]
    only_big = sorted(set(big["per_role_mib"]) - set(small["per_role_mib"]))
    notes = [
        f"1x = {args.base} segment(s) of {small['docs'] // max(args.base, 1)} real pages each (the bundled sample's "
        f"HTML responses, replicated with new record ids, URLs and every 4th word changed); {big_name} = "
        f"{args.base * args.scale} segments. Scripted LLM server (tests/faults/scripted_model.py).",
        f"Recall trains on {NEG_SAMPLE} negatives and as many positives at both sizes (RecallSettings.neg_sample).",
        "Tree peak: the summed RSS of `webinstruct run` and all its descendants (Prefect's ephemeral API "
        "server, ingest worker processes) sampled every 0.1 s from /proc; shared pages count once per process. "
        "Per-process peaks are the kernel's VmHWM; largest = wait4() ru_maxrss of the CLI process.",
    ]
    notes.append(f"tree peak reached during: {small['peak_in']} (1x), {big['peak_in']} ({big_name})")
    if only_big:
        mib = ", ".join("%.0f MiB" % big["per_role_mib"][r] for r in only_big)
        notes.append(f"processes only in the {big_name} run: {', '.join(only_big)} ({mib})")
    title = f"Flat memory: peak RSS of a whole run on 1x and {args.scale}x the input"
    report(args.results, "memory", title, rows, notes)


if __name__ == "__main__":
    main()
