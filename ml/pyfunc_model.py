"""MLflow models-from-code entry point: the pyfunc is declared by code, not pickled."""

from mlflow.models import set_model

from ml.pyfunc import PyfuncScoringModel

set_model(PyfuncScoringModel())
