from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from refusals import refused, unblock  # tests/unit/refusals.py

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


# -- every file through the hardened reader ------------------------------------------------


def _refused(fn: Callable[[], Any], seconds: float = 5) -> str:
    return refused(fn, ConfigError, seconds)


_unblock = unblock


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_overlay_that_is_not_a_regular_file(project: Path, kind: str) -> None:
    overlay = project / "config" / "dev.yaml"
    overlay.unlink()
    overlay.mkdir() if kind == "directory" else os.mkfifo(overlay)
    try:
        message = _refused(lambda: load_settings(root=project))
    finally:
        if kind == "fifo":
            _unblock(overlay)
    it_is = "a directory" if kind == "directory" else "a FIFO"
    assert message == f"config/dev.yaml: not a regular file (it is {it_is})"


def test_config_file_over_the_size_cap(project: Path) -> None:
    (project / "config" / "dev.yaml").write_text("# " + "x" * (1 << 20) + "\n")
    message = _refused(lambda: load_settings(root=project))
    assert message.startswith("config/dev.yaml: 1,048,579 bytes is over the ")


def test_config_file_invalid_utf8_and_nul(project: Path) -> None:
    overlay = project / "config" / "dev.yaml"
    overlay.write_bytes(b"dbt:\n  target: d\xe9v\n")
    assert _refused(lambda: load_settings(root=project)) == (
        "config/dev.yaml: not valid UTF-8 at byte 16"
    )
    overlay.write_bytes(b"dbt:\n  target: dev\x00\n")
    assert _refused(lambda: load_settings(root=project)) == (
        "config/dev.yaml: NUL byte at byte 18 (not a text file)"
    )


def test_config_alias_bomb_and_keys_that_are_not_strings(project: Path) -> None:
    overlay = project / "config" / "dev.yaml"
    overlay.write_text(
        "x: &a [1, 1, 1, 1, 1, 1, 1, 1]\n"
        + "".join(
            f"x{i}: &a{i} [{', '.join(['*a' if i == 0 else f'*a{i - 1}'] * 8)}]\n" for i in range(8)
        )
    )
    assert "more than 32 alias references" in _refused(lambda: load_settings(root=project))
    overlay.write_text("serving:\n  on: 1\n")
    assert _refused(lambda: load_settings(root=project)) == (
        "config/dev.yaml: line 2, column 3: key 'on' is read as bool, not a string; quote it"
    )
    overlay.write_text("serving:\n  port: 1\n  port: 2\n")
    assert _refused(lambda: load_settings(root=project)) == (
        "config/dev.yaml: line 3, column 3: duplicate key 'port' (first at line 2)"
    )


def test_config_deep_nesting(project: Path) -> None:
    (project / "config" / "dev.yaml").write_text("serving: " + "[" * 100_000 + "\n")
    message = _refused(lambda: load_settings(root=project))
    assert message.startswith("config/dev.yaml: line 1, column ")
    assert message.endswith("nested deeper than 64 levels")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"ML_PREDICTIONS_SCHEMA=caf\xe9\n", ".env: not valid UTF-8 at byte 25"),
        (b"ML_PREDICTIONS_SCHEMA=a\x00b\n", ".env: NUL byte at byte 23 (not a text file)"),
        (b"A=1\nnot a line 'hunter2\n", ".env: line 2: cannot parse (expected NAME=value)"),
    ],
    ids=["utf8", "nul", "unparsable-line"],
)
def test_dotenv_is_read_strictly(project: Path, content: bytes, message: str) -> None:
    (project / ".env").write_bytes(content)
    assert _refused(lambda: load_settings(root=project)) == message  # no secret is quoted


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_dotenv_that_is_not_a_regular_file(project: Path, kind: str) -> None:
    dotenv = project / ".env"
    dotenv.mkdir() if kind == "directory" else os.mkfifo(dotenv)
    try:
        message = _refused(lambda: load_settings(root=project))
    finally:
        if kind == "fifo":
            _unblock(dotenv)
    it_is = "a directory" if kind == "directory" else "a FIFO"
    assert message == f".env: not a regular file (it is {it_is})"


