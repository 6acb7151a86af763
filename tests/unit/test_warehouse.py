from __future__ import annotations

from pathlib import Path

from ml.config import load_settings
from ml.dbt import Relation
from ml.warehouse import Warehouse, declared_kind


def test_filters_are_bound_parameters_never_sql_text(root: Path) -> None:
    wh = Warehouse(load_settings(root=root))
    value = "cmp'; drop table predictions.xgboost_x_learner; --"
    sql, params = wh._select(
        Relation("warehouse", "analytics_loaders", "score_uplift"),
        ["customer_id"],
        {"campaign_id": value},
    )
    assert (
        sql
        == 'select "customer_id" from "warehouse"."analytics_loaders"."score_uplift" where "campaign_id" = ?'
    )
    assert params == [value]


def test_contract_types_map_to_kinds() -> None:
    assert [
        declared_kind(t)
        for t in ("int64", "BIGINT", "double", "float64", "string", "varchar(20)", "bool", "date")
    ] == ["int", "int", "float", "float", "string", "string", "bool", "date"]
    assert declared_kind("geography") is None
