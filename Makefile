# AgentFlow developer and CI entry points. Needs only Python 3.11 and Node.js: every tool
# (ruff, mypy, pytest, buf, protoc plugins) is installed into .venv/ and node_modules/.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
GENERATED := libs/agentflow docs/openapi.yaml
# mypy names modules from the mypy_path bases in pyproject.toml (explicit_package_bases), so
# services/tool-sandbox/agentflow_tool_sandbox/x.py is `agentflow_tool_sandbox.x`. Generated stubs excluded.
MYPY_TARGETS := $(wildcard libs/agentflow_*) $(wildcard services/*/agentflow_*) tools tests $(wildcard loadtests/*.py)
VENDORED_API := annotations http field_behavior resource client launch_stage
VENDORED_RPC := status error_details code

.PHONY: help venv install bubblewrap protos check-generated lint typecheck test run bench certs ci vendor-protos

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

venv: install ## Same as install

install: $(PY_STAMP) $(NODE_STAMP) bubblewrap ## Create .venv and node_modules (only when their inputs changed)

# The tool sandbox's default backend. Installed with apt-get when missing and running as root; else a clear stop.
bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y bubblewrap || \
	      { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y bubblewrap; }; \
	  else \
	    echo "error: bubblewrap (bwrap) is needed by the tool sandbox: install it (apt-get install bubblewrap," \
	      "dnf install bubblewrap, ...) or run UNSAFE without isolation with AF_SANDBOX_BACKEND=process" >&2; exit 1; \
	  fi; }

$(PY):
	@test -n "$(PYTHON)" || { echo "error: python3.11 or python3 is needed on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(PY_STAMP): requirements.txt requirements-dev.txt pyproject.toml | $(PY)
	$(PY) -m pip install --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --disable-pip-version-check --no-deps -e .
	touch $@

# `npm install --no-save`, not `npm ci`: the lock pins buf and its linux-x64 binary (with integrity), but the
# registry here carries no other platform packages, so the lock cannot list them and `npm ci` refuses it.
$(NODE_STAMP): package.json $(wildcard package-lock.json)
	npm install --no-save --no-audit --no-fund
	touch $@

protos: install ## Regenerate libs/agentflow stubs and docs/openapi.yaml from protos/
	find libs/agentflow -name '*_pb2*.py*' -delete
	$(BUF) generate
	find libs/agentflow -type d -empty -delete

check-generated: protos ## Fail if the committed generated code differs from a fresh generation
	@drift="$$(git status --porcelain --untracked-files=all -- $(GENERATED))"; \
	if [ -n "$$drift" ]; then \
	  echo "$$drift"; git --no-pager diff --stat -- $(GENERATED); \
	  echo "error: generated code is out of date: run 'make protos' and commit the result" >&2; exit 1; \
	fi; echo "generated code is up to date"

lint: install ## ruff (check + format), buf lint, buf breaking against main
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(BUF) lint
	@ref="$$(for r in main origin/main; do git rev-parse -q --verify "$$r^{commit}" >/dev/null 2>&1 && echo "$$r" && break; done || true)"; \
	if [ -z "$$ref" ]; then echo "buf breaking: skipped (no main branch)"; \
	elif ! git cat-file -e "$$ref:protos" 2>/dev/null; then echo "buf breaking: skipped ($$ref has no protos/ yet)"; \
	else echo "$(BUF) breaking --against .git#ref=$$ref"; $(BUF) breaking --against ".git#ref=$$ref"; fi

typecheck: install ## mypy --strict (config in pyproject.toml)
	$(VENV)/bin/mypy $(MYPY_TARGETS)

test: install ## pytest
	$(PY) -m pytest -q

run: install ## Start the mesh, run the demo workflow through the REST edge, stop
	$(VENV)/bin/af demo

bench: install ## Load test the gRPC and REST paths
	$(PY) loadtests/bench.py
	$(PY) loadtests/runs_bench.py
	$(PY) loadtests/sandbox_bench.py

certs: install ## Generate the dev CA and per-service certificates
	$(VENV)/bin/af certs init

ci: install check-generated lint typecheck test ## What CI runs

vendor-protos: install ## Recopy google/api and google/rpc protos from googleapis-common-protos
	site="$$($(PY) -c 'import google.api.annotations_pb2 as m, pathlib; print(pathlib.Path(m.__file__).parents[1])')"; \
	for f in $(addprefix api/,$(VENDORED_API)) $(addprefix rpc/,$(VENDORED_RPC)); do \
	  cp "$$site/$$f.proto" "third_party/googleapis/google/$$f.proto"; \
	done
