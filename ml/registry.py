"""Everything about logged models: log a trained model, register it, resolve `--run-id` or
`NAME[@ALIAS|/VERSION]` to a finished training run, and load what it logged.

One implementation for `ml train`, `ml score` and `ml serve`, so the same fault is the same
error everywhere: `RunNotFoundError` (no such run, model, alias or version), `RunStateError`
(the run did not finish, or is not a training run), `ArtifactError` (an artifact is missing or
unreadable), `ContractError` (the artifacts do not belong together).

Pickles are loaded only from runs in the configured tracking store (see README: security).
Saved models name `ml.preprocess` (the preprocessor pickle) and `ml.pyfunc` (the logged pyfunc):
those import paths are part of the saved format.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.config import Settings
from ml.errors import (
    ArtifactError,
    ConfigError,
    ContractError,
    MLError,
    RunNotFoundError,
    RunStateError,
    TrackingError,
    one_line,
)
from ml.model import ScoringModel, TrainingSchema
from ml.progress import Steps
from ml.textio import decode_text, elide, parse_yaml

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from ml.recipe import Recipe

# the parts of a training run batch scoring rebuilds the model from
BATCH_ARTIFACTS = ("recipe", "schema", "preprocessor", "estimator")
POLICY_CURVE = "evaluation/policy_curve.json"  # the held-out policy curve `ml score` publishes
PYFUNC_NAME = "model"


MAX_REF_CHARS = 256  # a model reference longer than this is a mistake, not a name
_RUN_ID = re.compile(r"[0-9A-Za-z_-]{1,256}")


def _shown(text: str) -> str:
    return repr(elide(text, 80))


@dataclass(frozen=True)
class ModelRef:
    """What to load: a training run, or a registered model (latest, @alias or /version)."""

    run_id: str | None = None
    name: str | None = None
    alias_or_version: str | None = None

    @classmethod
    def parse(cls, run_id: str | None, model: str | None) -> ModelRef:
        if bool(run_id) == bool(model):
            raise ConfigError("give exactly one of --run-id ID or --model NAME[@ALIAS]")
        if run_id:
            if not _RUN_ID.fullmatch(run_id):
                raise ConfigError(
                    f"--run-id {_shown(run_id)}: expected an MLflow run id (letters, digits, "
                    "- and _)"
                )
            return cls(run_id=run_id)
        model = model or ""
        expected = f"--model {_shown(model)}: expected NAME, NAME@ALIAS or NAME/VERSION"
        if len(model) > MAX_REF_CHARS or not model.isprintable():
            raise ConfigError(expected)
        for sep in ("@", "/"):
            if sep in model:
                name, _, ref = model.partition(sep)
                if not name or not ref:
                    raise ConfigError(expected)
                if sep == "/" and not ref.isdigit():
                    raise ConfigError(f"{expected} (a version is a number)")
                return cls(name=name, alias_or_version=ref)
        return cls(name=model)


@dataclass(frozen=True)
class ResolvedModel:
    """A reference resolved against the store: exactly which finished training run to load."""

    run_id: str
    model_name: str
    model_version: str | None
    model_uri: str  # the unified pyfunc the run logged
    metrics: dict[str, float] = field(default_factory=dict)

    def pinned(self) -> ModelRef:
        """The same model by an immutable reference (a moving alias must not split workers)."""
        if (
            self.model_version
            and self.model_uri == f"models:/{self.model_name}/{self.model_version}"
        ):
            return ModelRef(name=self.model_name, alias_or_version=self.model_version)
        return ModelRef(run_id=self.run_id)


@dataclass
class _FromRun:
    resolved: ResolvedModel
    recipe: Recipe

    @property
    def run_id(self) -> str:
        return self.resolved.run_id

    @property
    def model_name(self) -> str:
        return self.resolved.model_name

    @property
    def model_version(self) -> str | None:
        return self.resolved.model_version


@dataclass
class TrainedModel(_FromRun):
    """A training run's separate artifacts, reassembled (what batch scoring uses)."""

    model: ScoringModel
    profile: dict[str, Any] | None
    policy_curve: list[dict[str, Any]] | None = None  # evaluation/policy_curve.json, if logged


@dataclass
class ModelDefinition(_FromRun):
    """What a training run says its model reads, without loading the model: the recipe and the
    training schema (a few KB; what `ml materialize` needs)."""

    schema: TrainingSchema


# -- resolving ---------------------------------------------------------------------------------


