"""`ml train`: read the recipe's dbt model, check the contract, fit, evaluate, track, register.

A run that fails anywhere ends FAILED in MLflow and registers nothing: registration is the last
step, after every artifact is logged.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ml import population, registry
from ml.build import build_for_context, dbt_vars
from ml.config import Settings, dump_yaml
from ml.dbt import DbtProject
from ml.errors import MLError, TrainingError, estimator_failures, one_line
from ml.plan import Plan, plan
from ml.progress import Steps
from ml.recipe import Recipe, load_recipe, parse_context_params, resolve_context
from ml.tuning.space import check_search

if TYPE_CHECKING:
    import pyarrow as pa

    from ml.dataset import Split
    from ml.evaluate import Evaluation
    from ml.preprocess import Preprocessor
    from ml.promotion import Decision, Holder


@dataclass(frozen=True)
class Fitted:
    """What one training run produced, before it is logged."""

    metrics: dict[str, float]
    rows: dict[str, int]
    model_uri: str
    decision: Decision | None = None


@dataclass
class TrainResult:
    run_id: str
    model_name: str
    model_version: str
    metrics: dict[str, float]
    alias: str | None = None
    rows: dict[str, int] = field(default_factory=dict)
    decision: Decision | None = None  # the promotion gate's, when --alias was given

    @property
    def promoted(self) -> bool | None:
        if self.alias is None:
            return None
        return True if self.decision is None else self.decision.promoted

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "alias": self.alias,
            "promoted": self.promoted,
            "comparison": self.decision.to_dict() if self.decision else None,
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
    force_alias: bool = False,
    steps: Steps | None = None,
    recipe: Recipe | None = None,
    tags: dict[str, str] | None = None,
) -> TrainResult:
    """Train, evaluate, log and register a recipe's model; with `alias`, an uplift model takes
    it only through the promotion gate (ml/promotion.py) unless `force_alias`. `recipe` stands
    in for the file's (`ml tune` passes the tuned one), `tags` are added to the run's."""
    steps = steps or Steps(enabled=False)
    if alias is not None:
        registry.check_alias(alias)
    recipe = recipe or load_recipe(recipe_path)
    given = parse_context_params(context_params)
    context = resolve_context(recipe, given, "train")

    from ml import tracking

    with steps.step("checking the MLflow store"):
        tracking.configure(settings, create=True)
    project = DbtProject(settings)
    with steps.step("checking the recipe against the dbt project"):
        p = plan(recipe, str(recipe_path), project)
        if recipe.tuning is not None:
            check_search(recipe, p.task, p.label, p.allowed_modules)
    if build:
        build_for_context(settings, project, p, p.train_model, context, steps)
    gate, holdout = _compare_with(settings, p, context, alias, force_alias, steps)

    import mlflow

    exp_id = tracking.experiment_id(settings, recipe.experiment_name)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"train-{recipe.name}") as run:
        mlflow.set_tags(_tags(settings, p, context, tracking.git_commit(settings.root)))
        mlflow.set_tags(tags or {})
        mlflow.log_params(tracking.flatten(recipe.model_dump(mode="json")))
        try:
            result = _train_in_run(
                settings, project, p, context, dbt_vars(p, context), steps, gate, holdout
            )
        except BaseException as exc:
            mlflow.set_tag("ml.error", _error_text(exc))
            raise
    # The registry changes last, and only for a FINISHED run: killed before this line, the
    # run is not FINISHED and nothing was registered; a failed registration fails the run.
    decision = result.decision
    moves = alias if decision is None or decision.promoted else None
    tags = decision.tags() if decision else None
    with steps.step(f"registering {recipe.name}"):
        version = registry.register_finished(
            recipe.name, run.info.run_id, result.model_uri, moves, tags
        )
    return TrainResult(
        run.info.run_id, recipe.name, version, result.metrics, alias, result.rows, decision
    )


@dataclass(frozen=True)
class _Gate:
    alias: str | None
    force: bool
    holder: Holder | None


def _compare_with(
    settings: Settings,
    p: Plan,
    context: dict[str, Any],
    alias: str | None,
    force_alias: bool,
    steps: Steps,
) -> tuple[_Gate, list[pa.Table]]:
    """Before the run: the alias's current holder (the gate compares with it) and the holdout
    campaigns' rows, so a mistake in either leaves no run behind."""
    gate = _Gate(alias, force_alias, None)
    if alias and p.task == "uplift":
        from ml.promotion import current_holder

        with steps.step(f"loading {p.recipe.name}@{alias} to compare with"):
            gate = _Gate(alias, force_alias, current_holder(p.recipe.name, alias))
    holdout: list[pa.Table] = []
    if p.recipe.evaluation.holdout_contexts:  # checked before the run: a mistake leaves no run
        from ml import heldout

        with steps.step("reading the holdout contexts"):
            holdout = heldout.read_holdout_contexts(settings, p, context, _columns(p, gate))
    return gate, holdout


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, MLError):
        return exc.message
    return one_line(exc, 500) or type(exc).__name__


