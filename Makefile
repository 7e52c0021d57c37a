# Two commands on a fresh machine: `make demo` and `make test`. Everything else is set up by them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: setup archive demo test test-fast lint services services-stop clean bench

setup: $(STAMP) .cache/jars/MANIFEST

# The project and its dev tools, installed by uv (from PyPI; seconds where pip takes minutes).
# pyspark is a source distribution only: its wheel is built once per machine into WHEELS (uv
# would build it again for every new virtualenv, 20-30 s; devtools/wheels.py).
UV_VERSION := 0.13.9
WHEELS ?= $(HOME)/.cache/lambda-sales/wheels
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@$(BIN)/python -m devtools.wheels ensure "$(WHEELS)"
	@# PYTHONWARNINGS: setuptools warns about every editable install of a package in its own folder
	PYTHONWARNINGS=ignore $(BIN)/uv pip install --quiet --python $(BIN)/python --find-links "$(WHEELS)" -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

# The pinned JVM packages (sales_core/packages.py; their jars and SHA-1s in sales_core/jars.lock.json),
# downloaded from Maven Central once and cached;
# with the S3 set (S3A, the AWS SDK) and the LogStores compiled from jvm/ (S3's conditional PUT,
# the local log's listing).
.cache/jars/MANIFEST: $(STAMP) sales_core/packages.py sales_core/jars.lock.json $(wildcard jvm/lambdasales/delta/*.java)
	$(BIN)/python -m sales_core.packages fetch
	@touch $@

# The local Spark driver's class-data-sharing archive (sales_core/jvm_archive.py): every later
# local Spark start loads its ~20,000 classes from it, seconds sooner. Built once a machine
# for a jar set (~/.cache/lambda-sales/jvm: every clone's jars are hard links of the same files).
archive: setup
	@$(BIN)/python -m devtools.jvm_archive build

demo: setup archive
	$(BIN)/lambda-sales demo

# The local Kafka broker and PostgreSQL server (devtools/), on their default ports.
services: setup
	$(BIN)/python -m devtools kafka start
	$(BIN)/python -m devtools postgres start

services-stop:
	-$(BIN)/python -m devtools kafka stop
	-$(BIN)/python -m devtools postgres stop

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

# scripts/run-tests.sh runs `make setup` itself, beside the set-up steps that do not need it.
test:
	bash scripts/run-tests.sh $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/batch.py

clean:
	rm -rf lakehouse landing .cache/run spark-warehouse metastore_db
