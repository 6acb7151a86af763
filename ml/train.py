"""`ml train`: read the recipe's dbt model, check the contract, fit, evaluate, track, register.

A run that fails anywhere ends FAILED in MLflow and registers nothing: registration is the last
step, after every artifact is logged.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import tempfile
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ml import contract
from ml.config import Settings, dump_yaml
from ml.dbt import DbtProject
from ml.errors import MLError, TrainingError, WarehouseError, one_line
from ml.plan import Plan, plan
from ml.progress import Steps
from ml.recipe import load_recipe, parse_context_params, resolve_context


@dataclass
class TrainResult:
    run_id: str
    model_name: str
    model_version: str
    metrics: dict[str, float]
    alias: str | None = None
    rows: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "alias": self.alias,
            "metrics": self.metrics,
            "rows": self.rows,
        }


def train(
    settings: Settings,
    recipe_path: str | Path,
    context_params: str | dict[str, Any] | None = None,
    *,
    build: bool = False,
    alias: str | None = None,
    steps: Steps | None = None,
) -> TrainResult:
    steps = steps or Steps(enabled=False)
    recipe = load_recipe(recipe_path)
    given = (
        context_params if isinstance(context_params, dict) else parse_context_params(context_params)
    )
    context = resolve_context(recipe, given, "train")

    from ml import tracking

    with steps.step("checking the MLflow store"):
        tracking.configure(settings)
    project = DbtProject(settings)
    with steps.step("checking the recipe against the dbt project"):
        p = plan(recipe, str(recipe_path), project)
    dbt_vars = {
        name: value for name, value in context.items() if "var" in recipe.context[name].apply
    }
    if build:
        with steps.step(f"dbt build --select +{p.train_model.name}"):
            project.build(f"+{p.train_model.name}", vars=dbt_vars)

    import mlflow

    exp_id = tracking.experiment_id(settings, recipe.experiment_name)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"train-{recipe.name}") as run:
        mlflow.set_tags(_tags(settings, p, context, tracking.git_commit(settings.root)))
        mlflow.log_params(tracking.flatten(recipe.model_dump(mode="json")))
        try:
            result = _train_in_run(settings, project, p, context, dbt_vars, steps)
            version = _register(p, run.info.run_id, result["model_uri"], alias, steps)
        except MLError as exc:
            mlflow.set_tag("ml.error", exc.message)
            raise
        except Exception as exc:
            mlflow.set_tag("ml.error", one_line(exc, 500))
            raise
    return TrainResult(
        run.info.run_id, recipe.name, version, result["metrics"], alias, result["rows"]
    )


def _train_in_run(
    settings: Settings,
    project: DbtProject,
    p: Plan,
    context: dict[str, Any],
    dbt_vars: dict[str, Any],
    steps: Steps,
) -> dict[str, Any]:
    import mlflow

    from ml import dataset
    from ml.drift import reference_profile
    from ml.estimators import build as build_estimator
    from ml.evaluate import evaluate
    from ml.model import TrainingSchema, feature_importances, fit_estimator, predict_matrix
    from ml.preprocess import Preprocessor
    from ml.warehouse import connect

    recipe, d = p.recipe, p.recipe.data
    relation = str(p.train_model.relation)
    filters = {
        p.filter_columns[name]: value for name, value in context.items() if name in p.filter_columns
    }

    with steps.step(f"reading {relation}"), connect(settings) as wh:
        if not wh.exists(p.train_model.relation):
            raise WarehouseError(
                f"relation {relation} (dbt model {p.train_model.name}) is not built for target {settings.dbt.target}: "
                f"run `dbt build --select +{p.train_model.name} --target {settings.dbt.target}` or `ml train --build`"
            )
        expected = {c: p.kinds[c] for c in p.train_columns}
        contract.check_columns(wh.columns(p.train_model.relation), expected, relation)
        table = wh.read_arrow(p.train_model.relation, p.train_columns, filters)

    # dbt compiles the model's SQL for the run's lineage while the estimator fits
    compiling = _background(_compiled_sql, project, p, dbt_vars)

    with steps.step("checking the data contract"):
        contract.check_not_empty(table, relation, context)
        contract.check_keys(table, d.entity_keys, relation)
        contract.check_target(table, d.target, p.task, relation)
        if d.treatment:
            contract.check_treatment(table, d.treatment, relation)
    table = dataset.in_key_order(table, list(d.entity_keys))  # keys are unique: a total order

    y = dataset.vector(table, d.target)
    t = dataset.vector(table, d.treatment) if d.treatment else None
    strata = (t * 2 + (y > 0)) if t is not None else (y if p.task == "classification" else None)
    split = dataset.split_rows(table, recipe.split, recipe.seed, strata, relation)
    kinds = {f: p.kinds[f] for f in p.features}

    with steps.step(
        f"fitting {recipe.model.class_path.rsplit('.', 1)[-1]} on {len(split.train):,} rows"
    ):
        train_cols = dataset.feature_columns(table, p.features, split.train)
        pre = Preprocessor.fit(train_cols, kinds, recipe.preprocessing)
        X_train = pre.transform(train_cols)
        estimator = build_estimator(recipe.model.class_path, recipe.model.params, recipe.seed)
        try:
            fit_estimator(
                estimator, p.task, X_train, y[split.train], None if t is None else t[split.train]
            )
        except MLError:
            raise
        except Exception as exc:  # noqa: BLE001 - the estimator's own message is the useful part
            raise TrainingError(
                f"{p.label}: model: {recipe.model.class_path} failed to fit: {one_line(exc, 300)}"
            ) from None

    with steps.step(f"evaluating on {len(split.test):,} held-out rows"):
        test_cols = dataset.feature_columns(table, p.features, split.test)
        X_test = pre.transform(test_cols)
        try:
            score = predict_matrix(estimator, p.task, X_test)
        except Exception as exc:  # noqa: BLE001
            raise TrainingError(
                f"{recipe.model.class_path} failed to predict: {one_line(exc, 300)}"
            ) from None
        ev = evaluate(
            p.task,
            y[split.test],
            score,
            None if t is None else t[split.test],
            wanted=recipe.evaluation.metrics,
            plots=recipe.evaluation.plots,
            feature_names=pre.feature_names,
            importances=feature_importances(estimator, X_train.shape[1]),
        )
    rows = {
        "population": table.num_rows,
        "train": int(len(split.train)),
        "test": int(len(split.test)),
    }

    schema = TrainingSchema(
        recipe=recipe.name,
        task=p.task,
        entity_keys=list(d.entity_keys),
        features=kinds,
        context=p.context_columns,
        categories={c.name: c.categories for c in pre.categorical},
        target=d.target,
        treatment=d.treatment,
    )
    with steps.step("logging to MLflow"):
        mlflow.log_metrics(ev.metrics)
        mlflow.log_metrics({f"rows_{k}": float(v) for k, v in rows.items()})
        compiled = compiling.result()
        # the training distribution batch scoring measures drift against
        mlflow.log_dict(reference_profile(train_cols, kinds), "schema/reference_profile.json")
        predictions = _test_predictions(p, table, split.test, score)
        model_uri = _log_artifacts(
            settings, p, schema, pre, estimator, ev, compiled, test_cols, score, predictions
        )
    return {"metrics": ev.metrics, "rows": rows, "model_uri": model_uri}


def _background(fn: Any, *args: Any) -> Future[Any]:
    """Run fn(*args) on a daemon thread; the caller collects the result later."""
    future: Future[Any] = Future()

    def work() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - surfaced by future.result()
            future.set_exception(exc)

    threading.Thread(target=work, name="ml-background", daemon=True).start()
    return future


def _compiled_sql(project: DbtProject, p: Plan, dbt_vars: dict[str, Any]) -> str:
    try:
        return project.compiled_sql(p.train_model.name, vars=dbt_vars)
    except MLError:  # compiling needs the warehouse; the raw SQL still documents the model
        return p.train_model.raw_code


def _log_artifacts(
    settings: Settings,
    p: Plan,
    schema: Any,
    pre: Any,
    estimator: Any,
    ev: Any,
    compiled_sql: str,
    example_cols: dict[str, Any],
    example_scores: np.ndarray,
    test_predictions: Any,
) -> str:
    import mlflow
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = {
            "recipe/recipe.yaml": dump_yaml(p.recipe.model_dump(mode="json")),
            "config/config.yaml": dump_yaml(settings.redacted()),
            f"dbt/{p.train_model.name}.sql": compiled_sql,
            "schema/training_schema.json": json.dumps(schema.to_dict(), indent=2),
            "preprocessor/preprocessor.json": json.dumps(pre.describe(), indent=2, default=str),
        }
        for name, table in ev.tables.items():
            files[f"evaluation/{name}.json"] = json.dumps(table, indent=2, default=str)
        for rel, text in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        for name, png in ev.plots.items():
            (root / "plots").mkdir(exist_ok=True)
            (root / "plots" / name).write_bytes(png)
        (root / "preprocessor" / "preprocessor.pkl").write_bytes(pickle.dumps(pre))
        (root / "estimator").mkdir()
        (root / "estimator" / "estimator.pkl").write_bytes(pickle.dumps(estimator))
        (root / "evaluation").mkdir(exist_ok=True)
        pq.write_table(test_predictions, root / "evaluation" / "test_predictions.parquet")
        mlflow.log_artifacts(str(root))

        example = _input_example(schema, example_cols)
        signature = _signature(schema)
        with contextlib.redirect_stderr(io.StringIO()):  # MLflow's type-hint advice is not for us
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(Path(__file__).with_name("pyfunc_model.py")),  # models-from-code
                artifacts={
                    "training_schema": str(root / "schema" / "training_schema.json"),
                    "preprocessor": str(root / "preprocessor" / "preprocessor.pkl"),
                    "estimator": str(root / "estimator" / "estimator.pkl"),
                },
                signature=signature,
                input_example=example,
                pip_requirements=_pip_requirements(),
            )
    return info.model_uri


def _test_predictions(p: Plan, table: Any, rows: np.ndarray, score: np.ndarray) -> Any:
    """The held-out rows (keys, context, outcome) with their scores: metrics can be recomputed
    from them, or checked against ground truth joined on the keys."""
    import pyarrow as pa

    d = p.recipe.data
    columns = [*d.entity_keys, *p.filter_columns.values(), d.target]
    if d.treatment:
        columns.append(d.treatment)
    held_out = table.select(list(dict.fromkeys(columns))).take(pa.array(rows))
    return held_out.append_column("score", pa.array(score, type=pa.float64()))


def _signature(schema: Any) -> Any:
    """Numeric features are doubles (MLflow's advice for integers that may be null), strings
    are strings; the output is one double score per row."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    inputs = [
        ColSpec("string" if kind == "string" else "double", name)
        for name, kind in schema.features.items()
    ]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("double", "score")]))


