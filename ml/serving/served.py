"""What a request is answered with: the resolved model, its loaded ScoringModel and the context
params its recipe declares, as one object. A handler takes it once, at the start, so a hot
reload (which replaces the whole object) never splits a request between two versions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ml.model import ScoringModel
from ml.registry import ResolvedModel

if TYPE_CHECKING:
    from ml.recipe import ContextParam


@dataclass(frozen=True)
class Served:
    target: ResolvedModel
    model: ScoringModel
    # the recipe's context params (types): a request by id names its context with them
    context: Mapping[str, ContextParam] = field(default_factory=dict)
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
