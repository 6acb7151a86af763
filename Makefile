# Everything installs into .venv through uv (bootstrapped with pip into .tools, so a machine
# needs only python3, pip, git and make).
PYTHON ?= python3
UV_VERSION ?= 0.13.9
UV := .tools/bin/uv
BIN := .venv/bin
export UV_COMPILE_BYTECODE := 1

.PHONY: install install-bigquery demo test lint dbt-build clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

.venv/.installed: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

install: .venv/.installed

install-bigquery: $(UV)
	$(UV) sync --frozen --python $(PYTHON) --extra bigquery
	touch .venv/.installed

demo: install
	$(BIN)/python -m ml demo

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check ml tests bench
	$(BIN)/ruff format --check ml tests bench
	$(BIN)/lint-imports

dbt-build: install
	$(BIN)/dbt build --target dev

clean:
	rm -rf data mlruns target logs .venv .tools
