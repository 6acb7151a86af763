from __future__ import annotations

from pathlib import Path

import pytest

from ml.config import deep_merge, load_settings, redact
from ml.errors import ConfigError


def test_dev_defaults_resolve_against_the_root(root: Path) -> None:
    s = load_settings(root=root)
    assert s.env == "dev"
    assert s.dbt.target == "dev"
    assert s.warehouse.type == "duckdb"
    assert s.path(s.warehouse.duckdb.path) == root / "data" / "warehouse.duckdb"
    assert s.predictions.schema_name == "predictions"
    assert s.serving.token_env is None


def test_env_var_overrides_default(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML_DUCKDB_PATH", "/tmp/elsewhere.duckdb")
    monkeypatch.setenv("ML_PREDICTIONS_SCHEMA", "scores")
    s = load_settings(root=root)
    assert str(s.warehouse.duckdb.path) == "/tmp/elsewhere.duckdb"
    assert s.predictions.schema_name == "scores"


def test_dotenv_fills_variables_and_real_env_wins(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / ".env").write_text(
        "ML_PREDICTIONS_SCHEMA=from_dotenv\nML_DUCKDB_PATH=dotenv.duckdb\n"
    )
    monkeypatch.setenv("ML_DUCKDB_PATH", "real.duckdb")
    s = load_settings(root=project)
    assert s.predictions.schema_name == "from_dotenv"
    assert str(s.warehouse.duckdb.path) == "real.duckdb"


def test_overlay_is_deep_merged_not_replaced(project: Path) -> None:
    (project / "config" / "dev.yaml").write_text("serving:\n  port: 9001\n")
    s = load_settings(root=project)
    assert s.serving.port == 9001
    assert s.serving.host == "127.0.0.1"  # sibling key from base survives
    assert s.serving.max_records == 1000


def test_deep_merge() -> None:
    assert deep_merge({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"c": 3}, "l": [2]}) == {
        "a": {"b": 1, "c": 3},
        "l": [2],
    }


def test_app_env_selects_overlay(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BQ_PROJECT", "my-project")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("APP_ENV", "prod")
    s = load_settings(root=root)
    assert s.env == "prod" and s.dbt.target == "prod" and s.warehouse.type == "bigquery"
    assert s.warehouse.bigquery.project == "my-project"
    assert s.warehouse.bigquery.keyfile is None
    assert s.serving.token_env == "ML_API_TOKEN"


def test_unknown_app_env(root: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"APP_ENV 'staging' is unknown: expected one of dev, prod"
    ):
        load_settings(env="staging", root=root)


def test_required_env_var_unset_names_file_field_and_variable(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    with pytest.raises(ConfigError) as err:
        load_settings(env="prod", root=root)
    assert str(err.value) == (
        "config/prod.yaml: warehouse.bigquery.project: environment variable BQ_PROJECT is not set "
        "(export it or add it to .env)"
    )


def test_invalid_value_names_file_and_field(project: Path) -> None:
    (project / "config" / "dev.yaml").write_text("serving:\n  port: lots\n")
    with pytest.raises(
        ConfigError,
        match=r"^config/dev.yaml: serving.port: input should be a valid integer.*\(got 'lots'\)$",
    ):
        load_settings(root=project)


def test_unknown_config_key(project: Path) -> None:
    (project / "config" / "dev.yaml").write_text("serving:\n  prot: 1\n")
    with pytest.raises(ConfigError, match=r"^config/dev.yaml: serving.prot: unknown key"):
        load_settings(root=project)


def test_config_yaml_syntax_error_has_line(project: Path) -> None:
    (project / "config" / "dev.yaml").write_text("dbt:\n  target: dev\n serving: [\n")
    with pytest.raises(ConfigError, match=r"config/dev.yaml: YAML syntax error at line \d+"):
        load_settings(root=project)


def test_redaction_hides_secrets_and_uri_passwords() -> None:
    out = redact(
        {"token": "abc", "db": "postgresql://u:hunter2@host/db", "n": 1, "api_token_env": "X"}
    )
    assert out["token"] == "***"
    assert "hunter2" not in out["db"]
    assert out["n"] == 1