def resolve(ref: ModelRef) -> ResolvedModel:
    """The finished training run behind `ref` (the tracking store must be configured)."""
    from mlflow.tracking import MlflowClient

    version: str | None
    if ref.name:
        mv = model_version(ref.name, ref.alias_or_version)
        run_id = mv.run_id or (mv.tags or {}).get("run_id")
        if not run_id:
            raise RunNotFoundError(f"model '{ref.name}' version {mv.version} has no source run")
        run = get_run(run_id)
        _check_training_run(run)
        name, version = str(mv.name), str(mv.version)
        uri = f"models:/{name}/{version}"
    else:
        run_id = ref.run_id or ""
        run = get_run(run_id)
        _check_training_run(run)
        versions = MlflowClient().search_model_versions(f"run_id = '{_quote(run_id)}'")
        latest = max(versions, key=lambda v: int(v.version)) if versions else None
        name = str(latest.name) if latest else str(run.data.tags.get("ml.recipe", PYFUNC_NAME))
        version = str(latest.version) if latest else None
        uri = _logged_model_uri(run)
    return ResolvedModel(run_id, name, version, uri, dict(run.data.metrics))


def model_version(name: str, alias_or_version: str | None) -> Any:
    """`name`, `name@alias` or `name/version` -> the registry's ModelVersion."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        if alias_or_version is None:
            versions = client.search_model_versions(f"name = '{_quote(name)}'")
            if not versions:
                raise RunNotFoundError(f"model '{name}' has no registered versions")
            return max(versions, key=lambda v: int(v.version))
        if alias_or_version.isdigit():
            return client.get_model_version(name, alias_or_version)
        return client.get_model_version_by_alias(name, alias_or_version)
    except MlflowException as exc:
        shown = f"{name}@{alias_or_version}" if alias_or_version else name
        raise RunNotFoundError(
            f"model '{shown}' not found in the registry ({one_line(exc, 300)})"
        ) from None


def get_run(run_id: str) -> Any:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient().get_run(run_id)
    except MlflowException:
        raise RunNotFoundError(f"run '{run_id}' not found in the tracking store") from None


def _check_training_run(run: Any) -> None:
    if (
        run.info.status != "FINISHED"
        or run.info.lifecycle_stage != "active"
        or run.data.tags.get("ml.kind", "train") != "train"
    ):
        status = run.info.status if run.info.lifecycle_stage == "active" else "DELETED"
        raise RunStateError(
            f"run '{run.info.run_id}' is not a finished training run (status {status})"
        )


def _logged_model_uri(run: Any) -> str:
    import mlflow

    logged = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{_quote(run.info.run_id)}' AND name = '{PYFUNC_NAME}'",
        output_format="list",
    )
    if not logged:  # artifacts logged by hand, or by an MLflow before logged models
        return f"runs:/{run.info.run_id}/{PYFUNC_NAME}"
    return f"models:/{logged[0].model_id}"


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


# -- loading -----------------------------------------------------------------------------------


def open_trained(settings: Settings, ref: ModelRef, steps: Steps, label: str) -> TrainedModel:
    """The model `ref` names, from the configured MLflow store, as `ml score` starts: the
    store checked, then the model loaded (each a step)."""
    _check_store(settings, steps)
    with steps.step(label):
        return load_trained(resolve(ref))


def open_definition(settings: Settings, ref: ModelRef, steps: Steps, label: str) -> ModelDefinition:
    """The recipe and training schema of the model `ref` names, as `ml materialize` starts:
    the store checked, then the two read (each a step); the model itself is not loaded."""
    _check_store(settings, steps)
    with steps.step(label):
        resolved = resolve(ref)
        return ModelDefinition(resolved, read_recipe(resolved), read_schema(resolved))


def _check_store(settings: Settings, steps: Steps) -> None:
    from ml import tracking

    with steps.step("checking the MLflow store"):
        tracking.configure(settings)


def load_trained(resolved: ResolvedModel) -> TrainedModel:
    """Preprocessor + estimator rebuilt from the run's separate artifacts (batch scoring)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for part in BATCH_ARTIFACTS:
            _download(resolved.run_id, part, root)
        recipe = _recipe(resolved.run_id, _read(resolved.run_id, root, "recipe/recipe.yaml"))
        schema = _schema(
            resolved.run_id, _read(resolved.run_id, root, "schema/training_schema.json")
        )
        profile_path = root / "schema" / "reference_profile.json"
        profile = json.loads(profile_path.read_text()) if profile_path.is_file() else None
        preprocessor = _unpickle(resolved.run_id, root, "preprocessor/preprocessor.pkl")
        estimator = _unpickle(resolved.run_id, root, "estimator/estimator.pkl")
        curve = _optional_json(resolved.run_id, root, POLICY_CURVE)
    # batch work streams large batches: the walk for a few rows would go unused
    model = ScoringModel(schema, preprocessor, estimator, small_batches=False)
    return TrainedModel(resolved, recipe, model, profile, curve)


