# Everything installs into .venv through uv (bootstrapped with pip into .tools, so a machine
# needs only python3, pip, git and make).
PYTHON ?= python3
UV_VERSION ?= 0.13.9
UV := .tools/bin/uv
BIN := .venv/bin
export UV_COMPILE_BYTECODE := 1

.PHONY: install demo test lint clean bqemulator browser redis compiler

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

# The BigQuery adapter is included so the prod target parses and its tests run everywhere.
.venv/.installed: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON) --extra bigquery
	touch $@

install: .venv/.installed

# The main job on DuckDB: demo data -> dbt build -> train -> score -> query the targets.
demo: install
	$(BIN)/ml demo-data
	$(BIN)/dbt build --target dev
	$(BIN)/ml train --recipe recipes/xgboost_x_learner.yaml --alias champion
	$(BIN)/ml score --model xgboost_x_learner@champion
	$(BIN)/dbt build --target dev --select source:predictions+
	$(BIN)/dbt show --target dev --select campaign_targets --limit 10

# A local BigQuery API for the prod-cycle tests (tests/integration/test_bigquery.py), in its own
# virtualenv: its duckdb is pinned to the version of the extension wheels, so DuckDB never tries
# to download spatial/avro (they are installed into the venv's own HOME).
BQEMULATOR_VENV ?= .venv-bqemulator
BQEMULATOR_VERSION ?= 1.4.0
BQEMULATOR_DUCKDB ?= 1.5.5

$(BQEMULATOR_VENV)/.installed: $(UV) tests/integration/bq_emulator.py
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(BQEMULATOR_VENV)
	$(UV) pip install --quiet --python $(BQEMULATOR_VENV)/bin/python \
		"bqemulator==$(BQEMULATOR_VERSION)" numpy "duckdb==$(BQEMULATOR_DUCKDB)" \
		"duckdb-extension-spatial==$(BQEMULATOR_DUCKDB)" "duckdb-extension-avro==$(BQEMULATOR_DUCKDB)"
	HOME="$(abspath $(BQEMULATOR_VENV))/home" $(BQEMULATOR_VENV)/bin/python tests/integration/bq_emulator.py --install-extensions
	touch $@

bqemulator: $(BQEMULATOR_VENV)/.installed

# Debian's chromium (and a font) for the report test (tests/integration/test_report_browser.py),
# which renders the HTML run report in a real headless browser. Installed with apt-get only when
# missing; as root, or through sudo otherwise.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser tests (apt-get)"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium fonts-dejavu-core; \
	}

# Debian's redis-server for the Redis online-store tests (tests/integration/test_online_store.py
# and test_serve_by_id.py), which start their own server on a free loopback port. Installed with
# apt-get only when missing; as root, or through sudo otherwise.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing Debian's redis-server for the online-store tests (apt-get)"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			redis-server; \
	}

# A C compiler for the AVX-512 forest walk (ml/forestkernel.c), which ml builds once per machine
# and tests/unit/test_forestkernel.py checks against XGBoost. Installed only when missing.
compiler:
	@command -v cc >/dev/null 2>&1 || { \
		echo "installing Debian's gcc for the forest-walk tests (apt-get)"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			gcc libc6-dev; \
	}

test: install bqemulator browser redis compiler
	$(BIN)/pytest -q

# ruff (with the blind-except and security rules), import-linter (layers, no cycles among
# siblings), mypy (strict on the warehouse, registry, config and recipes)
lint: install
	$(BIN)/ruff check ml tests bench
	$(BIN)/ruff format --check ml tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy

clean:
	rm -rf data mlruns target logs .venv .tools $(BQEMULATOR_VENV)
