"""Layered settings: config/base.yaml, deep-merged with config/<APP_ENV>.yaml, then ${VAR} from
the environment and .env. Validated once into typed `Settings`; secrets only ever come from the
environment and are redacted whenever settings are recorded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ml.errors import ConfigError
from ml.yamlio import format_validation_error, read_yaml

DEFAULT_ENV = "dev"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-?([^}]*))?\}")
_SECRET_KEY = re.compile(
    r"(password|secret|token|keyfile_json|credential|api_key|private_key)", re.I
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DbtSettings(_Strict):
    target: str
    project_dir: Path = Path(".")
    profiles_dir: Path = Path(".")


class DuckDBSettings(_Strict):
    path: Path
    lock_timeout_seconds: float = Field(60.0, ge=0)
    threads: int | None = None
    memory_limit: str | None = None


class BigQuerySettings(_Strict):
    project: str
    dataset: str
    location: str = "US"
    keyfile: str | None = None
    api_endpoint: str | None = None
    # the Storage Read API (gRPC) endpoint when api_endpoint is custom; unset means REST reads
    storage_api_endpoint: str | None = None
    storage_read_api: bool = True
    timeout_seconds: float = Field(300.0, gt=0)


class WarehouseSettings(_Strict):
    type: Literal["duckdb", "bigquery"]
    duckdb: DuckDBSettings | None = None
    bigquery: BigQuerySettings | None = None


class MLflowSettings(_Strict):
    tracking_uri: str
    registry_uri: str | None = None
    artifact_location: str | None = None
    experiment_prefix: str = ""


class PredictionsSettings(_Strict):
    schema_name: str = Field(alias="schema")
    batch_size: int = Field(100_000, gt=0)


class ServingSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    token_env: str | None = None
    max_records: int = Field(1000, ge=1)
    max_body_bytes: int = Field(1_000_000, ge=1)


class Settings(_Strict):
    env: str
    root: Path
    dbt: DbtSettings
    warehouse: WarehouseSettings
    mlflow: MLflowSettings
    predictions: PredictionsSettings
    serving: ServingSettings = ServingSettings()

    def path(self, value: Path | str) -> Path:
        """Resolve a configured path against the project root (where config/ lives)."""
        p = Path(value)
        return p if p.is_absolute() else self.root / p

    def redacted(self) -> dict[str, Any]:
        """The resolved settings as a dict, safe to record with a run."""
        return redact(self.model_dump(mode="json", by_alias=True))


def redact(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if value and _SECRET_KEY.search(key):
        return "***"
    if isinstance(value, str):
        return _redact_uri_password(value)
    return value


def _redact_uri_password(text: str) -> str:
    # scheme://user:password@host -> scheme://user:***@host
    return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", text)


def find_root(start: Path | None = None) -> Path:
    """The project root: ML_PROJECT_DIR, or the nearest folder above cwd holding config/base.yaml."""
    if env := os.environ.get("ML_PROJECT_DIR"):
        root = Path(env).resolve()
        if not (root / "config" / "base.yaml").is_file():
            raise ConfigError(f"ML_PROJECT_DIR={env}: no config/base.yaml there")
        return root
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "config" / "base.yaml").is_file():
            return candidate
    raise ConfigError(
        f"config/base.yaml: not found in {here} or any parent folder (run ml from the project)"
    )


def load_settings(env: str | None = None, root: Path | None = None) -> Settings:
    """Load base + overlay + environment into validated settings."""
    root = root or find_root()
    env = env or os.environ.get("APP_ENV") or DEFAULT_ENV
    config_dir = root / "config"
    overlay = config_dir / f"{env}.yaml"
    if not re.fullmatch(r"[A-Za-z0-9_-]+", env) or not overlay.is_file():
        known = sorted(p.stem for p in config_dir.glob("*.yaml") if p.stem != "base")
        raise ConfigError(
            f"APP_ENV '{env}' is unknown: expected one of {', '.join(known)} (config/<env>.yaml)"
        )

    base_file, overlay_file = config_dir / "base.yaml", overlay
    base = _mapping(read_yaml(base_file), base_file, root)
    over = _mapping(read_yaml(overlay_file), overlay_file, root)
    sources: dict[tuple[str, ...], str] = {}
    _record_sources(base, _rel(base_file, root), (), sources)
    _record_sources(over, _rel(overlay_file, root), (), sources)
    merged = deep_merge(base, over)

    environ = _environment(root)
    resolved = _interpolate(merged, environ, (), sources)
    resolved["env"] = env
    resolved["root"] = str(root)
    try:
        return Settings.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, _source_of(exc, sources))) from None


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Merge mappings recursively; the overlay wins on leaves and lists."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _environment(root: Path) -> dict[str, str]:
    from dotenv import dotenv_values

    dotenv = root / ".env"
    values = (
        {k: v for k, v in dotenv_values(dotenv).items() if v is not None}
        if dotenv.is_file()
        else {}
    )
    values.update(os.environ)  # the real environment wins over .env
    return values


def _interpolate(value: Any, environ: dict[str, str], path: tuple[str, ...], sources: dict) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, environ, (*path, str(k)), sources) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, environ, path, sources) for v in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ and environ[name] != "":
            return environ[name]
        if default is not None:
            return default
        where = _lookup_source(path, sources)
        raise ConfigError(
            f"{where}: {'.'.join(path)}: environment variable {name} is not set (export it or add it to .env)"
        )

    whole = _VAR.fullmatch(value)
    result = _VAR.sub(replace, value)
    if whole and result == "" and whole.group(2) == "":
        return None  # ${VAR:-} means "unset is fine": null, not an empty string
    return result


def _mapping(data: Any, file: Path, root: Path) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{_rel(file, root)}: expected a mapping at the top level")
    return data


def _record_sources(data: dict, file: str, path: tuple[str, ...], sources: dict) -> None:
    for key, value in data.items():
        sub = (*path, str(key))
        sources[sub] = file
        if isinstance(value, dict):
            _record_sources(value, file, sub, sources)


def _lookup_source(path: tuple[str, ...], sources: dict) -> str:
    for i in range(len(path), 0, -1):
        if path[:i] in sources:
            return sources[path[:i]]
    return "config/base.yaml"


def _source_of(exc: ValidationError, sources: dict) -> str:
    errors = exc.errors()
    loc = tuple(str(p) for p in errors[0]["loc"]) if errors else ()
    return _lookup_source(loc, sources)


def _rel(file: Path, root: Path) -> str:
    try:
        return str(file.relative_to(root))
    except ValueError:
        return str(file)


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False)
