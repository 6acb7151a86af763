"""What a training run publishes about its decisions: the HTML report (ml/report.py renders
it) and the fine policy curve `ml score` writes as `<recipe>__policy`."""

from __future__ import annotations

from typing import Any

from ml.evaluate import Evaluation
from ml.plan import Plan
from ml.promotion import Decision


def _active_run_id() -> str:
    import mlflow

    run = mlflow.active_run()
    return run.info.run_id if run else ""


def policy_curve_rows(curve: list[dict[str, Any]], n_holdout: int) -> list[dict[str, Any]]:
    """The fine policy curve as `ml score` publishes it (`<recipe>__policy`)."""
    return [
        {
            "share": row["share"],
            "incremental_per_customer": row["gain"],
            "incremental_ci_low": row["gain_ci_low"],
            "incremental_ci_high": row["gain_ci_high"],
            "random_per_customer": row["random_gain"],
            "random_ci_low": row["random_ci_low"],
            "random_ci_high": row["random_ci_high"],
            "n_holdout": n_holdout,
        }
        for row in curve
    ]


def _details(p: Plan) -> dict[str, str]:
    details = {"training relation": str(p.train_model.relation)}
    economics = p.recipe.evaluation.economics
    if economics is not None:
        money = [
            f"{economics.value_per_conversion:,.2f} per conversion",
            f"{economics.cost_per_contact:,.2f} per contact",
        ]
        if economics.budget is not None:
            money.append(f"budget {economics.budget:,.2f}")
        if economics.population is not None:
            money.append(f"{economics.population:,} customers")
        details["economics"] = ", ".join(money)
    return details


def render(p: Plan, ev: Evaluation, decision: Decision | None) -> str:
    """The run's HTML report: metrics with intervals, the figures, the policy table, the gate."""
    from ml import report

    metrics = {
        name: (value, ev.metrics.get(f"{name}_ci_low"), ev.metrics.get(f"{name}_ci_high"))
        for name, value in ev.metrics.items()
        if not name.endswith(("_ci_low", "_ci_high"))
    }
    shares = (ev.tables.get("policy_value") or {}).get("shares") or []
    policy_rows = [
        report.PolicyRow(
            r["share"], r["gain"], r["gain_ci_low"], r["gain_ci_high"], r["random_gain"]
        )
        for r in shares
    ]
    comparison = None
    if decision is not None:
        comparison = report.ChampionComparison(
            metric=decision.metric,
            challenger=(decision.challenger, *decision.challenger_ci),
            rule=decision.rule,
            reason=decision.reason,
            promoted=decision.promoted,
            champion=None
            if decision.champion is None or decision.champion_ci is None
            else (decision.champion, *decision.champion_ci),
            difference=None
            if decision.difference is None or decision.difference_ci is None
            else (decision.difference, *decision.difference_ci),
            champion_name=f"version {decision.champion_version}",
        )
    data = report.ReportData(
        title=f"{p.recipe.name}: {p.recipe.model.class_path.rsplit('.', 1)[-1]}",
        task=p.task,
        run_id=_active_run_id(),
        details=_details(p),
        metrics=metrics,
        plots=ev.plots,
        policy=policy_rows,
        comparison=comparison,
    )
    return report.render_report(data)
