# Two commands set everything up: `make run` and `make test`.
# The mock hospital needs spyne, which imports on Python 3.11 only, so 3.11 is preferred:
# of the python3.11 on the PATH, the first optimized build (see FAST_BUILD), else the
# first one, else python3. `make PYTHON=/path/to/python3.11` chooses another.
PYTHON ?= $(shell \
  first=; IFS=:; for dir in $$PATH; do \
    candidate="$${dir:-.}/python3.11"; [ -x "$$candidate" ] || continue; \
    [ -n "$$first" ] || first="$$candidate"; \
    if "$$candidate" -c '$(FAST_BUILD)' 2>/dev/null; then echo "$$candidate"; exit 0; fi; \
  done; \
  if [ -n "$$first" ]; then echo "$$first"; else command -v python3; fi)
# An optimized build of CPython: configured with --enable-optimizations (profile-guided,
# as python.org's installers, Homebrew and conda-forge build it), or an interpreter linked
# statically (Debian and Ubuntu build theirs so, profile-guided too). A build with
# neither, such as pyenv's by default (libpython shared, no profile), runs the gateway's
# requests on ~9-13% more instructions (bench/README.md, seventeenth round).
FAST_BUILD = import sys, sysconfig; \
  optimized = "--enable-optimizations" in (sysconfig.get_config_var("CONFIG_ARGS") or ""); \
  static = "libpython" not in open("/proc/self/maps").read(); \
  sys.exit(0 if optimized or static else 1)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint lint-deploy bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[mock,test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/bridge demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy bridge
	$(MAKE) --no-print-directory lint-deploy

# docker/: hadolint, yamllint, the compose spec (schema bundled in check-jsonschema) and
# the Kubernetes schemas bundled in kubernetes-validate: 1.30, the oldest that runs the
# Deployment as written (preStop sleep), and the newest.
K8S_MANIFESTS := $(filter-out docker/k8s/kustomization.yaml,$(wildcard docker/k8s/*.yaml))
lint-deploy: $(STAMP)
	$(BIN)/hadolint --no-color --config docker/.hadolint.yaml docker/Dockerfile docker/Dockerfile.mock
	$(BIN)/yamllint --strict --config-file docker/.yamllint.yaml docker
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker/compose.yaml
	$(BIN)/kubernetes-validate --strict --quiet --kubernetes-version 1.30.0 $(K8S_MANIFESTS)
	$(BIN)/kubernetes-validate --strict --quiet $(K8S_MANIFESTS)

test: lint
	$(BIN)/bridge check
	$(BIN)/bridge test
	$(BIN)/pytest

# The benchmark (bench/README.md): ~9 minutes, or ~2.5 with QUICK=1. It installs what it
# needs: wrk from apt when missing (else bench/loader.py, in Python, stands in) and the
# py-spy profiler into the venv (pinned here, not in pyproject.toml).
bench: $(STAMP)
	@if ! command -v wrk >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  echo "bench: wrk is missing; installing it with apt-get"; \
	  $$SUDO apt-get install -y wrk >/dev/null 2>&1 || \
	    { $$SUDO apt-get update >/dev/null 2>&1 && $$SUDO apt-get install -y wrk >/dev/null 2>&1; } || true; \
	fi
	@if command -v wrk >/dev/null 2>&1; then echo "bench: load generator: wrk ($$(command -v wrk))"; \
	  else echo "bench: wrk is not available: the load generator is bench/loader.py (Python)"; fi
	@[ -x $(BIN)/py-spy ] || $(BIN)/pip install --quiet py-spy==0.4.3 \
	  || echo "bench: py-spy could not be installed: no profile this run"
	@[ -x $(BIN)/pyinstrument ] || $(BIN)/pip install --quiet pyinstrument==5.1.3 \
	  || echo "bench: pyinstrument could not be installed: no call trees (bench/inproc.py)"
	$(BIN)/python bench/run.py $(if $(QUICK),--quick) $(BENCH_ARGS)

# The soak test (tests/reliability/soak.py): DURATION seconds of mixed load (default 240)
# while the mock hospital injects faults and the gateway is SIGKILLed and restarted once,
# then a reconciliation with the legacy systems; the figures also go to bench/results/.
# REPLICAS=2 (or more) runs that many gateways on one PostgreSQL store: a fresh database on
# the server at BRIDGE_TEST_POSTGRES_URL (else 127.0.0.1:5432 as postgres), dropped after.
DURATION ?= 240
REPLICAS ?= 1
POSTGRES_SERVER = $${BRIDGE_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
soak: $(STAMP)
ifeq ($(REPLICAS),1)
	$(BIN)/python -m tests.reliability.soak --duration $(DURATION) --json bench/results/soak-latest.json
else
	$(BIN)/python -m tests.reliability.soak --duration $(DURATION) --replicas $(REPLICAS) \
	  --postgres "$(POSTGRES_SERVER)" --fresh-database \
	  --json bench/results/soak-replicas-latest.json
endif

clean:
	rm -rf $(VENV) build *.egg-info
