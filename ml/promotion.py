"""The promotion gate: does a new model take the alias from its current holder?

Both models score the same held-out randomized rows; the decision metric is the policy gain at
the recipe's decision share (incremental outcome per customer from treating the top share by
score, estimated by inverse-propensity weighting with the known assignment probabilities), and
both are compared on the same bootstrap resamples (a paired comparison). Rules:
- `non_inferior` (default): the alias moves unless the challenger is worse with 95% confidence
  (the interval of challenger minus champion lies below 0);
- `superior`: the alias moves only if the challenger is better with 95% confidence.
A refused promotion still registers the version, without the alias.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ml import registry
from ml.errors import RunNotFoundError, TrainingError
from ml.model import ScoringModel

if TYPE_CHECKING:
    import pyarrow as pa

    from ml.dataset import Split
    from ml.evaluate import Evaluation
    from ml.plan import Plan


@dataclass(frozen=True)
class Holder:
    """The model an alias points at now."""

    version: str
    run_id: str
    model: ScoringModel


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str  # one line, for the CLI and the version's tags
    rule: str
    metric: str
    challenger: float
    challenger_ci: tuple[float, float]
    champion: float | None = None
    champion_ci: tuple[float, float] | None = None
    champion_version: str | None = None
    difference: float | None = None
    difference_ci: tuple[float, float] | None = None
    forced: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def tags(self) -> dict[str, str]:
        out = {
            "ml.promotion.promoted": str(self.promoted).lower(),
            "ml.promotion.rule": self.rule,
            "ml.promotion.metric": self.metric,
            "ml.promotion.reason": self.reason,
            "ml.promotion.challenger": f"{self.challenger:.6g}",
        }
        if self.champion is not None:
            out["ml.promotion.champion"] = f"{self.champion:.6g}"
            out["ml.promotion.champion_version"] = str(self.champion_version)
        if self.forced:
            out["ml.promotion.forced"] = "true"
        return out


def current_holder(name: str, alias: str) -> Holder | None:
    """The version `name@alias` points at, loaded; None when the alias is not set yet."""
    try:
        resolved = registry.resolve(registry.ModelRef(name=name, alias_or_version=alias))
    except RunNotFoundError:
        return None
    trained = registry.load_trained(resolved)
    return Holder(str(resolved.model_version), resolved.run_id, trained.model)


def first(metric: str, value: float, ci: tuple[float, float], rule: str, alias: str) -> Decision:
    return Decision(
        True, f"@{alias} had no holder: the first version takes it", rule, metric, value, ci
    )


def decide(
    *,
    alias: str,
    rule: str,
    metric: str,
    challenger: float,
    challenger_ci: tuple[float, float],
    champion: float,
    champion_ci: tuple[float, float],
    champion_version: str,
    difference: float,
    difference_ci: tuple[float, float],
    force: bool = False,
) -> Decision:
    """Apply the rule to a paired comparison (difference = challenger - champion)."""
    low, high = difference_ci
    if rule == "superior":
        promoted = low > 0
        verdict = "better" if promoted else "not better"
    else:
        promoted = high >= 0
        verdict = "not worse" if promoted else "worse"
    figures = (
        f"{metric} {challenger:.4g} [{challenger_ci[0]:.4g}, {challenger_ci[1]:.4g}] vs "
        f"@{alias} (version {champion_version}) {champion:.4g} "
        f"[{champion_ci[0]:.4g}, {champion_ci[1]:.4g}], difference {difference:.4g} "
        f"[{low:.4g}, {high:.4g}]"
    )
    if promoted:
        reason = f"promoted to @{alias}: {verdict} with 95% confidence ({rule}): {figures}"
    elif force:
        reason = f"moved to @{alias} by --force-alias although {verdict} ({rule}): {figures}"
    else:
        reason = (
            f"not promoted to @{alias}: {verdict} with 95% confidence ({rule}): {figures}; "
            "registered without the alias (--force-alias moves it anyway)"
        )
    return Decision(
        promoted or force,
        reason,
        rule,
        metric,
        challenger,
        challenger_ci,
        champion,
        champion_ci,
        champion_version,
        difference,
        difference_ci,
        forced=force and not promoted,
    )


def compare_on_held_out(
    p: Plan,
    table: pa.Table,
    split: Split,
    y: np.ndarray,
    t: np.ndarray,
    propensity: np.ndarray,
    score: np.ndarray,
    ev: Evaluation,
    alias: str,
    holder: Holder | None,
    force: bool,
) -> Decision:
    """The gate on the held-out rows: this model against the alias's holder (or the first)."""
    from ml import dataset, policy

    spec = p.recipe.evaluation
    metric = f"policy_gain_at_{policy.share_label(spec.decision_share)}"
    rule = p.recipe.promotion.rule
    if holder is None:
        ci = (
            ev.metrics.get(f"{metric}_ci_low", np.nan),
            ev.metrics.get(f"{metric}_ci_high", np.nan),
        )
        return first(metric, ev.metrics.get(metric, np.nan), ci, rule, alias)
    missing = [f for f in holder.model.schema.features if f not in table.column_names]
    if missing:
        raise TrainingError(
            f"@{alias} (version {holder.version}) uses column '{missing[0]}', which "
            f"{p.train_model.relation} no longer has: the two cannot be compared "
            "(--force-alias moves the alias without comparing)"
        )
    cols = dataset.feature_columns(table, list(holder.model.schema.features), split.test)
    champion = holder.model.predict_columns(cols)
    rows = split.test
    c = policy.compare_policies(
        y[rows], t[rows], propensity[rows], score, champion, spec.decision_share,
        spec.bootstrap_replicates, spec.bootstrap_seed,
    )  # fmt: skip
    return decide(
        alias=alias,
        rule=rule,
        metric=metric,
        challenger=c.a,
        challenger_ci=c.a_ci,
        champion=c.b,
        champion_ci=c.b_ci,
        champion_version=holder.version,
        difference=c.diff,
        difference_ci=(c.diff_ci_low, c.diff_ci_high),
        force=force,
    )
