"""Security: input is never code and secrets never leave the environment.

- Injection strings through context params and API values are bound as values: an empty
  population (nothing written) or a score, never SQL.
- A real training run with an API token, an MLflow password, a password in .env and a service
  account keyfile around: none of them appears in its params, tags, artifacts, the MLflow
  database, the dbt log or the command's output.
- YAML is loaded safely: Python tags in a recipe or a config file are an error and run nothing;
  a recipe's model class must be an estimator.
- The API token is compared in constant time; wrong tokens of every length get 401.
- Pickles are only loaded from runs in the configured tracking store, never from a path.
"""

from __future__ import annotations

import hmac
import json
import pickle
import re
import shutil
from pathlib import Path

import pytest
import yaml
from cli_errors import one_line_error
from click.testing import CliRunner
from warehouse_snapshots import contents  # tests/integration/warehouse_snapshots.py

from ml.cli import main
from ml.population import described

ROOT = Path(__file__).resolve().parents[2]
RECIPE = "xgboost_x_learner"


# -- injection is inert ------------------------------------------------------------------------

INJECTIONS = {
    "quote": "'",
    "double-quote": '"',
    "drop-table": "'; drop table predictions.xgboost_x_learner; --",
    "or-true": "1 or 1=1",
    "quoted-or-true": "cmp_2026_12' or '1'='1",
    "comment": "cmp_2026_12' --",
    "identifier-quote": 'cmp"; select 1; --',
    "unicode": "ｃｍｐ＿２０２６＿１２ 🙂 ü ß \u202e",
    "nul-byte": "cmp_2026_12\x00' or 1=1",
    "10k-chars": "x" * 10_000,
}


@pytest.mark.parametrize("value", list(INJECTIONS.values()), ids=list(INJECTIONS))
def test_injection_through_context_params_is_a_value(
    value, ml_env, scored_champion, trained_x_learner
) -> None:
    before = contents(ml_env["ML_DUCKDB_PATH"])
    params = json.dumps({"campaign_id": value})

    validated = CliRunner().invoke(
        main, ["validate", "--recipe", f"recipes/{RECIPE}.yaml", "--context-params", params]
    )
    result = CliRunner().invoke(
        main, ["score", "--run-id", trained_x_learner.run_id, "--context-params", params]
    )
    if "\x00" in value:  # refused while validating: SQL engines end strings at a NUL
        for refused in (validated, result):
            assert refused.exit_code == 2, refused.output
            assert one_line_error(refused) == (
                "Error: --context-params: campaign_id: expected a string without NUL characters"
            )
    else:  # a string where a string is declared, matching no row
        assert validated.exit_code == 0, validated.output
        assert result.exit_code == 3, result.output
        assert one_line_error(result).endswith(  # a long value cut short (population.described)
            "score_uplift: the scoring population is empty for "
            f"{described({'campaign_id': value})}; nothing was written"
        )
    assert contents(ml_env["ML_DUCKDB_PATH"]) == before  # tables and scores intact


@pytest.fixture(scope="module")
def client(served_champion):
    from fastapi.testclient import TestClient
    from threadpoolctl import threadpool_limits

    from ml.serving.app import create_app

    settings, ref, target, model = served_champion
    app = create_app(settings, target, model=model)
    with threadpool_limits(limits=None), TestClient(app) as c:  # restore this process's threads
        yield c


@pytest.fixture(scope="module")
def record(served_champion) -> dict:
    """A valid record: every feature null (imputation fills them)."""
    return dict.fromkeys(served_champion[3].schema.features)


@pytest.mark.parametrize("value", list(INJECTIONS.values()), ids=list(INJECTIONS))
def test_injection_through_the_api_is_a_value(value, client, record) -> None:
    response = client.post("/predict", json={"records": [{**record, "region": value}]})
    assert response.status_code == 200, response.text  # an unseen category, scored
    assert isinstance(response.json()["predictions"][0]["score"], float)


# -- no secret in a real training run ----------------------------------------------------------

TOKEN = "s3cr3t-token-value"
MLFLOW_PASSWORD = "mlflow-pw-9d2c71"
DOTENV_PASSWORD = "dotenv-pw-5e1b08"
KEY_MATERIAL = "MIIEvQIBADANBgkqFAKEKEYMATERIAL0123456789abcdef"
SECRETS = [TOKEN, MLFLOW_PASSWORD, DOTENV_PASSWORD, KEY_MATERIAL]


