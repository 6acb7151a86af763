"""`ml score`: reassemble a trained model from its run's separate artifacts, check the scoring
population against the training schema, stream it through the model, and replace this
context's slice of `<predictions schema>.<recipe>` atomically.
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ml import contract, population, registry, score_sql
from ml.build import build_for_context
from ml.config import Settings
from ml.dbt import DbtProject
from ml.errors import TrainingError
from ml.kinds import arrow_type, value_kind
from ml.model import ScoringModel, TrainingSchema
from ml.plan import Plan, plan
from ml.progress import Steps
from ml.recipe import parse_context_params, resolve_context
from ml.registry import ModelRef, TrainedModel
from ml.warehouse import Warehouse, warehouse_dialect

if TYPE_CHECKING:
    import pyarrow as pa

    from ml.drift import DriftAccumulator


@dataclass
class ScoreResult:
    rows: int
    relation: str
    input_relation: str
    seconds: float
    run_id: str
    score_run_id: str
    model_name: str
    model_version: str | None
    context: dict[str, Any]
    drifted: list[str] = field(default_factory=list)
    engine: str = "python"
    cpu_seconds: float = 0.0  # this process's CPU (all threads) over the same span as seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "relation": self.relation,
            "input_relation": self.input_relation,
            "seconds": round(self.seconds, 3),
            "run_id": self.run_id,
            "score_run_id": self.score_run_id,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "context": self.context,
            "drifted_features": self.drifted,
            "engine": self.engine,
            "cpu_seconds": round(self.cpu_seconds, 3),
        }


@dataclass(frozen=True)
class Target:
    """Where one scoring call reads and writes: the population, its filter and the slice."""

    plan: Plan
    context: dict[str, Any]
    filters: dict[str, Any]
    schema_name: str  # the predictions schema

    @property
    def output(self) -> str:
        return f"{self.schema_name}.{self.plan.recipe.name}"

    @property
    def relation(self) -> str:
        return str(self.plan.score_model.relation)


def score(
    settings: Settings,
    ref: ModelRef,
    context_params: str | dict[str, Any] | None = None,
    *,
    build: bool = False,
    steps: Steps | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    engine: str | None = None,
) -> ScoreResult:
    """Score the recipe's population for one context and replace its slice of the score table,
    in Python (`engine` python: the rows stream through this process) or in the warehouse
    (sql: the model compiled to its dialect; default `predictions.engine`)."""
    steps = steps or Steps(enabled=False)
    engine = engine or settings.predictions.engine
    given = parse_context_params(context_params)
    trained = registry.open_trained(
        settings, ref, steps, "loading the model from its run's artifacts"
    )
    if engine == "sql":  # an estimator the compiler refuses is refused before any work
        with steps.step(f"compiling the model to {warehouse_dialect(settings)} SQL"):
            score_sql.compile_for(trained, warehouse_dialect(settings), "population", [])
    from ml.sources import check_writable

    check_writable(settings, trained.recipe)  # before any side effect: the build, the slice
    target = _target(settings, trained, given, build, steps)
    from ml.warehouse import connect

    with connect(settings) as wh:
        with steps.step("opening the warehouse"):
            wh.open()
        # `seconds` covers the scoring itself: population checks, streaming, writing, the swap
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        # The Python engine on a warehouse in this process proves the keys unique as they
        # stream (KeyOrder), counting distinct keys only if their order did not
        in_stream = engine == "python" and wh.in_process
        with steps.step(f"checking {target.relation} against the training schema"):
            total, _ = population.check_scoring_population(
                wh,
                settings,
                target.plan,
                trained.model.schema,
                target.context,
                "ml score",
                count_distinct=not in_stream,
            )
        if engine == "sql":
            rows, drift = _score_in_warehouse(
                wh, target, trained, total, steps, settings.predictions.drift_sample_rows
            )
            if on_batch:
                on_batch(rows, total)
        else:
            drift = _drift(trained, total, settings.predictions.drift_sample_rows)
            with steps.step(f"scoring {total:,} rows into {target.output}"):
                rows = _write_scores(
                    settings, wh, target, trained, drift, total, on_batch, in_stream
                )
        if trained.policy_curve:
            with steps.step(f"writing the held-out policy curve to {target.output}__policy"):
                _write_policy_curve(wh, target, trained)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    report = drift.report() if drift else {}
    drifted = sorted(n for n, r in report.items() if r["drifted"])
    with steps.step("logging the scoring run to MLflow"):
        score_run_id = _log_scoring_run(
            settings, trained, target, rows, seconds, report, drifted, engine
        )
    from ml.sources import ensure_declared

    ensure_declared(settings, trained.recipe, policy=bool(trained.policy_curve))
    return ScoreResult(
        rows,
        target.output,
        target.relation,
        seconds,
        trained.run_id,
        score_run_id,
        trained.model_name,
        trained.model_version,
        target.context,
        drifted,
        engine,
        cpu,
    )


def _target(
    settings: Settings, trained: TrainedModel, given: dict[str, Any], build: bool, steps: Steps
) -> Target:
    """The recipe the model was trained with, checked against today's dbt project (and the
    scoring model built first when asked)."""
    recipe = trained.recipe
    context = resolve_context(recipe, given, "score")
    project = DbtProject(settings)
    with steps.step("checking the recipe against the dbt project"):
        p = plan(recipe, f"run {trained.run_id}: recipe", project)
    if build:
        build_for_context(settings, project, p, p.score_model, context, steps)
    filters = p.filters(context)
    return Target(p, context, filters, settings.predictions.schema_name)


def _drift(trained: TrainedModel, total: int, sample_rows: int) -> DriftAccumulator | None:
    """PSI from a systematic sample of about `predictions.drift_sample_rows` rows, whatever the
    population."""
    if not trained.profile:
        return None
    from ml.drift import DriftAccumulator

    return DriftAccumulator(trained.profile, max(1, total // sample_rows))


def _write_scores(
    settings: Settings,
    wh: Warehouse,
    target: Target,
    trained: TrainedModel,
    drift: DriftAccumulator | None,
    total: int,
    on_batch: Callable[[int, int], None] | None,
    keys_in_stream: bool,
) -> int:
    """Stream the population through the model into a new slice; returns the rows written.
    With `keys_in_stream`, the keys' uniqueness is checked here, before the slice goes live:
    by their order as they pass, else by the warehouse."""
    from ml.fastpredict import streaming_threads

    p, schema = target.plan, trained.model.schema
    order = population.KeyOrder(schema.entity_keys) if keys_in_stream else None
    slice_, typed = _slice(target, trained)
    columns = _unique([*schema.entity_keys, *target.filters, *schema.features])
    # one core reads and writes (the warehouse's client, DuckDB on one thread); the model
    # predicts on the others: threads beyond that only wait for each other
    threads = settings.predictions.threads or streaming_threads()
    with (
        wh.streaming(),
        trained.model.threads_at_most(threads),
        wh.slice_writer(target.schema_name, p.recipe.name, slice_, typed) as writer,
    ):
        batches = wh.read_batches(
            p.score_model.relation, columns, target.filters, settings.predictions.batch_size
        )
        _pipeline(
            batches,
            trained.model,
            target,
            schema,
            drift,
            order,
            writer.write,
            total,
            on_batch,
        )
        if order is not None and not order.increasing:
            population.require_unique_keys(
                wh, p.score_model.relation, schema.entity_keys, target.filters
            )
    return writer.rows


def _slice(target: Target, trained: TrainedModel) -> tuple[dict[str, Any], dict[str, Any]]:
    """The slice's key (context columns and run id) and the constants stored with it."""
    p, context = target.plan, target.context
    scored_at = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    slice_ = {**{p.context_columns[n]: v for n, v in context.items()}, "run_id": trained.run_id}
    constants = {
        **{p.context_columns[n]: v for n, v in context.items() if n not in p.filter_columns},
        "model_name": trained.model_name,
        "model_version": trained.model_version,
        "run_id": trained.run_id,
        "scored_at": scored_at,
    }
    return slice_, {name: (value, _arrow_type(value)) for name, value in constants.items()}


