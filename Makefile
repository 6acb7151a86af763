# Everything installs into .venv through uv (bootstrapped with pip into .tools, so a machine
# needs only python3, pip, git and make).
PYTHON ?= python3
UV_VERSION ?= 0.13.9
UV := .tools/bin/uv
BIN := .venv/bin
export UV_COMPILE_BYTECODE := 1

.PHONY: install demo test lint clean

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

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check ml tests bench
	$(BIN)/ruff format --check ml tests bench
	$(BIN)/lint-imports

clean:
	rm -rf data mlruns target logs .venv .tools