def _train_in_run(
    settings: Settings,
    project: DbtProject,
    p: Plan,
    context: dict[str, Any],
    dbt_vars: dict[str, Any],
    steps: Steps,
    gate: _Gate,
    holdout: list[pa.Table],
) -> Fitted:
    """Read, check, split, fit, evaluate and log, inside the active MLflow run."""
    import mlflow

    from ml import dataset, heldout, promotion

    table = _read_population(settings, p, context, steps, _columns(p, gate))
    # dbt compiles the model's SQL for the run's lineage while the estimator fits
    compiling = _background(_compiled_sql, project, p, dbt_vars)
    d = p.recipe.data
    with steps.step("checking the data contract"):
        heldout.check_population(table, p, context)
    table = dataset.in_key_order(table, list(d.entity_keys))  # keys are unique: a total order
    y = dataset.vector(table, d.target)
    t = dataset.vector(table, d.treatment) if d.treatment else None
    strata = (t * 2 + (y > 0)) if t is not None else (y if p.task == "classification" else None)
    split = dataset.split_rows(
        table, p.recipe.split, p.recipe.seed, strata, str(p.train_model.relation)
    )
    population = table.num_rows  # the training context's customers, before any holdout campaign
    if holdout:
        table, split = heldout.join_holdout(table, split, holdout)
        y = dataset.vector(table, d.target)
        t = dataset.vector(table, d.treatment) if d.treatment else None
    name = p.recipe.model.class_path.rsplit(".", 1)[-1]
    with steps.step(f"fitting {name} on {len(split.train):,} rows"):
        pre, estimator, train_cols = _fit(p, table, split, y, t)
    propensity = heldout.known_propensity(table, t, p) if t is not None else None
    with steps.step(f"scoring {len(split.test):,} held-out rows"):
        test_cols, score = _score_held_out(p, table, split, pre, estimator)
    with steps.step(f"evaluating: {_evaluation_work(p)}"):
        ev = _evaluate(p, split, y, t, score, (pre, estimator), propensity, population)
    decision = None
    if gate.alias and t is not None and propensity is not None:
        with steps.step(f"comparing with @{gate.alias}"):
            decision = promotion.compare_on_held_out(
                p, table, split, y, t, propensity, score, ev, gate.alias, gate.holder, gate.force
            )
        mlflow.set_tags(decision.tags())
    rows = {"population": table.num_rows, "train": len(split.train), "test": len(split.test)}
    with steps.step("logging to MLflow"):
        model_uri = _log_run(
            settings, p, table, split, (pre, estimator), ev, decision, compiling, rows,
            (train_cols, test_cols, score),
        )  # fmt: skip
    return Fitted(ev.metrics, rows, model_uri, decision)


def _log_run(
    settings: Settings,
    p: Plan,
    table: pa.Table,
    split: Split,
    fitted: tuple[Preprocessor, Any],
    ev: Evaluation,
    decision: Decision | None,
    compiling: Future[str],
    rows: dict[str, int],
    columns: tuple[dict[str, Any], dict[str, Any], np.ndarray],
) -> str:
    """Metrics, artifacts, the policy curve, the report and the model; its model URI."""
    import mlflow

    from ml import run_report
    from ml.drift import reference_profile

    (pre, estimator), (train_cols, test_cols, score) = fitted, columns
    mlflow.log_metrics(ev.metrics)
    mlflow.log_metrics({f"rows_{k}": float(v) for k, v in rows.items()})
    artifacts = _artifacts(settings, p, pre, estimator, ev, compiling.result())
    artifacts.tables["evaluation/test_predictions.parquet"] = _test_predictions(
        p, table, split.test, score
    )
    artifacts.example = test_cols
    # the training distribution batch scoring measures drift against
    artifacts.texts["schema/reference_profile.json"] = json.dumps(
        reference_profile(train_cols, artifacts.schema.features)
    )
    if "policy_curve" in ev.tables:
        artifacts.texts[registry.POLICY_CURVE] = json.dumps(
            run_report.policy_curve_rows(ev.tables["policy_curve"], len(split.test))
        )
    artifacts.texts["report/report.html"] = run_report.render(p, ev, decision)
    return registry.log_model(artifacts)


def _columns(p: Plan, gate: _Gate) -> list[str]:
    """The recipe's columns, and the alias holder's features to score the same held-out rows
    (where the training model has them)."""
    extra = list(gate.holder.model.schema.features) if gate.holder else []
    return list(dict.fromkeys([*p.train_columns, *(c for c in extra if c in p.kinds)]))


def _read_population(
    settings: Settings, p: Plan, context: dict[str, Any], steps: Steps, columns: list[str]
) -> pa.Table:
    with steps.step(f"reading {p.train_model.relation}"):
        return population.read_training_population(settings, p, context, columns, "ml train")


