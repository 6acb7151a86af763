"""Layered settings: config/base.yaml, deep-merged with config/<APP_ENV>.yaml, then ${VAR} from
the environment and .env. Validated once into typed `Settings`; secrets only ever come from the
environment and are redacted whenever settings are recorded.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ml.errors import ConfigError
from ml.textio import elide, read_text
from ml.yamlio import MAX_YAML_BYTES, format_validation_error, read_yaml

DEFAULT_ENV = "dev"
ENV_NAME = re.compile(r"[A-Za-z0-9_-]+")
MAX_DOTENV_BYTES = 1 << 20
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-?([^}]*))?\}")
# what DuckDB's memory_limit accepts: a number and a decimal or binary unit
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+) ?(B|[KMGT]i?B)", re.I)
_UNIT_BYTES = {"b": 1, **{f"{u}b": 1000**i for i, u in enumerate("kmgt", 1)}}
_UNIT_BYTES.update({f"{u}ib": 1024**i for i, u in enumerate("kmgt", 1)})
MIN_MEMORY_LIMIT = 16 * 1000**2
MAX_MEMORY_LIMIT = 1000 * 1000**4  # DuckDB refuses sizes past its byte counter's range
Sources = dict[tuple[str, ...], str]  # a setting's key path -> the config file that set it
_SECRET_KEY = re.compile(
    r"(password|secret|token|keyfile_json|credential|api_key|private_key)", re.I
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _not_bool(value: Any) -> Any:
    # pydantic reads `true` as 1 for an int; a count or a port written as a boolean is a mistake
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {str(value).lower()}")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]


class DbtSettings(_Strict):
    target: str
    project_dir: Path = Path(".")
    profiles_dir: Path = Path(".")


class DuckDBSettings(_Strict):
    path: Path
    lock_timeout_seconds: float = Field(default=60.0, ge=0, le=86_400, allow_inf_nan=False)
    threads: Int | None = Field(default=None, ge=1, le=1024)
    memory_limit: str | None = None

    @field_validator("memory_limit")
    @classmethod
    def _memory_size(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = _SIZE.fullmatch(value.strip())
        size = float(match.group(1)) * _UNIT_BYTES[match.group(2).lower()] if match else 0.0
        if not match or not MIN_MEMORY_LIMIT <= size <= MAX_MEMORY_LIMIT:
            raise ValueError(
                "expected a size from 16MB to 1000TB like 512MB, 1GB or 1.5GiB (units B, "
                f"KB..TB, KiB..TiB) (got {elide(repr(value), 60)})"
            )
        return value.strip()


class BigQuerySettings(_Strict):
    project: str
    dataset: str
    location: str = "US"
    keyfile: str | None = None
    api_endpoint: str | None = None
    # the Storage Read API (gRPC) endpoint when api_endpoint is custom; unset means REST reads
    storage_api_endpoint: str | None = None
    storage_read_api: bool = True
    timeout_seconds: float = Field(default=300.0, gt=0, le=86_400, allow_inf_nan=False)


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
    # the schema (BigQuery: dataset) the score tables go to: a plain identifier in both
    schema_name: str = Field(alias="schema", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    batch_size: Int = Field(default=100_000, gt=0, le=10_000_000)
    # python: rows stream through `ml score`; sql: the model compiled to SQL runs in the warehouse
    engine: Literal["python", "sql"] = "python"
    # rows the drift report's PSI is computed from (share errors ~0.001 at 100,000)
    drift_sample_rows: Int = Field(default=100_000, ge=1_000, le=10_000_000)
    # the most threads an XGBoost model predicts on while `ml score` streams (never more than
    # its own n_jobs); unset: the machine's cores less the one that reads and writes
    threads: Int | None = Field(default=None, ge=1, le=1024)


class OnlineStoreSettings(_Strict):
    """Where `ml materialize` puts entity features and `ml serve` looks them up by id."""

    type: Literal["sqlite", "redis"] = "sqlite"
    path: Path = Path("data/online_store.sqlite")  # sqlite: the file, relative to the root
    url: str | None = None  # redis: redis://[:password@]host:port/db
    timeout_seconds: float = Field(default=2.0, gt=0, le=600, allow_inf_nan=False)
    batch_size: Int = Field(default=10_000, gt=0, le=1_000_000)  # rows per write

    @model_validator(mode="after")
    def _redis_needs_url(self) -> OnlineStoreSettings:
        if self.type == "redis" and not self.url:
            raise ValueError("url: required for type redis (e.g. redis://127.0.0.1:6379/0)")
        return self


class ServingSettings(_Strict):
    host: str = "127.0.0.1"
    port: Int = Field(default=8000, ge=0, le=65535)
    workers: Int = Field(default=1, ge=1, le=256)
    token_env: str | None = None
    max_records: Int = Field(default=1000, ge=1, le=10_000_000)
    max_body_bytes: Int = Field(default=1_000_000, ge=1, le=1 << 30)
    # what `ml serve` serves without --model or --run-id: NAME, NAME@ALIAS or NAME/VERSION
    model: str | None = Field(default=None, pattern=r"^[^@/\s]+(?:[@/][^@/\s]+)?$")
    # how often a server started with NAME@ALIAS asks the registry whether the alias moved
    # (0: never)
    reload_seconds: float = Field(default=30.0, ge=0, le=86_400, allow_inf_nan=False)
    online_store: OnlineStoreSettings = OnlineStoreSettings()


class EstimatorSettings(_Strict):
    # module prefixes recipe class paths may name (ml.estimators checks each before importing);
    # the default is ml.estimators.DEFAULT_ALLOWED_MODULES
    allowed_modules: list[str] = Field(default_factory=lambda: ["xgboost", "econml", "sklearn"])


class TuningSettings(_Strict):
    # Optuna's RDB storage URL for `ml tune`'s studies; empty: an SQLite file beside a local
    # MLflow store (required when the store is a server)
    storage: str | None = None


class Settings(_Strict):
    env: str
    root: Path
    dbt: DbtSettings
    warehouse: WarehouseSettings
    mlflow: MLflowSettings
    predictions: PredictionsSettings
    serving: ServingSettings = ServingSettings()
    estimators: EstimatorSettings = EstimatorSettings()
    tuning: TuningSettings = TuningSettings()

    def path(self, value: Path | str) -> Path:
        """Resolve a configured path against the project root (where config/ lives)."""
        p = Path(value)
        return p if p.is_absolute() else self.root / p

    def redacted(self) -> dict[str, Any]:
        """The resolved settings as a dict, safe to record with a run."""
        redacted: dict[str, Any] = redact(self.model_dump(mode="json", by_alias=True))
        return redacted


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
        if not _is_file(root / "config" / "base.yaml"):
            raise ConfigError(f"ML_PROJECT_DIR={elide(env, 120)}: no config/base.yaml there")
        return root
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if _is_file(candidate / "config" / "base.yaml"):
            return candidate
    raise ConfigError(
        f"config/base.yaml: not found in {elide(str(here), 120)} or any parent folder "
        "(run ml from the project)"
    )


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name too long for the file system
        return False


def load_settings(env: str | None = None, root: Path | None = None) -> Settings:
    """Load base + overlay + environment into validated settings."""
    root = root or find_root()
    env = env or os.environ.get("APP_ENV") or DEFAULT_ENV
    base_file = root / "config" / "base.yaml"
    overlay_file = _overlay(root / "config", env)
    base = _mapping(_read_config(base_file, root), base_file, root)
    over = _mapping(_read_config(overlay_file, root), overlay_file, root)
    sources: Sources = {}
    _record_sources(base, _rel(base_file, root), (), sources)
    _record_sources(over, _rel(overlay_file, root), (), sources)
    merged = deep_merge(base, over)

    environ = _Environment(root)
    variables: dict[tuple[str, ...], str] = {}
    resolved = _interpolate(merged, environ, (), sources, variables)
    resolved["env"] = env
    resolved["root"] = str(root)
    try:
        return Settings.model_validate(resolved)
    except ValidationError as exc:
        loc = _first_loc(exc)
        note = environ.describe(variables[loc]) if loc in variables else ""
        raise ConfigError(
            format_validation_error(exc, _lookup_source(loc, sources), note)
        ) from None


def _overlay(config_dir: Path, env: str) -> Path:
    """config/<env>.yaml for an APP_ENV (or --env) that names one of the overlays, never base."""
    known = sorted(
        p.stem for p in config_dir.glob("*.yaml") if p.stem != "base" and ENV_NAME.fullmatch(p.stem)
    )
    expected = f"expected one of {', '.join(known) or '(none)'} (config/<env>.yaml)"
    shown = elide(env, 60)
    if not ENV_NAME.fullmatch(env):
        problem = "is not a name (letters, digits, '-' and '_' only)"
    elif env.casefold() == "base":
        problem = "is not an overlay (config/base.yaml is always loaded first)"
    elif env not in known:  # an exact listing, so case-insensitive file systems agree
        problem = "is unknown"
    else:
        return config_dir / f"{env}.yaml"
    raise ConfigError(f"APP_ENV '{shown}' {problem}: {expected}")


def _read_config(file: Path, root: Path) -> Any:
    return read_yaml(file, ConfigError, _rel(file, root), max_bytes=MAX_YAML_BYTES)


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Merge mappings recursively; the overlay wins on leaves and lists."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class _Environment:
    """Variables for ${VAR}: the real environment over `.env`, remembering where each came from."""

    def __init__(self, root: Path) -> None:
        self.dotenv = _read_dotenv(root / ".env")
        self.values = {**self.dotenv, **os.environ}  # the real environment wins over .env

    def get(self, name: str) -> str | None:
        value = self.values.get(name)
        return value if value else None  # set but empty counts as unset

    def describe(self, name: str) -> str:
        """Where a setting's value came from, for an error about it."""
        if self.get(name) is None:
            return f"the default used while {name} is unset"
        return f"from environment variable {name}" if name in os.environ else f"from {name} in .env"


