"""`ml score`: reassemble a trained model from its run's separate artifacts, check the scoring
population against the training schema, stream it through the model, and replace this
context's slice of `<predictions schema>.<recipe>` atomically.
"""

from __future__ import annotations

import datetime as dt
import json
import pickle
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml import contract
from ml.config import Settings
from ml.dbt import DbtProject
from ml.errors import ContractError, TrainingError, WarehouseError, one_line
from ml.model import ScoringModel, TrainingSchema
from ml.plan import Plan, plan
from ml.progress import Steps
from ml.recipe import Recipe, parse_context_params, recipe_from_dict, resolve_context
from ml.tracking import ModelRef

DRIFT_SAMPLE_ROWS = 100_000  # PSI over 10 bins: share errors ~0.001 at this size


@dataclass
class Trained:
    """A training run's artifacts, reassembled."""

    run_id: str
    model_name: str
    model_version: str | None
    recipe: Recipe
    model: ScoringModel
    profile: dict[str, Any] | None


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
        }


def load_trained(ref: ModelRef) -> Trained:
    """Find the run behind `ref` and rebuild preprocessor + estimator from its artifacts."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from ml import tracking

    if ref.run_id:
        run = tracking.get_run(ref.run_id)
        versions = MlflowClient().search_model_versions(f"run_id = '{ref.run_id}'")
        name = run.data.tags.get("ml.recipe") or (versions[0].name if versions else None)
        version = str(max(int(v.version) for v in versions)) if versions else None
        run_id = ref.run_id
    else:
        assert ref.name is not None
        mv = tracking.resolve_model_version(ref.name, ref.alias_or_version)
        run_id = mv.run_id or (mv.tags or {}).get("run_id")
        if not run_id:
            raise TrainingError(f"model '{ref.name}' version {mv.version} has no source run")
        run = tracking.get_run(run_id)
        name, version = mv.name, str(mv.version)
    if run.info.status != "FINISHED" or run.data.tags.get("ml.kind", "train") != "train":
        raise TrainingError(
            f"run '{run_id}' is not a finished training run (status {run.info.status})"
        )

    with tempfile.TemporaryDirectory() as tmp:
        try:
            for part in ("recipe", "schema", "preprocessor", "estimator"):
                mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=part, dst_path=tmp)
        except Exception as exc:  # noqa: BLE001
            raise TrainingError(
                f"run '{run_id}': cannot download its artifacts ({one_line(exc, 200)})"
            ) from None
        root = Path(tmp)
        import yaml

        recipe = recipe_from_dict(
            yaml.safe_load((root / "recipe" / "recipe.yaml").read_text()),
            f"run {run_id}: recipe.yaml",
        )
        schema = TrainingSchema.from_dict(
            json.loads((root / "schema" / "training_schema.json").read_text())
        )
        profile_path = root / "schema" / "reference_profile.json"
        profile = json.loads(profile_path.read_text()) if profile_path.is_file() else None
        # Artifacts are read only from the configured tracking store (see README: security).
        preprocessor = pickle.loads((root / "preprocessor" / "preprocessor.pkl").read_bytes())  # noqa: S301
        estimator = pickle.loads((root / "estimator" / "estimator.pkl").read_bytes())  # noqa: S301
    return Trained(
        run_id,
        name or recipe.name,
        version,
        recipe,
        ScoringModel(schema, preprocessor, estimator),
        profile,
    )


def score(
    settings: Settings,
    ref: ModelRef,
    context_params: str | dict[str, Any] | None = None,
    *,
    build: bool = False,
    steps: Steps | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> ScoreResult:
    steps = steps or Steps(enabled=False)
    given = (
        context_params if isinstance(context_params, dict) else parse_context_params(context_params)
    )

    from ml import tracking

    with steps.step("checking the MLflow store"):
        tracking.configure(settings)
    with steps.step("loading the model from its run's artifacts"):
        trained = load_trained(ref)
    recipe = trained.recipe
    context = resolve_context(recipe, given, "score")
    project = DbtProject(settings)
    with steps.step("checking the recipe against the dbt project"):
        p = plan(recipe, f"run {trained.run_id}: recipe", project)
    dbt_vars = {n: v for n, v in context.items() if "var" in recipe.context[n].apply}
    if build:
        with steps.step(f"dbt build --select +{p.score_model.name}"):
            project.build(f"+{p.score_model.name}", vars=dbt_vars)

    from ml.warehouse import connect

    relation = str(p.score_model.relation)
    out_schema = settings.predictions.schema_name
    output = f"{out_schema}.{recipe.name}"
    filters = {p.filter_columns[n]: v for n, v in context.items() if n in p.filter_columns}
    schema = trained.model.schema

    with connect(settings) as wh:
        with steps.step("opening the warehouse"):
            wh.open()
        # `seconds` covers the scoring itself: population checks, streaming, writing, the swap
        start = time.perf_counter()
        scored_at = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
        with steps.step(f"checking {relation} against the training schema"):
            total = _check_population(wh, p, schema, filters, context)
        slice_ = {**{p.context_columns[n]: v for n, v in context.items()}, "run_id": trained.run_id}
        constants = {
            **{p.context_columns[n]: v for n, v in context.items() if n not in p.filter_columns},
            "model_name": trained.model_name,
            "model_version": trained.model_version,
            "run_id": trained.run_id,
            "scored_at": scored_at,
        }
        from ml.drift import DriftAccumulator

        # PSI from a systematic sample of about DRIFT_SAMPLE_ROWS rows, whatever the population
        every = max(1, total // DRIFT_SAMPLE_ROWS)
        drift = DriftAccumulator(trained.profile, every) if trained.profile else None
        columns = _unique([*schema.entity_keys, *filters, *schema.features])
        with steps.step(f"scoring {total:,} rows into {output}"):
            batches = wh.read_batches(
                p.score_model.relation, columns, filters, settings.predictions.batch_size
            )
            typed = {name: (value, _arrow_type(name, value)) for name, value in constants.items()}
            with wh.slice_writer(out_schema, recipe.name, slice_, typed) as writer:
                _pipeline(
                    batches,
                    trained.model,
                    schema,
                    filters,
                    drift,
                    writer.write,
                    total,
                    on_batch,
                )
            rows = writer.rows
    seconds = time.perf_counter() - start

    report = drift.report() if drift else {}
    drifted = sorted(n for n, r in report.items() if r["drifted"])
    with steps.step("logging the scoring run to MLflow"):
        score_run_id = _log_scoring_run(
            settings, trained, context, relation, output, rows, seconds, report, drifted
        )
    from ml.sources import ensure_declared

    ensure_declared(settings, recipe)
    return ScoreResult(
        rows,
        output,
        relation,
        seconds,
        trained.run_id,
        score_run_id,
        trained.model_name,
        trained.model_version,
        context,
        drifted,
    )


def _check_population(
    wh: Any, p: Plan, schema: TrainingSchema, filters: dict[str, Any], context: dict[str, Any]
) -> int:
    rel = p.score_model.relation
    if not wh.exists(rel):
        raise WarehouseError(
            f"relation {rel} (dbt model {p.score_model.name}) is not built for target {wh.settings.dbt.target}: "
            f"run `dbt build --select +{p.score_model.name} --target {wh.settings.dbt.target}` or `ml score --build`"
        )
    expected = {k: p.kinds.get(k, "int") for k in schema.entity_keys}
    expected.update({c: p.kinds[c] for c in filters if c in p.kinds})
    expected.update(schema.features)
    contract.check_columns(wh.columns(rel), expected, str(rel))
    stats = wh.key_stats(rel, schema.entity_keys, filters)
    if stats["rows"] == 0:
        where = ", ".join(f"{k}={v!r}" for k, v in context.items()) or "no filter"
        raise ContractError(
            f"{rel}: the scoring population is empty for {where}; nothing was written"
        )
    for key, nulls in stats["nulls"].items():
        if nulls:
            raise ContractError(
                f"{rel}: key column '{key}' has {nulls} null value(s); nothing was written"
            )
    if stats["distinct"] != stats["rows"]:
        raise ContractError(
            f"{rel}: key ({', '.join(schema.entity_keys)}) has {stats['rows'] - stats['distinct']} duplicate row(s) "
            "in this context; nothing was written"
        )
    return int(stats["rows"])


def _pipeline(
    batches: Iterator[Any],
    model: ScoringModel,
    schema: TrainingSchema,
    filters: dict[str, Any],
    drift: Any,
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
            out = {k: table.column(k).take(rows) for k in (*schema.entity_keys, *filters)}
            out["score"] = pa.array(scores, pa.float64())
            write_q.put(pa.table(out))
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


def _arrow_type(name: str, value: Any) -> Any:
    import pyarrow as pa

    if name == "scored_at":
        return pa.timestamp("us")
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    if isinstance(value, dt.date):
        return pa.date32()
    return pa.string()


def _log_scoring_run(
    settings: Settings,
    trained: Trained,
    context: dict[str, Any],
    relation: str,
    output: str,
    rows: int,
    seconds: float,
    drift: dict[str, Any],
    drifted: list[str],
) -> str:
    import mlflow

    from ml import tracking

    exp_id = tracking.experiment_id(settings, trained.recipe.experiment_name)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"score-{trained.recipe.name}") as run:
        mlflow.set_tags(
            {
                "ml.kind": "score",
                "ml.recipe": trained.recipe.name,
                "ml.source_run_id": trained.run_id,
                "ml.model_version": str(trained.model_version),
                "ml.app_env": settings.env,
                "ml.dbt_target": settings.dbt.target,
                "ml.context": json.dumps(context, default=str, sort_keys=True),
                "ml.drifted_features": ",".join(drifted),
            }
        )
        mlflow.log_params(
            {
                "input_relation": relation,
                "output_relation": output,
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
        return run.info.run_id


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