def _fit(
    p: Plan, table: pa.Table, split: Split, y: np.ndarray, t: np.ndarray | None
) -> tuple[Preprocessor, Any, dict[str, Any]]:
    """The preprocessor and the estimator fitted on the training rows."""
    from ml import dataset
    from ml.estimators import build as build_estimator
    from ml.model import fit_estimator
    from ml.preprocess import Preprocessor

    recipe = p.recipe
    train_cols = dataset.feature_columns(table, p.features, split.train)
    pre = Preprocessor.fit(train_cols, _kinds(p), recipe.preprocessing)
    X_train = pre.transform(train_cols)
    estimator = build_estimator(
        recipe.model.class_path,
        recipe.model.params,
        recipe.seed,
        allowed_modules=p.allowed_modules,
    )
    with estimator_failures(f"{p.label}: model: {recipe.model.class_path} failed to fit"):
        fit_estimator(
            estimator, p.task, X_train, y[split.train], None if t is None else t[split.train]
        )
    return pre, estimator, train_cols


def _score_held_out(
    p: Plan, table: pa.Table, split: Split, pre: Preprocessor, estimator: Any
) -> tuple[dict[str, Any], np.ndarray]:
    """The held-out rows' feature columns and the model's scores for them."""
    from ml import dataset
    from ml.model import predict_matrix

    test_cols = dataset.feature_columns(table, p.features, split.test)
    try:
        score = predict_matrix(estimator, p.task, pre.transform(test_cols))
    except Exception as exc:  # noqa: BLE001 - the estimator's own message is the useful part
        raise TrainingError(
            f"{p.recipe.model.class_path} failed to predict: {one_line(exc, 300)}"
        ) from None
    return test_cols, score


def _evaluation_work(p: Plan) -> str:
    """What the evaluation step does, for its progress line."""
    spec = p.recipe.evaluation
    work = [f"{spec.bootstrap_replicates} bootstrap resamples", "policy value"]
    if p.task != "uplift":
        work = ["metrics"]
    return ", ".join([*work, "plots"] if spec.plots else work)


def _evaluate(
    p: Plan,
    split: Split,
    y: np.ndarray,
    t: np.ndarray | None,
    score: np.ndarray,
    model: tuple[Preprocessor, Any],
    propensity: np.ndarray | None,
    population: int,
) -> Evaluation:
    """Metrics, intervals, policy value and plots on the held-out rows (`population`: the rows
    of the training context, the campaign size the net value figure plans for unless the recipe
    gives one)."""
    from ml.evaluate import evaluate
    from ml.model import feature_importances

    pre, estimator = model
    return evaluate(
        p.task,
        y[split.test],
        score,
        None if t is None else t[split.test],
        wanted=p.recipe.evaluation.metrics,
        plots=p.recipe.evaluation.plots,
        feature_names=pre.feature_names,
        importances=feature_importances(estimator, pre.width),
        propensity=None if propensity is None else propensity[split.test],
        spec=p.recipe.evaluation,
        population=population,
    )


def _kinds(p: Plan) -> dict[str, str]:
    return {f: p.kinds[f] for f in p.features}


def _artifacts(
    settings: Settings,
    p: Plan,
    pre: Preprocessor,
    estimator: Any,
    ev: Evaluation,
    compiled_sql: str,
) -> registry.ModelArtifacts:
    """The model and the files that explain it: recipe, redacted config, compiled SQL, the
    training schema, evaluation tables and plots."""
    from ml.model import TrainingSchema
    from ml.sqlcompile import model_sql_files

    d = p.recipe.data
    schema = TrainingSchema(
        recipe=p.recipe.name,
        task=p.task,
        entity_keys=list(d.entity_keys),
        features=_kinds(p),
        context=p.context_columns,
        categories={c.name: c.categories for c in pre.categorical},
        target=d.target,
        treatment=d.treatment,
    )
    texts = {
        "recipe/recipe.yaml": dump_yaml(p.recipe.model_dump(mode="json")),
        "config/config.yaml": dump_yaml(settings.redacted()),
        f"dbt/{p.train_model.name}.sql": compiled_sql,
        "preprocessor/preprocessor.json": json.dumps(pre.describe(), indent=2, default=str),
        **{
            f"evaluation/{name}.json": json.dumps(table, indent=2, default=str)
            for name, table in ev.tables.items()
        },
    }
    # the model as SQL per dialect, where it compiles (`ml score --engine sql`, `ml compile`)
    texts.update(model_sql_files(schema, pre, estimator, p.score_model.name))
    plots = {f"plots/{name}": png for name, png in ev.plots.items()}
    return registry.ModelArtifacts(schema, pre, estimator, texts, plots)


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


def _test_predictions(p: Plan, table: pa.Table, rows: np.ndarray, score: np.ndarray) -> pa.Table:
    """The held-out rows (keys, context, outcome) with their scores: metrics can be recomputed
    from them, or checked against ground truth joined on the keys."""
    import pyarrow as pa

    d = p.recipe.data
    columns = [*d.entity_keys, *p.filter_columns.values(), d.target]
    if d.treatment:
        columns.append(d.treatment)
    held_out = table.select(list(dict.fromkeys(columns))).take(pa.array(rows))
    return held_out.append_column("score", pa.array(score, type=pa.float64()))


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
