"""LLM servers the stages talk to: the embedded llama.cpp server, a launched vLLM, or any URL.

- `EmbeddedServer`: xllamacpp serving one of the models shipped on PyPI
  (webinstruct/embedded_models.py; default Qwen2.5-Coder-1.5B-Instruct, SmolLM2-135M for fast
  tests) on 127.0.0.1, in background threads of this process. No GPU, a second or two to start.
- `VLLMServer`: `python -m vllm.entrypoints.openai.api_server` as a child process (prefix
  caching on), for GPU hosts; `python` may be another venv's interpreter (WEBINSTRUCT_VLLM_PYTHON).
- `ensure_server(settings)`: what a stage command wraps itself in: starts the embedded server
  when the settings name the default local URL and nothing answers there; otherwise checks
  that the named servers answer and fails fast with what to start.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from tasks import llm_client
from tasks.llm_client import DEFAULT_MODEL, LLMSettings, ServerUnavailable, check_servers, \
    unavailable_message
from webinstruct.embedded_models import MODELS, embedded_model

DEFAULT_PORT = 8088


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_healthy(url: str, timeout_s: float, alive=lambda: True) -> None:
    """Poll GET url until 200; `alive()` false (the child died) stops early."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if not alive():
            raise ServerUnavailable(f"the server process exited before {url} answered")
        try:
            r = httpx.get(url, timeout=2.0)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    raise ServerUnavailable(f"{url} did not become healthy within {timeout_s:.0f}s ({last})")


class EmbeddedServer:
    """llama.cpp (xllamacpp) serving an embedded model on loopback; a context manager."""

    def __init__(self, port: int | None = None, *, host: str = "127.0.0.1", n_parallel: int = 4,
                 n_ctx_per_slot: int = 8192, threads: int | None = None, model_path: str | Path | None = None,
                 model_name: str = DEFAULT_MODEL, aliases: tuple[str, ...] = (), verbose: bool = False):
        self.host, self.port = host, port or free_port(host)
        # Every core: while an LLM stage runs the pipeline's own process only waits on HTTP, and
        # on an idle 2-core box 2 threads measured 2x faster than 1 (bench/llm_models.py). A box
        # that is busy with other work wants fewer: llama.cpp's threads spin on a barrier, and 2
        # threads next to another busy process measured 15-30x slower than 1 (the tests use 1).
        threads = threads or max(1, os.cpu_count() or 1)
        self.n_parallel, self.n_ctx_per_slot, self.threads = n_parallel, n_ctx_per_slot, threads
        self.model_path = Path(model_path) if model_path else None
        self.model_name, self.verbose = model_name, verbose
        self.aliases = tuple(aliases)  # more names for the same weights (e.g. a second refiner in tests)
        self._server = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def settings(self) -> LLMSettings:
        return LLMSettings(base_urls=[self.base_url], model=self.model_name, max_concurrency=self.n_parallel)

    def start(self) -> "EmbeddedServer":
        import xllamacpp

        if port_in_use(self.host, self.port):
            raise ServerUnavailable(f"port {self.port} on {self.host} is already taken")
        p = xllamacpp.CommonParams()
        p.model.path = str(self.model_path or embedded_model(self.model_name).gguf())
        p.model_alias = {self.model_name, *self.aliases}  # a set: a plain string becomes one alias per letter
        p.hostnames = [self.host]
        p.port = self.port
        p.n_parallel = self.n_parallel
        p.n_ctx = self.n_ctx_per_slot * self.n_parallel  # total KV cache, split across the slots
        p.cpuparams.n_threads = self.threads
        p.cpuparams_batch.n_threads = self.threads
        p.ui = False
        if not self.verbose:
            p.verbosity = -1
        self._server = xllamacpp.Server(p)
        try:
            wait_healthy(f"http://{self.host}:{self.port}/health", 60)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        # xllamacpp stops its threads and closes the socket when the Server object is freed
        server, self._server = self._server, None
        del server

    def __enter__(self) -> "EmbeddedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def vllm_python() -> str | None:
    """An interpreter with vLLM: $WEBINSTRUCT_VLLM_PYTHON, this one, or ./.venv-vllm."""
    repo_venv = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"  # `make test-vllm`
    candidates = [os.environ.get("WEBINSTRUCT_VLLM_PYTHON"), sys.executable, str(repo_venv)]
    for py in filter(None, candidates):
        if py == sys.executable:
            if importlib.util.find_spec("vllm") is not None:
                return py
        elif Path(py).exists() or shutil.which(py):
            return py
    return None


