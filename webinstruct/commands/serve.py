"""`webinstruct serve`: run an LLM server for the LLM stages (embedded llama.cpp, or vLLM)."""
from __future__ import annotations

import signal
import threading
from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console(stderr=True, soft_wrap=True)  # ids and paths are never cut into lines


def register(app: typer.Typer) -> None:
    app.command()(serve)


def serve(
    engine: Annotated[str, typer.Option(help="embedded (llama.cpp on CPU, a model shipped on PyPI) | vllm")] = "embedded",
    model: Annotated[Optional[str], typer.Option(help="vllm: model path or hub id; embedded: a GGUF file [default: the embedded model named by --served-model-name]")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (stages default to http://127.0.0.1:8088/v1)")] = 8088,
    served_model_name: Annotated[Optional[str], typer.Option(help="Model name clients ask for")] = None,
    parallel: Annotated[int, typer.Option(help="embedded: request slots (continuous batching)")] = 4,
    ctx: Annotated[int, typer.Option(help="embedded: context tokens per slot")] = 8192,
    threads: Annotated[Optional[int], typer.Option(help="embedded: CPU threads [default: cores - 1]")] = None,
    tensor_parallel_size: Annotated[int, typer.Option(help="vllm: GPUs per replica")] = 1,
    max_model_len: Annotated[Optional[int], typer.Option(help="vllm: max context length")] = None,
    vllm_arg: Annotated[Optional[list[str]], typer.Option(help="vllm: extra argument, repeatable")] = None,
) -> None:
    """Serve an OpenAI-compatible LLM until Ctrl-C; stages use it (or any server, via --base-url)."""
    from tasks.llm_client import DEFAULT_MODEL
    from webinstruct import llm_server
    from webinstruct.options import UserError

    stop = threading.Event()
    try:
        if engine == "embedded":
            server = llm_server.EmbeddedServer(port, host=host, n_parallel=parallel, n_ctx_per_slot=ctx,
                                               threads=threads, model_path=model,
                                               model_name=served_model_name or DEFAULT_MODEL)
        elif engine == "vllm":
            if not model:
                raise UserError("--model is required with --engine vllm", "name a model path or hub id: --model ID")
            server = llm_server.VLLMServer(model, port=port, host=host, served_model_name=served_model_name,
                                           tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len,
                                           extra_args=vllm_arg or [])
        else:
            raise UserError(f"unknown engine {engine!r}", "use --engine embedded or vllm")
        if engine == "vllm":
            console.print(f"starting vLLM: {' '.join(server.command())}")
        server.start()
    except KeyboardInterrupt:  # Ctrl-C while a (vLLM) server starts: start() already stopped it
        console.print("stopped")
        raise typer.Exit(130)

    for sig in (signal.SIGINT, signal.SIGTERM):  # installed before the URL is printed: no race
        signal.signal(sig, lambda *_: stop.set())

    try:
        print(server.base_url, flush=True)  # stdout: scripts can read the URL
        console.print(f"serving [bold]{server.settings.model}[/] ({engine}) at {server.base_url} - Ctrl-C stops it; "
                      f"stages: --base-url {server.base_url} --model {server.settings.model}")
        while not stop.wait(1.0):
            if engine == "vllm" and (server.proc is None or server.proc.poll() is not None):
                console.print("[red]vLLM exited[/]")
                raise typer.Exit(1)
    finally:
        server.stop()
    console.print("stopped")
