"""What a request is answered with: the resolved model and its loaded ScoringModel, as one
object. A handler takes it once, at the start, so a hot reload (which replaces the whole
object) never splits a request between two versions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ml.model import ScoringModel
from ml.registry import ResolvedModel


@dataclass(frozen=True)
class Served:
    target: ResolvedModel
    model: ScoringModel
    # the response's opening: `{"model_name": ..., "model_version": ..., "run_id": ...` (no brace)
    head: str = field(init=False)

    def __post_init__(self) -> None:
        head = json.dumps(
            {
                "model_name": self.target.model_name,
                "model_version": self.target.model_version,
                "run_id": self.target.run_id,
            }
        )[:-1]
        object.__setattr__(self, "head", head)