def _optional_json(run_id: str, root: Path, rel: str) -> Any:
    """An artifact older runs may not have: None when absent."""
    import mlflow

    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=rel, dst_path=str(root / "optional")
        )
    except Exception:  # noqa: BLE001 - absent (older run): not an error
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"run '{run_id}': {rel} is unreadable ({one_line(exc, 200)})") from None


def read_recipe(resolved: ResolvedModel) -> Recipe:
    """The recipe the run was trained with (a few KB)."""
    return _recipe(resolved.run_id, _artifact_bytes(resolved.run_id, "recipe/recipe.yaml"))


def _recipe(run_id: str, data: bytes) -> Recipe:
    from ml.recipe import recipe_from_dict

    label = f"run {run_id}: recipe.yaml"
    text = decode_text(data, label, error=ArtifactError)
    return recipe_from_dict(parse_yaml(text, label, error=ArtifactError, string_keys=False), label)


def read_schema(resolved: ResolvedModel) -> TrainingSchema:
    """The training schema alone (a few KB): enough to build the API before the model loads."""
    data = _artifact_bytes(resolved.run_id, "schema/training_schema.json")
    return _schema(resolved.run_id, data)


def _artifact_bytes(run_id: str, rel: str) -> bytes:
    """One small artifact of the run, downloaded alone."""
    with tempfile.TemporaryDirectory() as tmp:
        path = _download(run_id, rel, Path(tmp))
        return _read(run_id, path.parent, path.name)


def load_pyfunc(resolved: ResolvedModel) -> ScoringModel:
    """The unified pyfunc's ScoringModel: preprocessor and estimator as training logged them."""
    import mlflow

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's dependency and type-hint advice
        from ml.pyfunc import PyfuncScoringModel

        try:
            python_model = mlflow.pyfunc.load_model(resolved.model_uri).unwrap_python_model()
        except Exception as exc:  # noqa: BLE001 - any failure to load is the artifact's fault
            raise ArtifactError(f"cannot load {resolved.model_uri}: {one_line(exc, 300)}") from None
    if not isinstance(python_model, PyfuncScoringModel):
        raise ContractError(f"{resolved.model_uri} is not a model logged by ml train")
    return python_model.model


def _download(run_id: str, artifact_path: str, dst: Path) -> Path:
    import mlflow

    try:
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact_path, dst_path=str(dst)
            )
        )
    except Exception as exc:  # noqa: BLE001 - any store or filesystem failure
        raise ArtifactError(
            f"run '{run_id}': cannot download {artifact_path} ({one_line(exc, 200)})"
        ) from None


def _read(run_id: str, root: Path, rel: str) -> bytes:
    path = root / rel
    if not path.is_file():
        raise ArtifactError(f"run '{run_id}': artifact {rel} is missing or not a file")
    return path.read_bytes()


def _schema(run_id: str, data: bytes) -> TrainingSchema:
    try:
        return TrainingSchema.from_dict(json.loads(data))
    except (ValueError, TypeError) as exc:
        raise ArtifactError(
            f"run '{run_id}': schema/training_schema.json is unreadable ({one_line(exc, 200)})"
        ) from None


def _unpickle(run_id: str, root: Path, rel: str) -> Any:
    data = _read(run_id, root, rel)
    try:
        return pickle.loads(data)  # noqa: S301 - artifacts come from the configured store only
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign pickle raises anything
        raise ArtifactError(f"run '{run_id}': {rel} is unreadable ({one_line(exc, 200)})") from None


# -- logging and registering -------------------------------------------------------------------


@dataclass
class ModelArtifacts:
    """What a training run logs about its model, beside metrics and params."""

    schema: TrainingSchema
    preprocessor: Any
    estimator: Any
    texts: dict[str, str] = field(default_factory=dict)  # artifact path -> text
    binaries: dict[str, bytes] = field(default_factory=dict)  # artifact path -> bytes (plots)
    tables: dict[str, pa.Table] = field(default_factory=dict)  # artifact path -> Parquet
    example: dict[str, np.ndarray] = field(default_factory=dict)  # feature columns, a few rows


