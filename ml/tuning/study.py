"""The Optuna study: where it is stored, how a new one is named, and how `--resume` finds the
last one of a recipe and proves it is the same search.

A study is stored in Optuna's RDB storage: `tuning.storage` (ML_TUNING_STORAGE), or an SQLite
file `optuna.db` beside a local MLflow store. Its sampler is TPE seeded with the recipe's seed,
so the same recipe and data sample the same trials.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from ml.config import redact
from ml.errors import ConfigError, TrackingError, one_line
from ml.textio import elide

if TYPE_CHECKING:
    import optuna

    from ml.config import Settings
    from ml.plan import Plan
    from ml.tuning.space import Search

STORAGE = "tuning.storage (ML_TUNING_STORAGE)"
STUDY_FILE = "optuna.db"
_FINGERPRINT = "ml.fingerprint"
_RECIPE = "ml.recipe"


def storage_url(settings: Settings) -> str:
    """The configured URL, or SQLite beside a local MLflow store; refused for a server store
    with none configured (the study must live where every client can reach it)."""
    configured = settings.tuning.storage
    if configured:
        return configured
    from ml.tracking import tracking_uri

    uri = tracking_uri(settings, create=True)  # `ml tune` creates the MLflow store
    if uri.startswith("sqlite:///"):
        store = Path(uri.removeprefix("sqlite:///"))
        return f"sqlite:///{store.with_name(STUDY_FILE)}"
    if uri.startswith("file:"):
        return f"sqlite:///{Path(unquote(urlparse(uri).path)) / STUDY_FILE}"
    raise ConfigError(
        f"{STORAGE}: required when the MLflow store is a server ({redact(uri)}): set an "
        "SQLAlchemy URL the study can be shared in, e.g. postgresql://user@host/optuna"
    )


def fingerprint(p: Plan, search: Search, context: dict[str, Any]) -> str:
    """What makes two invocations the same search: the data, split and model the trials fit,
    and what they sample and optimize (not how many trials, nor for how long)."""
    r = p.recipe
    tuning = r.tuning.model_dump(mode="json", by_alias=True) if r.tuning else {}
    for key in ("n_trials", "timeout_seconds"):
        tuning.pop(key, None)
    same = {
        "model": r.model.model_dump(mode="json"),
        "data": r.data.model_dump(mode="json"),
        "preprocessing": r.preprocessing.model_dump(mode="json"),
        "split": r.split.model_dump(mode="json"),
        "seed": r.seed,
        "context": context,
        "tuning": tuning,
        "direction": search.direction,
        "relation": str(p.train_model.relation),
    }
    return hashlib.sha256(json.dumps(same, sort_keys=True, default=str).encode()).hexdigest()


def resumable(url: str, recipe: str, same_search: str) -> str:
    """The name of the recipe's last study, refused if there is none or its search differs
    (checked before anything is written: a missing SQLite file is not created)."""
    missing = ConfigError(
        f"--resume: no study of recipe {recipe} in {redact(url)}; run without --resume"
    )
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise missing
    quiet()
    mine = [s for s in _storage(url).get_all_studies() if s.user_attrs.get(_RECIPE) == recipe]
    if not mine:
        raise missing
    last = max(mine, key=lambda s: s._study_id)
    if last.user_attrs.get(_FINGERPRINT) != same_search:
        raise ConfigError(
            f"--resume: the recipe's model, data, split or tuning section changed since study "
            f"{last.study_name}; run without --resume to start a new study"
        )
    return str(last.study_name)


def open_study(
    url: str, p: Plan, search: Search, same_search: str, resume: str | None
) -> optuna.Study:
    """The study `resume` names, or a new one named for the recipe and the time. TPE seeded
    with the recipe's seed; a trial whose running mean is below the median of the earlier
    trials' at the same fold is pruned (after 5 complete trials)."""
    import optuna

    quiet()
    storage = _storage(url)
    sampler = optuna.samplers.TPESampler(seed=p.recipe.seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if resume is not None:
        return optuna.load_study(study_name=resume, storage=storage, sampler=sampler, pruner=pruner)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    study = optuna.create_study(
        study_name=f"{p.recipe.name}-{stamp}",
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        direction=search.direction,
    )
    study.set_user_attr(_RECIPE, p.recipe.name)
    study.set_user_attr(_FINGERPRINT, same_search)
    return study


def check_storage(url: str) -> None:
    """Before anything is written: the URL parses and a local SQLite file's folder exists."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        shown = elide(repr(redact(url)), 80)
        raise ConfigError(f"{STORAGE}: {shown} is not a URL ({one_line(exc, 120)})") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        folder = Path(parsed.database).parent
        if not folder.is_dir():
            raise ConfigError(f"{STORAGE}: {redact(url)}: folder {folder} does not exist")


def _storage(url: str) -> optuna.storages.RDBStorage:
    import optuna

    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # noqa: BLE001 - any backend failure means unreachable
        raise TrackingError(f"{STORAGE}: cannot open {redact(url)}: {one_line(exc, 200)}") from None


def quiet() -> None:
    """Optuna reports each trial on its own logger; `ml tune` prints its own progress."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)