def _score_in_warehouse(
    wh: Warehouse,
    target: Target,
    trained: TrainedModel,
    total: int,
    steps: Steps,
    sample_rows: int,
) -> tuple[int, DriftAccumulator | None]:
    """The SQL engine: the same checks on the values, then one statement writes the slice
    inside the warehouse; drift from a sample the warehouse draws."""
    p, schema = target.plan, trained.model.schema
    rel = p.score_model.relation
    with steps.step(f"checking the feature values of {target.relation} in the warehouse"):
        score_sql.check_values(wh, rel, schema.features, target.filters)
    passthrough = _unique([*schema.entity_keys, *target.filters])
    slice_, typed = _slice(target, trained)
    with (
        steps.step(f"scoring {total:,} rows in the warehouse into {target.output}"),
        wh.slice_writer(target.schema_name, p.recipe.name, slice_, typed) as writer,
    ):
        score_sql.write_scores(wh, writer, rel, trained, passthrough, target.filters)
    with steps.step("sampling the population for the drift report"):
        drift = score_sql.drift_sample(
            wh, rel, schema.features, target.filters, trained.profile, sample_rows
        )
    return writer.rows, drift


def _write_policy_curve(wh: Warehouse, target: Target, trained: TrainedModel) -> None:
    """The training run's held-out policy curve, one slice per run: what campaign plans in dbt
    read their expected incremental outcomes and intervals from."""
    import pyarrow as pa

    from ml.sources import POLICY_COLUMNS, policy_table_name

    columns = [c for c in POLICY_COLUMNS if c not in ("run_id", "model_name", "model_version")]
    curve = trained.policy_curve or []
    table = pa.table(
        {
            c: pa.array([row[c] for row in curve], pa.int64() if c == "n_holdout" else pa.float64())
            for c in columns
        }
    )
    constants = {
        "model_name": (trained.model_name, pa.string()),
        "model_version": (trained.model_version, pa.string()),
        "run_id": (trained.run_id, pa.string()),
    }
    name = policy_table_name(trained.recipe.name)
    slice_ = {"run_id": trained.run_id}
    with wh.slice_writer(target.schema_name, name, slice_, constants, current=False) as writer:
        writer.write(table)