def _read_dotenv(path: Path) -> dict[str, str]:
    """`.env` through the hardened reader; a line python-dotenv cannot parse is an error, not a
    warning (the line is not quoted: it may hold a secret)."""
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    if not os.path.lexists(path):
        return {}
    text = read_text(path, ".env", max_bytes=MAX_DOTENV_BYTES, error=ConfigError)
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            raise ConfigError(
                f".env: line {binding.original.line}: cannot parse (expected NAME=value)"
            )
    values = dotenv_values(stream=io.StringIO(text))
    return {k: v for k, v in values.items() if v is not None}


def _interpolate(
    value: Any,
    environ: _Environment,
    path: tuple[str, ...],
    sources: Sources,
    variables: dict[tuple[str, ...], str],
) -> Any:
    if isinstance(value, dict):
        return {
            k: _interpolate(v, environ, (*path, str(k)), sources, variables)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(v, environ, path, sources, variables) for v in value]
    if not isinstance(value, str):
        return value
    _check_references(value, path, sources)

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        variables.setdefault(path, name)
        if (found := environ.get(name)) is not None:
            return found
        if default is not None:
            return default
        where = _lookup_source(path, sources)
        raise ConfigError(
            f"{where}: {elide('.'.join(path), 120)}: environment variable {elide(name, 60)} is not set "
            "(export it or add it to .env)"
        )

    whole = _VAR.fullmatch(value)
    result = _VAR.sub(replace, value)
    if whole and result == "" and whole.group(2) == "":
        return None  # ${VAR:-} means "unset is fine": null, not an empty string
    return result