def _stderr():
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stderr without a descriptor
        return None


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` in a child process, prefix caching on."""

    def __init__(self, model: str, *, port: int | None = None, host: str = "127.0.0.1",
                 served_model_name: str | None = None, tensor_parallel_size: int = 1,
                 max_model_len: int | None = None, extra_args: list[str] = (), python: str | None = None,
                 startup_timeout_s: float = 900, log_path: str | Path | None = None,
                 env: dict[str, str] | None = None):
        self.model, self.host, self.port = model, host, port or free_port(host)
        self.served = served_model_name or model
        self.tp, self.max_model_len, self.extra_args = tensor_parallel_size, max_model_len, list(extra_args)
        self.python = python or vllm_python()
        self.startup_timeout_s, self.log_path = startup_timeout_s, log_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def settings(self) -> LLMSettings:
        return LLMSettings(base_urls=[self.base_url], model=self.served, max_concurrency=16)

    def command(self) -> list[str]:
        cmd = [self.python or "python", "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
               "--served-model-name", self.served, "--host", self.host, "--port", str(self.port),
               "--tensor-parallel-size", str(self.tp), "--enable-prefix-caching"]
        if self.max_model_len:
            cmd += ["--max-model-len", str(self.max_model_len)]
        return cmd + self.extra_args

    def start(self) -> "VLLMServer":
        if self.python is None:
            raise ServerUnavailable(
                "vLLM is not installed: `pip install 'webinstruct[vllm]'` on a GPU host (or `make test-vllm` "
                "for a CPU build in .venv-vllm), or set WEBINSTRUCT_VLLM_PYTHON to a Python that has it")
        # vLLM logs to stdout; send them to the log file or our stderr so stdout carries only the URL
        out = open(self.log_path, "ab") if self.log_path else _stderr()
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=self.env)
        try:
            wait_healthy(f"http://{self.host}:{self.port}/health", self.startup_timeout_s,
                         alive=lambda: self.proc.poll() is None)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: engine workers go with it
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


_CONVERT = """
import sys
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
gguf, out = Path(sys.argv[1]), sys.argv[2]
AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
# dequantize: a model left in GGUF blocks cannot be saved, and vLLM wants plain weights
model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                             quantization_config=GgufConfig(dequantize=True))
model.save_pretrained(out)
"""


def gguf_to_hf(gguf: str | Path, out_dir: str | Path, python: str | None = None) -> Path:
    """Dequantize a GGUF into a Hugging Face model folder (what vLLM loads), with `python`'s transformers."""
    out = Path(out_dir)
    if not (out / "config.json").exists():
        subprocess.run([python or sys.executable, "-c", _CONVERT, str(gguf), str(out)], check=True)
    return out


def settings_from_cli(base_url: list[str] | None = None, model: str | None = None,
                      concurrency: int | None = None, **overrides) -> LLMSettings:
    """LLMSettings from a stage command's --base-url (repeatable) / --model / --concurrency."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if base_url:
        values["base_urls"] = [u.rstrip("/") for u in base_url]
    if model:
        values["model"] = model
    if concurrency:
        values["max_concurrency"] = concurrency
    return LLMSettings(**values)


def _is_default_local(settings: LLMSettings) -> bool:
    """The default local URL and a model the embedded server can serve: start it when down."""
    return [u.rstrip("/") for u in settings.base_urls] == [llm_client.DEFAULT_BASE_URL] and settings.model in MODELS


@contextmanager
def ensure_server(settings: LLMSettings, *, start_embedded: bool = True) -> Iterator[LLMSettings]:
    """Yield settings for a server that answers; start the embedded one if it is the default and down."""
    try:
        check_servers(settings)
        running = True
    except ServerUnavailable:
        if not (start_embedded and _is_default_local(settings)):
            raise
        running = False
    if running:
        yield settings
        return
    url = urllib.parse.urlsplit(llm_client.DEFAULT_BASE_URL)
    host, port = url.hostname or "127.0.0.1", url.port or DEFAULT_PORT
    if port_in_use(host, port):
        raise ServerUnavailable(unavailable_message([f"something on {host}:{port} is not an LLM server"]))
    # slots beyond ~8 only add KV cache (about 180 MB each at 8192 tokens) on a small CPU box
    with EmbeddedServer(port, host=host, n_parallel=min(settings.max_concurrency, 8), model_name=settings.model):
        check_servers(settings)
        # On CPU a queued request can wait minutes; a short timeout would only resend it while
        # the server still works on the first copy.
        yield settings.model_copy(update={"timeout_s": max(settings.timeout_s, 900.0)})
