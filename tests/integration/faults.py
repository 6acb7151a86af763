"""Fault injection shared by the DuckDB and BigQuery scoring tests."""

from __future__ import annotations

from typing import Any

import pytest

from ml.model import ScoringModel
from ml.registry import ModelRef
from ml.score import score


def score_crashing_on_third_batch(
    settings: Any, run_id: str, batch_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Score with small batches and a crash in the third prediction: two batches were already
    written inside the open write when it fails."""
    calls = {"n": 0}
    original = ScoringModel.predict_columns

    def crash_on_third_batch(self: ScoringModel, columns: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected crash")
        return original(self, columns)

    monkeypatch.setattr(ScoringModel, "predict_columns", crash_on_third_batch)
    small = settings.model_copy(
        update={"predictions": settings.predictions.model_copy(update={"batch_size": batch_size})}
    )
    with pytest.raises(RuntimeError, match="injected crash"):
        score(small, ModelRef(run_id=run_id))
    assert calls["n"] == 3