def _pipeline(
    batches: Iterator[Any],
    model: ScoringModel,
    target: Target,
    schema: TrainingSchema,
    drift: DriftAccumulator | None,
    order: population.KeyOrder | None,
    write: Callable[[Any], None],
    total: int,
    on_batch: Callable[[int, int], None] | None,
) -> None:
    """Read ahead and write behind in threads, so I/O overlaps prediction; memory stays bounded
    by a few batches."""
    import numpy as np
    import pyarrow as pa

    from ml.dataset import feature_columns

    write_q: queue.Queue[Any] = queue.Queue(maxsize=2)
    failure: list[BaseException] = []

    def writer() -> None:
        written = 0
        while (item := write_q.get()) is not None:
            if failure:
                continue
            try:
                write(item)
                written += item.num_rows
                if on_batch:  # progress counts rows written (not visible until the swap)
                    on_batch(written, total)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                failure.append(exc)

    thread = threading.Thread(target=writer, name="ml-score-writer", daemon=True)
    thread.start()
    try:
        for batch in _read_ahead(batches):
            if failure:
                break
            table = pa.Table.from_batches([batch])
            contract.check_feature_values(table, schema.features, target.relation)
            cols = feature_columns(table, list(schema.features))
            scores = model.predict_columns(cols)
            if not np.all(np.isfinite(scores)):
                raise TrainingError(
                    "the model produced NaN or infinite scores; nothing was written"
                )
            if drift is not None:
                drift.add(cols)
            # copies: a zero-copy slice would keep the whole input batch alive after the write
            rows = np.arange(table.num_rows)
            out = {k: table.column(k).take(rows) for k in (*schema.entity_keys, *target.filters)}
            out["score"] = pa.array(scores, pa.float64())
            scored = pa.table(out)
            if order is not None:
                order.add(scored)
            write_q.put(scored)
    finally:
        write_q.put(None)
        thread.join()
    if failure:
        raise failure[0]


def _read_ahead(batches: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Iterate `batches` in a thread, `depth` ahead; stops the thread when the consumer stops."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    sentinel = object()
    stop = threading.Event()
    errors: list[BaseException] = []

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for b in batches:
                if not put(b):
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            errors.append(exc)
        finally:
            put(sentinel)

    thread = threading.Thread(target=reader, name="ml-score-reader", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not sentinel:
            yield item
    finally:
        stop.set()
        thread.join(timeout=30)
    if errors:
        raise errors[0]


def _arrow_type(value: Any) -> pa.DataType:
    return arrow_type(value_kind(value))


def _log_scoring_run(
    settings: Settings,
    trained: TrainedModel,
    target: Target,
    rows: int,
    seconds: float,
    drift: dict[str, Any],
    drifted: list[str],
    engine: str,
) -> str:
    import mlflow

    from ml import tracking

    recipe, context = trained.recipe, target.context
    exp_id = tracking.experiment_id(settings, recipe.experiment_name)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"score-{recipe.name}") as run:
        mlflow.set_tags(
            {
                "ml.kind": "score",
                "ml.recipe": recipe.name,
                "ml.source_run_id": trained.run_id,
                "ml.model_version": str(trained.model_version),
                "ml.app_env": settings.env,
                "ml.dbt_target": settings.dbt.target,
                "ml.context": json.dumps(context, default=str, sort_keys=True),
                "ml.drifted_features": ",".join(drifted),
                "ml.engine": engine,
            }
        )
        mlflow.log_params(
            {
                "input_relation": target.relation,
                "output_relation": target.output,
                "engine": engine,
                **{f"context.{k}": str(v) for k, v in context.items()},
            }
        )
        metrics = {
            "rows": float(rows),
            "seconds": seconds,
            "rows_per_second": rows / seconds if seconds else 0.0,
        }
        metrics.update({f"psi.{name}": r["psi"] for name, r in drift.items()})
        mlflow.log_metrics(metrics)
        mlflow.log_dict(
            {"threshold": 0.2, "features": drift, "drifted": drifted}, "drift/drift_report.json"
        )
        return str(run.info.run_id)


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process, every thread (DuckDB's and XGBoost's too)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
