"""The `ml` command. Click only: parse options, load settings, call a service, print.

Heavy libraries are imported inside the commands so `ml --help` stays instant.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import warnings
from typing import TYPE_CHECKING, Any

import click

from ml.errors import MLError

if TYPE_CHECKING:
    from ml.train import TrainResult

INTERNAL_ERROR_EXIT = 70  # EX_SOFTWARE: a bug, not the user's input
INTERRUPTED_EXIT = 130
BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE, as a shell reports a command killed by it


class _Group(click.Group):
    """Turns every MLError into one `Error: ...` line and its exit code (traceback with --debug).

    The last line of defence: anything else that escapes a command is still one line (each
    such line is a bug to give its own message); Ctrl-C is one line too."""

    def invoke(self, ctx: click.Context) -> Any:
        def debug() -> bool:  # known once the group's own options are parsed
            return bool(ctx.obj and ctx.obj.get("debug"))

        try:
            return super().invoke(ctx)
        except MLError as exc:
            _fail(debug(), exc.message, exc.exit_code)
        except click.exceptions.UsageError as exc:  # click's is three lines: usage, hint, error
            where = (
                exc.ctx.command_path
                if exc.ctx is not None
                else " ".join(filter(None, (ctx.command_path, ctx.invoked_subcommand)))
            )
            text = " ".join(exc.format_message().split())  # choices come one per line
            _fail(debug(), f"{text} (see `{where} -h`)", exc.exit_code)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:  # the reader went away (`ml ... | head -1`): nothing to say
            _quiet_exit()
        except KeyboardInterrupt:
            _fail(debug(), "interrupted", INTERRUPTED_EXIT)
        except Exception as exc:  # noqa: BLE001 - the CLI never shows a user a traceback
            text = " ".join(str(exc).split())[:200]
            _fail(
                debug(),
                f"internal error: {type(exc).__name__}: {text}; rerun with --debug for the traceback",
                INTERNAL_ERROR_EXIT,
            )


def _fail(debug: bool, message: str, code: int) -> None:
    if debug:
        traceback.print_exc()
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _quiet_exit() -> None:
    """Exit after the reader of stdout closed it, without Python's own complaint at exit
    (flushing the dead pipe again)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(BROKEN_PIPE_EXIT)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--env",
    "env",
    envvar="APP_ENV",
    default=None,
    metavar="ENV",
    help="Config overlay config/<ENV>.yaml (default: $APP_ENV or dev).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def main(ctx: click.Context, env: str | None, debug: bool) -> None:
    """Modern ML Pipeline: dbt owns the data, `ml` owns the models."""
    ctx.ensure_object(dict)
    ctx.obj.update(env=env, debug=debug)
    if not debug:
        # Library chatter (deprecations, MLflow's hints) is noise on a terminal; --debug shows it.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"(?i).*type hint", category=UserWarning)


def _settings(ctx: click.Context) -> Any:
    from ml.config import load_settings

    return load_settings(env=ctx.obj.get("env"))


def _emit_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, default=str) + "\n")


def _context_option(phase: str) -> Any:
    return click.option(
        "--context-params",
        default=None,
        metavar="JSON",
        help=f"Context values as a JSON object (default: the recipe's {phase} defaults).",
    )


def _build_option(model: str) -> Any:
    return click.option(
        "--build/--no-build",
        default=False,
        show_default=True,
        help=f"dbt build the recipe's {model} model (and its parents) first.",
    )


def _model_options(run_help: str) -> Any:
    """--run-id or --model NAME[@ALIAS]: what `ml score` and `ml serve` use."""
    run_id = click.option("--run-id", default=None, help=run_help)
    model = click.option(
        "--model",
        "model",
        default=None,
        metavar="NAME[@ALIAS]",
        help="Registered model: NAME (latest), NAME@ALIAS or NAME/VERSION.",
    )
    return lambda f: run_id(model(f))


def _json_option(what: str) -> Any:
    return click.option("--json", "as_json", is_flag=True, help=f"Print one JSON object ({what}).")