def _input_example(schema: Any, cols: dict[str, Any], n: int = 5) -> Any:
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


def _register(p: Plan, run_id: str, model_uri: str, alias: str | None, steps: Steps) -> str:
    import mlflow
    from mlflow.tracking import MlflowClient

    with steps.step(f"registering {p.recipe.name}"):
        with contextlib.redirect_stderr(io.StringIO()):  # MLflow prints its own banner
            mv = mlflow.register_model(model_uri, p.recipe.name, tags={"run_id": run_id})
        client = MlflowClient()
        client.set_model_version_tag(p.recipe.name, mv.version, "run_id", run_id)
        if alias:
            client.set_registered_model_alias(p.recipe.name, alias, mv.version)
    return str(mv.version)


def _tags(settings: Settings, p: Plan, context: dict[str, Any], commit: str) -> dict[str, str]:
    return {
        "ml.kind": "train",
        "ml.recipe": p.recipe.name,
        "ml.task": p.task,
        "ml.git_commit": commit,
        "ml.app_env": settings.env,
        "ml.dbt_target": settings.dbt.target,
        "ml.dbt_model": p.train_model.name,
        "ml.dbt_model_checksum": p.train_model.checksum,
        "ml.relation": str(p.train_model.relation),
        "ml.context": json.dumps(context, default=str, sort_keys=True),
        **{f"ml.context.{k}": str(v) for k, v in context.items()},
    }
