# aigw — one entry point for people and CI. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
UV := .tools/bin/uv
UV_VERSION := 0.13.8
export PYTHONPATH := $(CURDIR):$(CURDIR)/gen
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
PYTEST_ARGS ?=
PY_DIRS := aigw_server client/aigw_client harness tools tests bench envoy

.PHONY: help setup system-deps ferretdb proto proto-check check lint typecheck buflint envoy-check test test-fast run bench chaos clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(UV):
	python3 -m venv .tools
	.tools/bin/pip install -q uv==$(UV_VERSION)

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras
	touch $@

# vLLM's CPU build in its own virtualenv (its torch differs from .venv's); tools/vllm/pyproject.toml
# says why it is pinned the way it is. uv's cache makes a second sync quick; the stamp skips it.
.venv-vllm/.synced: tools/vllm/pyproject.toml tools/vllm/uv.lock | $(UV)
	UV_PROJECT_ENVIRONMENT=$(CURDIR)/.venv-vllm $(UV) sync --frozen --project tools/vllm
	touch $@

setup: .venv/.synced .venv-vllm/.synced system-deps ferretdb ## install everything (virtualenvs incl. vLLM's CPU build, FerretDB build, Debian packages as root)

system-deps: ## install Tesseract and language packs (needs root)
	tools/system_deps.sh

ferretdb: ## build the embedded FerretDB from the Go module proxy
	tools/ferretdb/build.sh

proto: .venv/.synced ## generate Python stubs and the descriptor set from protos/
	tools/gen_protos.sh

proto-check: proto ## fail when the committed generated code is stale
	git diff --exit-code -- gen/ || (echo "generated code is stale: run make proto and commit" >&2; exit 1)

lint: .venv/.synced ## ruff
	.venv/bin/ruff check $(PY_DIRS)
	.venv/bin/ruff format --check $(PY_DIRS)

typecheck: .venv/.synced ## mypy --strict on hand-written code
	.venv/bin/mypy aigw_server client/aigw_client harness tools tests bench envoy

buflint: .venv/.synced ## buf lint, and buf breaking against main (or the previous commit when on main)
	tools/gen_protos.sh >/dev/null 2>&1
	.venv/bin/buf lint
	tools/buf_breaking.sh

envoy-check: .venv/.synced ## envoy/envoy.yaml is what envoy/generate.py makes and parses strictly into Envoy's Bootstrap
	$(PY) envoy/generate.py --check

check: lint typecheck buflint proto-check envoy-check ## everything CI checks besides the tests

test: setup ## run the test suite (unit, integration, end-to-end)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: .venv/.synced ## unit tests only
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

run: setup ## start the whole mesh in the foreground (Ctrl-C stops it)
	$(PY) -m harness.launcher

bench: setup ## performance benchmark (writes docs/bench/latest.json)
	$(PY) -m bench.run

CHAOS_SECONDS ?= 45
chaos: setup ## fault-injection run under load (short form; CHAOS_SECONDS=1800 for a soak)
	$(PY) -m bench.chaos --seconds $(CHAOS_SECONDS) --out build/chaos.json

clean: ## remove build outputs (keeps data/)
	rm -rf build .mypy_cache .ruff_cache .pytest_cache tools/ferretdb/bin