def _check_references(value: str, path: tuple[str, ...], sources: Sources) -> None:
    """Every `${` opens a well-formed ${VAR} or ${VAR:-default}: a typo is an error naming the
    file, never a literal path or URL containing `${`."""
    start = value.find("${")
    while start != -1:
        match = _VAR.match(value, start)
        if match is None:
            closed = "}" in value[start:]
            problem = "malformed ${...} reference" if closed else "unterminated ${ (no closing })"
        elif "${" in (match.group(2) or ""):
            problem = "nested ${...} inside a default is not supported"
        else:
            start = value.find("${", match.end())
            continue
        where = _lookup_source(path, sources)
        raise ConfigError(
            f"{where}: {elide('.'.join(path), 120)}: {problem} in {elide(repr(value), 80)} "
            "(expected ${VAR} or ${VAR:-default})"
        )


def _mapping(data: Any, file: Path, root: Path) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{_rel(file, root)}: expected a mapping at the top level")
    return data


def _record_sources(
    data: dict[str, Any], file: str, path: tuple[str, ...], sources: Sources
) -> None:
    for key, value in data.items():
        sub = (*path, str(key))
        sources[sub] = file
        if isinstance(value, dict):
            _record_sources(value, file, sub, sources)


def _lookup_source(path: tuple[str, ...], sources: Sources) -> str:
    for i in range(len(path), 0, -1):
        if path[:i] in sources:
            return sources[path[:i]]
    return "config/base.yaml"


def _first_loc(exc: ValidationError) -> tuple[str, ...]:
    errors = exc.errors()
    return tuple(str(p) for p in errors[0]["loc"]) if errors else ()


def _rel(file: Path, root: Path) -> str:
    try:
        return str(file.relative_to(root))
    except ValueError:
        return str(file)


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False)