@pytest.fixture
def secret_project(tmp_path: Path, ml_env, monkeypatch) -> dict[str, Path]:
    """A project copy whose settings reach for secrets: a keyfile, an endpoint with a password
    from .env, the API token; plus an MLflow password in the environment and a fresh store."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "config", project / "config")
    base = project / "config" / "base.yaml"
    config = yaml.safe_load(base.read_text())
    config["dbt"].update(project_dir=str(ROOT), profiles_dir=str(ROOT))
    config["warehouse"]["bigquery"] = {
        "project": "fake-project",
        "dataset": "analytics",
        "keyfile": "${BQ_KEYFILE:-}",
        "api_endpoint": "${BQ_API_ENDPOINT:-}",
    }
    base.write_text(yaml.safe_dump(config))
    (project / ".env").write_text(
        f"BQ_API_ENDPOINT=https://svc-account:{DOTENV_PASSWORD}@bq.example.invalid\n"
    )
    keyfile = tmp_path / "keyfile.json"
    keyfile.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "fake-project",
                "private_key_id": "0123456789abcdef",
                "private_key": f"-----BEGIN PRIVATE KEY-----\n{KEY_MATERIAL}\n-----END PRIVATE KEY-----\n",
                "client_email": "ml@fake-project.iam.gserviceaccount.com",
            }
        )
    )
    store = tmp_path / "mlruns"
    for name, value in {
        "ML_PROJECT_DIR": str(project),
        "BQ_KEYFILE": str(keyfile),
        "ML_API_TOKEN_ENV": "ML_API_TOKEN",
        "ML_API_TOKEN": TOKEN,
        "MLFLOW_TRACKING_USERNAME": "ml-user",
        "MLFLOW_TRACKING_PASSWORD": MLFLOW_PASSWORD,
        "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
        "ML_ARTIFACT_LOCATION": str(store / "artifacts"),
    }.items():
        monkeypatch.setenv(name, value)
    recipe = yaml.safe_load((ROOT / "recipes" / "conversion_xgb.yaml").read_text())
    recipe["name"] = "secrets_probe"
    recipe["model"]["params"]["n_estimators"] = 20
    (tmp_path / "secrets_probe.yaml").write_text(yaml.safe_dump(recipe))
    return {"recipe": tmp_path / "secrets_probe.yaml", "store": store}


def test_no_secret_in_params_tags_artifacts_or_logs(secret_project) -> None:
    from mlflow.tracking import MlflowClient

    dbt_log = ROOT / "logs" / "dbt.log"
    log_start = dbt_log.stat().st_size if dbt_log.is_file() else 0
    result = CliRunner().invoke(
        main, ["train", "--recipe", str(secret_project["recipe"]), "--alias", "champion"]
    )
    assert result.exit_code == 0, result.output

    client = MlflowClient()
    (version,) = client.search_model_versions("name = 'secrets_probe'")
    run = client.get_run(version.run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    recorded = {
        "output": result.output,
        "params": json.dumps(run.data.params),
        "tags": json.dumps(run.data.tags),
        "metrics": json.dumps(sorted(run.data.metrics)),
        "experiment": json.dumps(experiment.tags),
        "version": json.dumps(version.tags),
    }
    artifacts = [p for p in (secret_project["store"] / "artifacts").rglob("*") if p.is_file()]
    assert any(p.name == "estimator.pkl" for p in artifacts)  # the model's files are there
    files = [*artifacts, secret_project["store"] / "mlflow.db"]
    for path in files:
        recorded[str(path)] = path.read_bytes().decode("latin-1")
    if dbt_log.is_file():
        with open(dbt_log, "rb") as f:
            f.seek(log_start)
            recorded["dbt.log"] = f.read().decode("latin-1")
    leaks = [(where, s) for where, text in recorded.items() for s in SECRETS if s in text]
    assert leaks == []

    # the settings were recorded, redacted rather than merely without the secrets
    config = next(p for p in artifacts if p.name == "config.yaml").read_text()
    assert "https://svc-account:***@bq.example.invalid" in config
    assert "keyfile.json" in config  # the path is recorded, its content is not


# -- YAML is data; a model is an estimator -----------------------------------------------------

TAGS = [
    "!!python/object/apply:os.system [{cmd}]",
    "!!python/object/new:subprocess.Popen [[sh, -c, {cmd}]]",
    "!!python/object/apply:subprocess.check_call [[sh, -c, {cmd}]]",
]


@pytest.mark.parametrize("tag", TAGS, ids=["os.system", "Popen", "check_call"])
@pytest.mark.parametrize("where", ["recipe", "config"])
def test_python_yaml_tags_run_nothing(tag, where, ml_env, tmp_path, monkeypatch) -> None:
    marker = tmp_path / "pwned"
    payload = tag.format(cmd=json.dumps(f"touch {marker}"))
    if where == "recipe":
        recipe = tmp_path / "evil.yaml"
        recipe.write_text(f"name: evil\nmodel: {payload}\n")
        label = re.escape(str(recipe))
    else:
        project = tmp_path / "project"
        shutil.copytree(ROOT / "config", project / "config")
        (project / "config" / "dev.yaml").write_text(f"dbt: {payload}\n")
        monkeypatch.setenv("ML_PROJECT_DIR", str(project))
        recipe, label = ROOT / "recipes" / f"{RECIPE}.yaml", r".*config/dev\.yaml"
    for command in ("validate", "train"):
        result = CliRunner().invoke(main, [command, "--recipe", str(recipe)])
        assert result.exit_code == 2, result.output
        assert re.match(
            rf"Error: {label}: YAML syntax error at line \d+, column \d+: could not determine a constructor for the tag",
            one_line_error(result),
        )
    assert not marker.exists()


def test_a_model_that_is_not_an_estimator_is_never_built(ml_env, tmp_path) -> None:
    marker = tmp_path / "pwned"
    recipe = yaml.safe_load((ROOT / "recipes" / "conversion_xgb.yaml").read_text())
    recipe["model"] = {"class_path": "subprocess.Popen", "params": {"args": ["touch", str(marker)]}}
    path = tmp_path / "popen.yaml"
    path.write_text(yaml.safe_dump(recipe))
    for command in ("validate", "train"):
        result = CliRunner().invoke(main, [command, "--recipe", str(path)])
        assert result.exit_code == 2, result.output
        assert one_line_error(result).endswith(
            "model.class_path: 'subprocess.Popen' is not in the allowed modules (xgboost, econml, "
            "sklearn); add its module prefix to estimators.allowed_modules in config/base.yaml"
        )
    assert not marker.exists()


# -- the API token -----------------------------------------------------------------------------

API_TOKEN = "Zq8-token-for-the-timing-test-0123456789"


def test_api_token_is_compared_in_constant_time(served_champion, record, monkeypatch) -> None:
    from fastapi.testclient import TestClient
    from threadpoolctl import threadpool_limits

    from ml.serving.app import create_app

    settings, ref, target, model = served_champion
    strict = settings.model_copy(
        update={"serving": settings.serving.model_copy(update={"token_env": "ML_TEST_TOKEN"})}
    )
    monkeypatch.setenv("ML_TEST_TOKEN", API_TOKEN)
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    wrong = ["", "x", API_TOKEN[:-1], API_TOKEN[:-1] + "X", API_TOKEN + "x", "x" * 10_000]
    app = create_app(strict, target, model=model)
    with threadpool_limits(limits=None), TestClient(app) as c:
        for token in wrong:
            response = c.get("/metadata", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401, (len(token), response.text)
        assert (
            c.get("/metadata", headers={"Authorization": f"Bearer {API_TOKEN}"}).status_code == 200
        )
    assert len(calls) == len(wrong) + 1  # every check went through hmac.compare_digest
    assert all(expected == API_TOKEN.encode() for _, expected in calls)


# -- pickles come from the tracking store only -------------------------------------------------


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize(
    "args",
    [
        ["--model", "file://{dir}"],
        ["--model", "{dir}"],
        ["--model", "runs:/{dir}/model"],
        ["--run-id", "{dir}"],
        ["--run-id", "../../{dir}"],
    ],
    ids=["file-uri", "path", "runs-uri", "run-id-path", "run-id-traversal"],
)
@pytest.mark.parametrize("command", ["score", "serve"])
def test_pickles_only_from_the_tracking_store(command, args, ml_env, tmp_path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil"
    for part in ("estimator", "preprocessor"):
        (evil / part).mkdir(parents=True)
        (evil / part / f"{part}.pkl").write_bytes(pickle.dumps(_Evil(str(marker))))
    given = [a.replace("{dir}", str(evil)) for a in args]
    result = CliRunner().invoke(main, [command, *given])
    assert result.exit_code in (2, 6), result.output  # not a reference, or not in the store
    assert re.search(
        r"not found in the (registry|tracking store)|expected NAME, NAME@ALIAS or NAME/VERSION"
        r"|expected an MLflow run id",
        one_line_error(result),
    )
    assert not marker.exists()
