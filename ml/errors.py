"""Typed errors: each knows how it reaches a user, as an exit code and as an HTTP status.

The CLI catches `MLError` once and prints its message on one line; the API maps the same
classes to JSON error bodies. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def one_line(exc: BaseException, limit: int = 400) -> str:
    """An exception's text folded onto one line and capped, for messages that quote it; a
    native library's stack trace appended to it (XGBoost's "Stack trace: [bt] (0) ...") is
    dropped."""
    text = str(exc).split("Stack trace:", 1)[0]
    return " ".join(text.split())[:limit]


class MLError(Exception):
    """Root of every error a user can cause and fix."""

    exit_code: int = 1
    http_status: int = 500

    def __init__(self, message: str) -> None:
        # One line, always: a multi-line message would break the CLI's contract.
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(MLError):
    """Settings files, APP_ENV, environment variables or command-line options are wrong."""

    exit_code = 2
    http_status = 500


class RecipeError(MLError):
    """A recipe file is missing, malformed, or does not fit the dbt project."""

    exit_code = 2
    http_status = 500


class ContractError(MLError):
    """Data does not match the schema contract (recipe, dbt contract or training schema)."""

    exit_code = 3
    http_status = 422


class WarehouseError(MLError):
    """The warehouse cannot be reached, or a relation is missing or stale."""

    exit_code = 4
    http_status = 503


class DbtError(MLError):
    """dbt failed to parse or build."""

    exit_code = 4
    http_status = 500


class TrackingError(MLError):
    """The MLflow tracking store or registry cannot be reached or refused a write."""

    exit_code = 5
    http_status = 503


class RunNotFoundError(MLError):
    """No MLflow run or registered model matches what was asked for."""

    exit_code = 6
    http_status = 404


class TrainingError(MLError):
    """The estimator failed to fit or to predict."""

    exit_code = 7
    http_status = 500


class RunStateError(RunNotFoundError):
    """The run exists but is not a finished training run (still running, failed, deleted, or a
    scoring run): it is never scored or served."""


class ArtifactError(TrackingError):
    """A run's artifact is missing, truncated or unreadable."""


class UnsupportedModelError(MLError):
    """The SQL engine cannot compile this model: an estimator, objective or feature type it does
    not reproduce exactly, or a query over the warehouse's size limit."""

    exit_code = 2
    http_status = 422


class OnlineStoreError(MLError):
    """The online store (SQLite file or Redis) cannot be reached, or refused a read or write."""

    exit_code = 4
    http_status = 503


@contextmanager
def estimator_failures(failure: str) -> Iterator[None]:
    """A third-party estimator's exception as one TrainingError line, `failure: <its text>`
    (its own message is the useful part); ml's own errors pass through unchanged."""
    try:
        yield
    except MLError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the estimator raises
        raise TrainingError(f"{failure}: {one_line(exc, 300)}") from None