# -- --env / APP_ENV -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ("base", "is not an overlay (config/base.yaml is always loaded first)"),
        ("../prod", "is not a name (letters, digits, '-' and '_' only)"),
        ("dev/../prod", "is not a name (letters, digits, '-' and '_' only)"),
        ("Dev", "is unknown"),
    ],
)
def test_env_must_name_an_overlay_other_than_base(root: Path, env: str, problem: str) -> None:
    message = _refused(lambda: load_settings(env=env, root=root))
    assert message == f"APP_ENV '{env}' {problem}: expected one of dev, prod (config/<env>.yaml)"


def test_app_env_base_from_the_environment(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "base")
    assert _refused(lambda: load_settings(root=root)).startswith("APP_ENV 'base' is not an overlay")


def test_long_app_env_is_elided(root: Path) -> None:
    assert "(100,000 chars)" in _refused(lambda: load_settings(env="x" * 100_000, root=root))


# -- ${VAR} references ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("${ML_DUCKDB_PATH:-data/w.duckdb", "unterminated ${ (no closing })"),
        ("${ML_DUCKDB_PATH", "unterminated ${ (no closing })"),
        ("data/${1ST}.duckdb", "malformed ${...} reference"),
        ("${}", "malformed ${...} reference"),
        ("${A:-${B}}", "nested ${...} inside a default is not supported"),
    ],
)
def test_malformed_reference_names_the_file_and_setting(
    project: Path, template: str, problem: str
) -> None:
    (project / "config" / "dev.yaml").write_text(f"warehouse:\n  duckdb:\n    path: '{template}'\n")
    assert _refused(lambda: load_settings(root=project)) == (
        f"config/dev.yaml: warehouse.duckdb.path: {problem} in {template!r} "
        "(expected ${VAR} or ${VAR:-default})"
    )


def test_a_value_from_the_environment_is_not_a_template(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ML_DUCKDB_PATH", "/tmp/${odd")
    assert str(load_settings(root=root).warehouse.duckdb.path) == "/tmp/${odd"


# -- values checked at load, naming the setting and its variable ---------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("0", "input should be greater than 0 (got '0')"),
        ("-5", "input should be greater than 0 (got '-5')"),
        (
            "lots",
            "input should be a valid integer, unable to parse string as an integer (got 'lots')",
        ),
        (
            "1.5",
            "input should be a valid integer, unable to parse string as an integer (got '1.5')",
        ),
        ("99999999999", "input should be less than or equal to 10000000 (got '99999999999')"),
    ],
)
def test_bad_batch_size_names_setting_and_variable(
    root: Path, monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    monkeypatch.setenv("ML_SCORE_BATCH_SIZE", value)
    assert _refused(lambda: load_settings(root=root)) == (
        f"config/base.yaml: predictions.batch_size: {problem} "
        "(from environment variable ML_SCORE_BATCH_SIZE)"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", None),
        ("3", 3),
        ("0", "input should be greater than or equal to 1 (got '0')"),
        (
            "two",
            "input should be a valid integer, unable to parse string as an integer (got 'two')",
        ),
    ],
)
def test_score_threads_from_the_environment(
    root: Path, monkeypatch: pytest.MonkeyPatch, value: str, expected: int | str | None
) -> None:
    monkeypatch.setenv("ML_SCORE_THREADS", value)
    if isinstance(expected, str):
        assert _refused(lambda: load_settings(root=root)) == (
            f"config/base.yaml: predictions.threads: {expected} "
            "(from environment variable ML_SCORE_THREADS)"
        )
    else:
        assert load_settings(root=root).predictions.threads == expected