@main.command()
@click.option(
    "--recipe",
    "recipe_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Recipe YAML file.",
)
@click.option(
    "--context-params",
    default=None,
    metavar="JSON",
    help='Context values, e.g. \'{"campaign_id": "cmp_2026_09"}\'.',
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def validate(
    ctx: click.Context, recipe_path: str, context_params: str | None, as_json: bool
) -> None:
    """Check a recipe against config, the dbt manifest and its estimator."""
    from ml.validate import validate_recipe

    settings = _settings(ctx)
    report = validate_recipe(settings, recipe_path, context_params)
    if as_json:
        _emit_json(report)
        return
    click.echo(f"OK  {recipe_path}: {report['task']} recipe '{report['recipe']}'")
    click.echo(f"    trains on {report['train_relation']}, scores {report['score_relation']}")
    click.echo(f"    {len(report['features'])} features; estimator {report['estimator']}")
    if report["tuning"]:
        t = report["tuning"]
        click.echo(
            f"    tunes {len(t['parameters'])} parameters for {t['direction']} {t['metric']}"
        )
    for phase in ("train", "score"):
        if report["context"][phase]:
            click.echo(f"    {phase} context: {json.dumps(report['context'][phase], default=str)}")


@main.command()
@click.option(
    "--recipe",
    "recipe_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Recipe YAML file.",
)
@_context_option("train")
@_build_option("training")
@click.option(
    "--alias",
    default=None,
    help="Registry alias for the new version, e.g. champion; an uplift model takes it only if "
    "it passes the recipe's promotion rule against the alias's current holder.",
)
@click.option(
    "--force-alias",
    is_flag=True,
    help="Move --alias to the new version even if the promotion rule refuses it.",
)
@_json_option("run_id, model, version, metrics, promoted, comparison")
@click.pass_context
def train(
    ctx: click.Context,
    recipe_path: str,
    context_params: str | None,
    build: bool,
    alias: str | None,
    force_alias: bool,
    as_json: bool,
) -> None:
    """Train a recipe on its dbt model, log it to MLflow and register it."""
    from ml.progress import Steps
    from ml.registry import check_alias
    from ml.train import train as run_train

    settings = _settings(ctx)
    if alias is not None:
        check_alias(alias)
    elif force_alias:
        raise click.UsageError("--force-alias needs --alias NAME")
    if not as_json:
        click.echo(
            f"Training {recipe_path} (env {settings.env}, dbt target {settings.dbt.target})",
            err=True,
        )
    result = run_train(
        settings,
        recipe_path,
        context_params,
        build=build,
        alias=alias,
        force_alias=force_alias,
        steps=Steps(enabled=True),
    )
    if as_json:
        _emit_json(result.to_dict())
        return
    click.echo("")
    _echo_trained(result)


def _echo_trained(result: TrainResult, note: str = "") -> None:
    """The registered version (and the alias, when it moved), the gate's reason, the run and
    its metrics."""
    moved = result.alias if result.promoted is not False else None
    click.echo(
        f"model {result.model_name} version {result.model_version}"
        + (f" (@{moved})" if moved else "")
    )
    if result.decision is not None:
        click.echo(result.decision.reason)
    click.echo(f"run   {result.run_id}{note}")
    _echo_metrics(result.metrics)


def _echo_metrics(metrics: dict[str, float]) -> None:
    """One line per metric: its value and, where it has one, its 95% interval."""
    names = [n for n in metrics if not n.endswith(("_ci_low", "_ci_high"))]
    width = max(len(n) for n in names)
    for name in names:
        low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
        interval = f"  [{low:.4f}, {high:.4f}]" if low is not None and high is not None else ""
        click.echo(f"  {name:<{width}}  {metrics[name]:.4f}{interval}")


@main.command()
@click.option(
    "--recipe",
    "recipe_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Recipe YAML file with a tuning: section.",
)
@_context_option("train")
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=None,
    help="Finished trials the study should have in all (default: the recipe's tuning.n_trials).",
)
@click.option(
    "--resume", is_flag=True, help="Continue the recipe's last study instead of starting one."
)
@click.option(
    "--alias",
    default=None,
    help="Registry alias for the best configuration's version, through the promotion rule.",
)
@_json_option("best_params, best_value, trials, study_run_id, run_id, model_version")
@click.pass_context
def tune(
    ctx: click.Context,
    recipe_path: str,
    context_params: str | None,
    trials: int | None,
    resume: bool,
    alias: str | None,
    as_json: bool,
) -> None:
    """Search the recipe's tuning space (Optuna, k-fold CV in the training split), then train,
    register and gate the best configuration like `ml train`. Ctrl-C keeps finished trials."""
    from ml.progress import Steps
    from ml.tune import tune as run_tune

    settings = _settings(ctx)
    if not as_json:
        click.echo(f"Tuning {recipe_path} (env {settings.env})", err=True)
    result = run_tune(
        settings,
        recipe_path,
        context_params,
        trials=trials,
        resume=resume,
        alias=alias,
        steps=Steps(enabled=True),
    )
    if as_json:
        _emit_json(result.to_dict())
        return
    click.echo(
        f"\nstudy {result.study}: {result.trials} trials, best {result.metric} "
        f"{result.best_value:.4f} (cross-validated)"
    )
    for path, value in result.best_params.items():
        click.echo(f"  {path} = {value}")
    _echo_trained(result.final, f" (study run {result.study_run_id})")


