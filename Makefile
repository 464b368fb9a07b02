# Two commands set everything up: `make run` and `make test`.
# The mock hospital needs spyne, which imports on Python 3.11 only, so 3.11 is preferred.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint bench clean

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

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) build *.egg-info