def log_model(artifacts: ModelArtifacts) -> str:
    """Log the separate artifacts and the unified pyfunc to the active run; its model URI."""
    import mlflow
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        texts = {
            **artifacts.texts,
            "schema/training_schema.json": json.dumps(artifacts.schema.to_dict(), indent=2),
        }
        binaries = {
            **artifacts.binaries,
            "preprocessor/preprocessor.pkl": pickle.dumps(artifacts.preprocessor),
            "estimator/estimator.pkl": pickle.dumps(artifacts.estimator),
        }
        for rel, text in texts.items():
            _place(root, rel).write_text(text)
        for rel, data in binaries.items():
            _place(root, rel).write_bytes(data)
        for rel, table in artifacts.tables.items():
            pq.write_table(table, _place(root, rel))
        mlflow.log_artifacts(str(root))

        with contextlib.redirect_stderr(io.StringIO()):  # MLflow's type-hint advice is not for us
            info = mlflow.pyfunc.log_model(
                name=PYFUNC_NAME,
                # models-from-code: the file imports ml.pyfunc (not imported here: loading it
                # makes MLflow print type-hint advice)
                python_model=str(Path(__file__).with_name("pyfunc_model.py")),
                artifacts={
                    "training_schema": str(root / "schema" / "training_schema.json"),
                    "preprocessor": str(root / "preprocessor" / "preprocessor.pkl"),
                    "estimator": str(root / "estimator" / "estimator.pkl"),
                },
                signature=_signature(artifacts.schema),
                input_example=_input_example(artifacts.schema, artifacts.example),
                pip_requirements=_pip_requirements(),
            )
    return str(info.model_uri)


RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)  # MLflow's own references
ALIAS = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_alias(alias: str) -> str:
    """An alias MLflow can store and resolve back to the version it names."""
    if not ALIAS.match(alias):
        raise ConfigError(f"--alias {alias[:70]!r}: expected 1 to 64 letters, digits, '-' or '_'")
    if RESERVED_ALIAS.match(alias):
        raise ConfigError(
            f"--alias '{alias}': reserved by MLflow ('latest' and v<number> name versions)"
        )
    return alias


def register_finished(
    name: str,
    run_id: str,
    model_uri: str,
    alias: str | None,
    tags: dict[str, str] | None = None,
) -> str:
    """A new version of `name` from a FINISHED run's logged model, the alias moved to it.

    If anything fails, the version is deleted again and the run marked FAILED, so no version
    ever points at a run that is not a finished training run."""
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    version: str | None = None
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # MLflow prints its own banner
            mv = mlflow.register_model(model_uri, name, tags={"run_id": run_id})
        version = str(mv.version)
        client.set_model_version_tag(name, version, "run_id", run_id)
        for key, value in (tags or {}).items():
            client.set_model_version_tag(name, version, key, value[:5000])
        if alias:
            client.set_registered_model_alias(name, alias, version)
        return version
    except BaseException as exc:
        with contextlib.suppress(Exception):
            if version is not None:
                client.delete_model_version(name, version)
            client.set_tag(run_id, "ml.error", f"registration failed: {one_line(exc, 400)}")
            client.set_terminated(run_id, "FAILED")
        if isinstance(exc, Exception) and not isinstance(exc, MLError):
            raise TrackingError(
                f"registering {name} failed: {one_line(exc, 300)}; the run is marked FAILED"
            ) from None
        raise


def _place(root: Path, rel: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _signature(schema: TrainingSchema) -> Any:
    """Numeric features are doubles (MLflow's advice for integers that may be null), strings
    are strings; the output is one double score per row."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    inputs: list[ColSpec | TensorSpec] = [
        ColSpec("string" if kind == "string" else "double", name)
        for name, kind in schema.features.items()
    ]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("double", "score")]))


def _input_example(schema: TrainingSchema, cols: dict[str, Any], n: int = 5) -> Any:
    import pandas as pd

    data = {}
    for name, kind in schema.features.items():
        values = list(cols[name][:n])
        if kind == "string":
            data[name] = pd.Series([None if v is None else str(v) for v in values], dtype=object)
        else:
            data[name] = pd.Series(values, dtype="float64")
    return pd.DataFrame(data)


def _pip_requirements() -> list[str]:
    """Explicit, pinned to what trained the model (inferring them costs seconds per run)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in (
        "mlflow-skinny",
        "xgboost-cpu",
        "econml",
        "scikit-learn",
        "numpy",
        "pandas",
        "pyarrow",
        "scipy",
    ):
        try:
            reqs.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            continue
    return reqs
