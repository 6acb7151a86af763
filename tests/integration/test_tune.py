"""`ml tune`: the recipe's tuning section checked by `ml validate`; a small real study on the
session warehouse (trials tracked as nested MLflow runs, the best configuration trained, logged
and registered as by `ml train`), its determinism, resume and Ctrl-C."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from ml.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _recipe(tmp: Path, name: str = "tune_x", **tuning: Any) -> str:
    """The demo X-learner, made small (few trees) so a trial fits in a second or two."""
    data = yaml.safe_load((ROOT / "recipes" / "xgboost_x_learner.yaml").read_text())
    data["name"] = name
    for learner in ("models", "cate_models", "propensity_model"):
        data["model"]["params"][learner]["params"]["n_estimators"] = 20
    data["evaluation"] = {"bootstrap_replicates": 50, "plots": False}
    data["tuning"] = {
        "search_space": {
            "model.params.models.params.max_depth": {"int": [2, 5]},
            "model.params.models.params.learning_rate": {"float": [0.02, 0.3], "log": True},
            "model.params.cate_models.params.subsample": {"float": [0.6, 1.0]},
        },
        "metric": "qini_coefficient",
        "n_trials": 3,
        "cv_folds": 2,
        **tuning,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_validate_reports_the_tuning_section(ml_env, tmp_path: Path) -> None:
    path = _recipe(tmp_path)
    result = CliRunner().invoke(main, ["validate", "--recipe", path])
    assert result.exit_code == 0, result.output
    assert "tunes 3 parameters for maximize qini_coefficient" in result.output
    result = CliRunner().invoke(main, ["validate", "--recipe", path, "--json"])
    report = json.loads(result.output)
    assert report["tuning"] == {
        "parameters": [
            "model.params.models.params.max_depth",
            "model.params.models.params.learning_rate",
            "model.params.cate_models.params.subsample",
        ],
        "metric": "qini_coefficient",
        "direction": "maximize",
    }


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"metric": "policy_gain_at_45"}, r"tuning\.metric: 'policy_gain_at_45' is not a metric"),
        ({"direction": "minimize"}, r"tuning\.direction: minimize is the wrong way"),
    ],
)
def test_validate_refuses_a_metric_the_task_does_not_rank(
    ml_env, tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    import re

    from cli_errors import one_line_error  # tests/integration/cli_errors.py

    result = CliRunner().invoke(main, ["validate", "--recipe", _recipe(tmp_path, **change)])
    assert result.exit_code == 2
    assert re.search(expected, one_line_error(result))