@pytest.mark.parametrize("value", ['a"b', "scores-x", "1st", "x" * 129])
def test_the_predictions_schema_is_a_plain_identifier(
    root: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """Refused when settings load, not after the model loaded, when SQL first quotes it."""
    monkeypatch.setenv("ML_PREDICTIONS_SCHEMA", value)
    assert _refused(lambda: load_settings(root=root)).startswith(
        "config/base.yaml: predictions.schema: string should match pattern "
        "'^[A-Za-z_][A-Za-z0-9_]{0,127}$'"
    )
    monkeypatch.setenv("ML_PREDICTIONS_SCHEMA", "scores_2026")
    assert load_settings(root=root).predictions.schema_name == "scores_2026"


def test_bad_value_from_dotenv_or_default_says_so(project: Path) -> None:
    (project / ".env").write_text("ML_SCORE_BATCH_SIZE=0\n")
    assert _refused(lambda: load_settings(root=project)).endswith(
        "(got '0') (from ML_SCORE_BATCH_SIZE in .env)"
    )
    (project / ".env").unlink()
    base = project / "config" / "base.yaml"
    base.write_text(
        base.read_text().replace("ML_SCORE_BATCH_SIZE:-100000", "ML_SCORE_BATCH_SIZE:-0")
    )
    assert _refused(lambda: load_settings(root=project)).endswith(
        "(got '0') (the default used while ML_SCORE_BATCH_SIZE is unset)"
    )


@pytest.mark.parametrize(
    "value", ["80%", "lots", "128", "1KB", "-1GB", "1e3MB", "128MB'; --", "99999999999TB"]
)
def test_bad_memory_limit_names_setting_and_variable(
    root: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("ML_DUCKDB_MEMORY_LIMIT", value)
    assert _refused(lambda: load_settings(root=root)) == (
        "config/base.yaml: warehouse.duckdb.memory_limit: expected a size from 16MB to 1000TB "
        f"like 512MB, 1GB or 1.5GiB (units B, KB..TB, KiB..TiB) (got {value!r}) "
        "(from environment variable ML_DUCKDB_MEMORY_LIMIT)"
    )


@pytest.mark.parametrize("value", ["128MB", "1GB", "1.5GiB", "512 mb", "2TB", "16MB", "1000TB"])
def test_good_memory_limits(root: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ML_DUCKDB_MEMORY_LIMIT", value)
    assert load_settings(root=root).warehouse.duckdb.memory_limit == value


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("inf", "input should be a finite number"),
        ("nan", "input should be a finite number"),
        ("1e9", "input should be less than or equal to 86400"),
        ("soon", "input should be a valid number, unable to parse string as a number"),
    ],
)
def test_bad_lock_timeout(
    root: Path, monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    monkeypatch.setenv("ML_DUCKDB_LOCK_TIMEOUT", value)
    assert _refused(lambda: load_settings(root=root)) == (
        f"config/base.yaml: warehouse.duckdb.lock_timeout_seconds: {problem} (got {value!r}) "
        "(from environment variable ML_DUCKDB_LOCK_TIMEOUT)"
    )


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("port: 70000", "serving.port: input should be less than or equal to 65535 (got 70000)"),
        ("port: -1", "serving.port: input should be greater than or equal to 0 (got -1)"),
        ("port: true", "serving.port: expected an integer, got true"),
        ("workers: 0", "serving.workers: input should be greater than or equal to 1 (got 0)"),
        (
            "workers: 100000",
            "serving.workers: input should be less than or equal to 256 (got 100000)",
        ),
        (
            "max_body_bytes: 0",
            "serving.max_body_bytes: input should be greater than or equal to 1 (got 0)",
        ),
    ],
)
def test_bad_serving_values(project: Path, yaml_text: str, message: str) -> None:
    (project / "config" / "dev.yaml").write_text(f"serving:\n  {yaml_text}\n")
    assert _refused(lambda: load_settings(root=project)) == f"config/dev.yaml: {message}"


def test_error_with_a_100kb_value_is_one_short_line(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    huge = "x" * 100_000
    monkeypatch.setenv("ML_SCORE_BATCH_SIZE", huge)
    assert "(100,002 chars)" in _refused(lambda: load_settings(root=project))
    monkeypatch.delenv("ML_SCORE_BATCH_SIZE")
    (project / "config" / "dev.yaml").write_text(f"serving:\n  ? {huge}\n  : 1\n")
    assert _refused(lambda: load_settings(root=project)).endswith("unknown key (not allowed here)")
    monkeypatch.setenv("ML_PROJECT_DIR", "/nonexistent/" + huge)
    assert _refused(load_settings).startswith("ML_PROJECT_DIR=/nonexistent/xxx")


def test_cli_env_base_is_one_error_line(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from ml.cli import main

    monkeypatch.chdir(root)
    result = CliRunner().invoke(
        main, ["--env", "base", "validate", "--recipe", "recipes/nope.yaml"]
    )
    assert result.exit_code == 2
    assert result.output.strip() == (
        "Error: APP_ENV 'base' is not an overlay (config/base.yaml is always loaded first): "
        "expected one of dev, prod (config/<env>.yaml)"
    )