@main.command()
@_model_options("Training run to score with.")
@_context_option("score")
@_build_option("scoring")
@click.option(
    "--engine",
    type=click.Choice(["python", "sql"]),
    default=None,
    help="python: stream the rows through this process; sql: compile the model to SQL and "
    "score inside the warehouse (default: predictions.engine).",
)
@_json_option("rows, relation, seconds, run ids")
@click.pass_context
def score(
    ctx: click.Context,
    run_id: str | None,
    model: str | None,
    context_params: str | None,
    build: bool,
    engine: str | None,
    as_json: bool,
) -> None:
    """Score a population with a trained model and write the scores to the warehouse."""
    from ml.progress import Steps, progress_bar
    from ml.registry import ModelRef
    from ml.score import score as run_score

    settings = _settings(ctx)
    ref = ModelRef.parse(run_id, model)
    result = run_score(
        settings,
        ref,
        context_params,
        build=build,
        steps=Steps(enabled=True),
        on_batch=progress_bar(sys.stderr),
        engine=engine,
    )
    if as_json:
        _emit_json(result.to_dict())
        return
    version = f" version {result.model_version}" if result.model_version else ""
    click.echo(
        f"\nwrote {result.rows:,} scores to {result.relation} in {result.seconds:.1f}s "
        f"({result.rows / max(result.seconds, 1e-9):,.0f} rows/s)"
    )
    click.echo(
        f"model {result.model_name}{version}, run {result.run_id}; scoring run {result.score_run_id}"
    )
    if result.drifted:
        click.echo(f"drift: PSI > 0.2 for {', '.join(result.drifted)}")


@main.command("compile")
@_model_options("Training run whose model to compile.")
@click.option(
    "--dialect",
    type=click.Choice(["duckdb", "bigquery"]),
    required=True,
    help="SQL dialect of the warehouse that will run it.",
)
@click.pass_context
def compile_(ctx: click.Context, run_id: str | None, model: str | None, dialect: str) -> None:
    """Print the model compiled to one SELECT over its scoring population (dbt ref)."""
    from ml.registry import ModelRef
    from ml.score_sql import compiled_sql

    click.echo(compiled_sql(_settings(ctx), ModelRef.parse(run_id, model), dialect))


@main.command()
@_model_options("Training run whose features to materialize.")
@_context_option("score")
@_json_option("rows, model, version, context, store, seconds")
@click.pass_context
def materialize(
    ctx: click.Context,
    run_id: str | None,
    model: str | None,
    context_params: str | None,
    as_json: bool,
) -> None:
    """Copy a context's scoring population (keys and features) into the online store."""
    from ml.materialize import materialize as run_materialize
    from ml.progress import Steps
    from ml.registry import ModelRef

    settings = _settings(ctx)
    ref = ModelRef.parse(run_id, model)
    result = run_materialize(settings, ref, context_params, steps=Steps(enabled=not as_json))
    if as_json:
        _emit_json(result.to_dict())
        return
    version = f" version {result.model_version}" if result.model_version else ""
    click.echo(
        f"\nwrote {result.rows:,} entities of {result.relation} to the {result.store} in "
        f"{result.seconds:.1f}s for {result.model_name}{version}, context "
        f"{json.dumps(result.context, default=str)}"
    )


@main.command()
@_model_options("Training run whose logged model to serve.")
@click.option("--host", default=None, help="Interface to bind (default: serving.host).")
@click.option(
    "--port", default=None, type=click.IntRange(0, 65535), help="Port (default: serving.port)."
)
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(min=1),
    help="Worker processes, one model copy each (default: serving.workers).",
)
@click.pass_context
def serve(
    ctx: click.Context,
    run_id: str | None,
    model: str | None,
    host: str | None,
    port: int | None,
    workers: int | None,
) -> None:
    """Serve a trained model over HTTP: POST /predict, /health, /ready, /metadata, /metrics,
    /docs. Without --model or --run-id: serving.model (config)."""
    from ml.serving.run import ref_to_serve, run

    settings = _settings(ctx)
    ref = ref_to_serve(settings, run_id, model)
    run(
        settings,
        ref,
        host=host,
        port=port,
        workers=workers,
        announce=lambda line: click.echo(line, err=True),
    )


@main.command("demo-data")
@click.option(
    "--customers",
    default=50_000,
    show_default=True,
    type=click.IntRange(min=100, max=2_000_000),
    help="Number of customers (~18 orders each are generated in memory).",
)
@click.option(
    "--seed",
    default=7,
    show_default=True,
    type=click.IntRange(min=0, max=2**32 - 1),
    help="Generator seed.",
)
@click.pass_context
def demo_data(ctx: click.Context, customers: int, seed: int) -> None:
    """Generate the demo marketing warehouse and load it as the raw tables dbt reads."""
    from ml.demo import load_demo_data

    settings = _settings(ctx)
    counts = load_demo_data(settings, n_customers=customers, seed=seed)
    for name, rows in counts.items():
        click.echo(f"loaded {rows:>9,} rows into {name}")


if __name__ == "__main__":  # pragma: no cover
    main()
