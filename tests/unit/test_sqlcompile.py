"""The model compiled to SQL gives the Python engine's score, row for row, on a real DuckDB:
each supported estimator, each preprocessing choice, values exactly at XGBoost's float32 split
boundaries; what does not compile is refused in one line."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from refusals import refused

from ml.errors import UnsupportedModelError
from ml.model import ScoringModel, TrainingSchema
from ml.preprocess import Preprocessor
from ml.recipe import PreprocessingSpec
from ml.sqlcompile import CompiledQuery, compile_model
from ml.sqlcompile.trees import threshold

N = 600
KINDS = {"amount": "float", "visits": "int", "member": "bool", "region": "string"}


def _data(seed: int, n: int = N) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    amount = rng.normal(50, 20, n).round(2)
    amount[rng.random(n) < 0.1] = np.nan
    regions = np.array(["north", "south", "east", "west", "o'hare", "rare"], dtype=object)
    region = rng.choice(regions, n, p=[0.3, 0.3, 0.2, 0.15, 0.04, 0.01]).tolist()
    return {
        "id": list(range(n)),
        "amount": [None if np.isnan(a) else float(a) for a in amount],
        "visits": [None if i % 17 == 0 else int(v) for i, v in enumerate(rng.poisson(4, n))],
        "member": [None if i % 23 == 0 else bool(v) for i, v in enumerate(rng.random(n) < 0.4)],
        "region": [None if i % 13 == 0 else r for i, r in enumerate(region)],
    }


def _scoring_rows() -> dict[str, list]:
    rows = _data(7, 300)
    rows["region"][:4] = ["never-seen", None, "rare", "o'hare"]  # unseen, missing, infrequent
    return rows


def _fit(spec: PreprocessingSpec, seed: int = 0) -> tuple[Preprocessor, np.ndarray, np.ndarray]:
    data = _data(seed)
    pre = Preprocessor.fit({k: data[k] for k in KINDS}, KINDS, spec)
    X = pre.transform({k: data[k] for k in KINDS})
    rng = np.random.default_rng(seed + 1)
    return pre, X, rng


def _compile(model: ScoringModel, dialect: str, source: str, keep: list[str]) -> CompiledQuery:
    return compile_model(model.schema, model.preprocessor, model.estimator, dialect, source, keep)


def _sql_scores(model: ScoringModel, rows: dict[str, list]) -> np.ndarray:
    con = duckdb.connect()
    table = pa.table(
        {
            "id": pa.array(rows["id"], pa.int64()),
            "amount": pa.array(rows["amount"], pa.float64()),
            "visits": pa.array(rows["visits"], pa.int64()),
            "member": pa.array(rows["member"], pa.bool_()),
            "region": pa.array(rows["region"], pa.string()),
        }
    )
    con.register("population_arrow", table)
    con.execute("create table population as select * from population_arrow")
    compiled = _compile(model, "duckdb", "population", ["id"])
    out = con.execute(f"{compiled.sql} order by id").fetchnumpy()
    assert out["id"].tolist() == rows["id"]
    return np.asarray(out["score"], dtype=np.float64)


def _python_scores(model: ScoringModel, rows: dict[str, list]) -> np.ndarray:
    return model.predict_columns({k: rows[k] for k in KINDS})


def _model(task: str, pre: Preprocessor, estimator: object) -> ScoringModel:
    schema = TrainingSchema("unit", task, ["id"], dict(KINDS), {})
    return ScoringModel(schema, pre, estimator)


SPECS = [
    PreprocessingSpec(),
    PreprocessingSpec(encoding="ordinal", scale=True, impute_numeric="mean"),
    PreprocessingSpec(impute_numeric="none", impute_categorical="most_frequent", max_categories=3),
    PreprocessingSpec(impute_numeric="zero", scale=True, max_categories=None),
]


def _xgb_params(objective: str = "reg:squarederror") -> dict:
    return {
        "n_estimators": 40,
        "max_depth": 4,
        "learning_rate": 0.2,
        "objective": objective,
        "n_jobs": 1,
    }


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.encoding}-{s.impute_numeric}")
def test_xgboost_regressor_and_classifier_match_python(spec: PreprocessingSpec) -> None:
    from xgboost import XGBClassifier, XGBRegressor

    pre, X, rng = _fit(spec)
    y = np.nan_to_num(X[:, 0] * 0.3 + rng.normal(size=len(X)))
    rows = _scoring_rows()
    reg = _model("regression", pre, XGBRegressor(**_xgb_params()).fit(X, y / 20))
    np.testing.assert_allclose(_sql_scores(reg, rows), _python_scores(reg, rows), rtol=0, atol=1e-6)
    # XGBoost adds its leaves in float32, the SQL in float64: on large values the two differ
    # by the float32 rounding of each of the 40 additions (at most half a float32 unit of the
    # running sum each), never by a tree's decision
    big = _model("regression", pre, XGBRegressor(**_xgb_params()).fit(X, y * 1000))
    python = _python_scores(big, rows)
    bound = 40 * np.finfo(np.float32).eps * np.abs(python).max()
    assert np.abs(_sql_scores(big, rows) - python).max() <= bound
    clf = XGBClassifier(**_xgb_params("binary:logistic")).fit(X, (y > np.median(y)).astype(int))
    model = _model("classification", pre, clf)
    np.testing.assert_allclose(
        _sql_scores(model, rows), _python_scores(model, rows), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("learner", ["XLearner", "TLearner", "SLearner"])
def test_meta_learners_match_python(learner: str) -> None:
    from econml import metalearners
    from xgboost import XGBClassifier, XGBRegressor

    pre, X, rng = _fit(PreprocessingSpec(scale=True))  # EconML refuses missing values
    t = (rng.random(len(X)) < 0.5).astype(int)
    y = (rng.random(len(X)) < 0.2 + 0.2 * t * (X[:, 1] > 4)).astype(float)
    cls = getattr(metalearners, learner)
    if learner == "XLearner":
        est = cls(
            models=XGBRegressor(**_xgb_params("binary:logistic")),
            propensity_model=XGBClassifier(**_xgb_params("binary:logistic")),
            cate_models=XGBRegressor(**_xgb_params()),
        )
    elif learner == "TLearner":
        est = cls(models=XGBRegressor(**_xgb_params("binary:logistic")))
    else:
        est = cls(overall_model=XGBRegressor(**_xgb_params()))
    est.fit(y, t, X=X)
    model = _model("uplift", pre, est)
    rows = _scoring_rows()
    sql, python = _sql_scores(model, rows), _python_scores(model, rows)
    assert np.std(python) > 0  # the trees split: the comparison means something
    np.testing.assert_allclose(sql, python, rtol=0, atol=1e-6)


def test_many_trees_are_summed_in_layers() -> None:
    from xgboost import XGBRegressor

    pre, X, rng = _fit(PreprocessingSpec())
    y = np.nan_to_num(X[:, 0] + rng.normal(size=len(X))) / 50
    est = XGBRegressor(n_estimators=300, max_depth=2, learning_rate=0.05, n_jobs=1)
    model = _model("regression", pre, est.fit(X, np.nan_to_num(y)))
    compiled = _compile(model, "duckdb", "population", ["id"])
    assert compiled.trees == 300
    # 300 trees: 19 columns of up to 16 trees, summed 16 at a time into 2, then into the margin
    assert '"_ml_y_0_18"' in compiled.sql and '"_ml_y_0_19"' not in compiled.sql
    assert '+ "_ml_y_1_0" + "_ml_y_1_1" as "_ml_y"' in compiled.sql
    rows = _scoring_rows()
    np.testing.assert_allclose(
        _sql_scores(model, rows), _python_scores(model, rows), rtol=0, atol=1e-6
    )


def _float32_below(x: float, s: np.float32) -> bool:
    with np.errstate(over="ignore"):
        return bool(np.float32(x) < s)  # what XGBoost decides for an input x


def test_thresholds_are_exact_at_float32_boundaries() -> None:
    rng = np.random.default_rng(3)
    splits = [np.float32(v) for v in rng.normal(0, 100, 300)]
    splits += [np.float32(v) for v in (0.0, -0.0, 1.0, 0.5, 1e-40, -1e-40, 3.0e38, -3.4028235e38)]
    checked = 0
    np.seterr(over="ignore")
    for s in splits:
        op, m = threshold(float(s))
        below = float(np.nextafter(s, np.float32(-np.inf)))
        probes = [float(s), below, m, np.nextafter(m, -np.inf), np.nextafter(m, np.inf)]
        probes += [float(np.nextafter(s, np.float32(np.inf))), float(s) + 1e-300]
        for x in probes:
            x = float(x)
            compiled = x < m if op == "<" else x <= m
            assert compiled == _float32_below(x, s), (s, x, op, m)
            checked += 1
    assert checked > 2000


def test_split_boundaries_through_xgboost_and_duckdb() -> None:
    """Inputs exactly at each split value, the float32 below it, the midpoint between them
    and the doubles either side of the midpoint: XGBoost and the SQL send them the same way."""
    import json

    from xgboost import XGBRegressor

    spec = PreprocessingSpec(impute_numeric="none")
    pre, X, rng = _fit(spec)
    y = np.nan_to_num(X[:, 0] * 0.5 + X[:, 1] + rng.normal(size=len(X))) / 50
    est = XGBRegressor(n_estimators=30, max_depth=5, n_jobs=1).fit(X, np.nan_to_num(y))
    model = _model("regression", pre, est)
    trees = json.loads(bytes(est.get_booster().save_raw("json")))["learner"]["gradient_booster"]
    values: dict[int, set[float]] = {0: set(), 1: set()}
    for tree in trees["model"]["trees"]:
        for j, s, left in zip(
            tree["split_indices"], tree["split_conditions"], tree["left_children"], strict=True
        ):
            if left != -1 and j in values:
                s32 = np.float32(s)
                below = float(np.nextafter(s32, np.float32(-np.inf)))
                mid = (below + float(s32)) / 2
                values[j] |= {
                    float(s32),
                    below,
                    mid,
                    float(np.nextafter(mid, -np.inf)),
                    float(np.nextafter(mid, np.inf)),
                }
    probes_amount = sorted(values[0])
    probes_visits = sorted(
        v for v in values[1] if float(v).is_integer()
    )  # ints only for an int column
    n = max(len(probes_amount), 1)
    rows = {
        "id": list(range(n)),
        "amount": probes_amount[:n],
        "visits": [
            int(probes_visits[i % len(probes_visits)]) if probes_visits else 3 for i in range(n)
        ],
        "member": [True] * n,
        "region": ["north"] * n,
    }
    assert n > 20
    sql, python = _sql_scores(model, rows), _python_scores(model, rows)
    np.testing.assert_allclose(sql, python, rtol=0, atol=1e-6)


def test_unsupported_estimators_are_refused_naming_them() -> None:
    from econml.metalearners import XLearner
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from xgboost import XGBClassifier, XGBRegressor

    pre, X, rng = _fit(PreprocessingSpec())
    y = rng.normal(size=len(X))
    linear = _model("regression", pre, LinearRegression().fit(X, y))
    message = refused(lambda: _compile(linear, "duckdb", "p", ["id"]), UnsupportedModelError)
    assert "sklearn.LinearRegression" in message and "--engine python" in message
    t = (rng.random(len(X)) < 0.5).astype(int)
    est = XLearner(
        models=XGBRegressor(n_estimators=5), propensity_model=LogisticRegression(),
        cate_models=XGBRegressor(n_estimators=5),
    ).fit(y, t, X=X)  # fmt: skip
    message = refused(
        lambda: _compile(_model("uplift", pre, est), "duckdb", "p", ["id"]),
        UnsupportedModelError,
    )
    assert "propensity model sklearn.LogisticRegression" in message
    poisson = XGBRegressor(n_estimators=5, objective="count:poisson").fit(X, np.abs(y))
    message = refused(
        lambda: _compile(_model("regression", pre, poisson), "duckdb", "p", ["id"]),
        UnsupportedModelError,
    )
    assert "objective 'count:poisson'" in message
    multi = XGBClassifier(n_estimators=5).fit(X, rng.integers(0, 3, len(X)))
    message = refused(
        lambda: _compile(_model("classification", pre, multi), "duckdb", "p", ["id"]),
        UnsupportedModelError,
    )
    assert "3 classes" in message
    for booster in ("gblinear", "dart"):
        other = XGBRegressor(n_estimators=5, booster=booster).fit(X, y)
        message = refused(
            lambda m=other: _compile(_model("regression", pre, m), "duckdb", "p", ["id"]),
            UnsupportedModelError,
        )
        assert f"booster '{booster}' (gbtree only)" in message


def test_decimal_features_are_refused() -> None:
    from xgboost import XGBRegressor

    pre, X, rng = _fit(PreprocessingSpec())
    model = ScoringModel(
        TrainingSchema("unit", "regression", ["id"], {**KINDS, "amount": "decimal"}, {}),
        pre,
        XGBRegressor(n_estimators=3).fit(X, rng.normal(size=len(X))),
    )
    message = refused(lambda: _compile(model, "duckdb", "p", ["id"]), UnsupportedModelError)
    assert message == (
        "model unit: feature 'amount' is decimal; the SQL engine compiles bool, float, int, "
        "string features only (use --engine python)"
    )


def test_a_query_over_bigquerys_length_limit_is_refused() -> None:
    from xgboost import XGBRegressor

    pre, X, rng = _fit(PreprocessingSpec())
    est = XGBRegressor(n_estimators=600, max_depth=6, learning_rate=0.01, n_jobs=1)
    model = _model("regression", pre, est.fit(X, rng.normal(size=len(X))))
    assert len(_compile(model, "duckdb", "p", ["id"]).sql) > 1024 * 1024  # no limit there
    message = refused(
        lambda: _compile(model, "bigquery", "p", ["id"]), UnsupportedModelError, seconds=30
    )
    assert message.startswith("the compiled bigquery query is ")
    assert "over bigquery's limit of 1,048,576" in message


def test_training_logs_the_sql_of_each_dialect_it_compiles_to_and_says_why_not() -> None:
    from sklearn.linear_model import LinearRegression
    from xgboost import XGBRegressor

    from ml.sqlcompile import model_sql_files

    pre, X, rng = _fit(PreprocessingSpec())
    y = rng.normal(size=len(X))
    small = XGBRegressor(n_estimators=5, max_depth=2).fit(X, y)
    files = model_sql_files(_model("regression", pre, small).schema, pre, small, "population")
    assert set(files) == {"model_sql/duckdb.sql", "model_sql/bigquery.sql"}
    assert "from {{ ref('population') }} as _ml_population" in files["model_sql/bigquery.sql"]
    linear = LinearRegression().fit(X, y)
    files = model_sql_files(_model("regression", pre, linear).schema, pre, linear, "population")
    assert list(files) == ["model_sql/not_compiled.txt"]
    lines = files["model_sql/not_compiled.txt"].splitlines()
    assert [line.split(":")[0] for line in lines] == ["duckdb", "bigquery"]
    assert "estimator sklearn.LinearRegression cannot be compiled to SQL" in lines[0]
