"""The unified MLflow pyfunc model: preprocessor + estimator behind one `predict`."""

from __future__ import annotations

import json
import pickle
from typing import Any

from mlflow.pyfunc import PythonModel

from ml.model import ScoringModel, TrainingSchema


class PyfuncScoringModel(PythonModel):
    """Loads the same artifacts batch scoring uses; `predict` takes a DataFrame of features."""

    model: ScoringModel

    def load_context(self, context: Any) -> None:
        with open(context.artifacts["training_schema"]) as f:
            schema = TrainingSchema.from_dict(json.load(f))
        with open(context.artifacts["preprocessor"], "rb") as f:
            preprocessor = pickle.load(f)  # noqa: S301 - artifacts come from the configured store only
        with open(context.artifacts["estimator"], "rb") as f:
            estimator = pickle.load(f)  # noqa: S301
        self.model = ScoringModel(schema, preprocessor, estimator)

    # No type hints on predict: MLflow would try to derive a schema from them.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]  # noqa: ANN001
        columns = {name: model_input[name].to_numpy() for name in self.model.schema.features}
        return self.model.predict_columns(columns)
