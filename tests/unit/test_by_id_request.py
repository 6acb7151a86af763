"""A request by id names its context with the recipe's declared types, as `ml materialize`
names the set it writes: the same store key for the same context, a wrong type named."""

from __future__ import annotations

import pytest

from ml.errors import ContractError
from ml.model import TrainingSchema
from ml.online import context_key
from ml.recipe import ContextParam, coerce_context_value
from ml.serving.by_id import parse_request

SCHEMA = TrainingSchema(
    recipe="r",
    task="uplift",
    entity_keys=["customer_id"],
    features={"x": "float"},
    context={"campaign_id": "campaign_id", "week": "week", "day": "day", "share": "share"},
)
DECLARED = {
    "campaign_id": ContextParam(type="str"),
    "week": ContextParam(type="int"),
    "day": ContextParam(type="date"),
    "share": ContextParam(type="float"),
}
GOOD = {"campaign_id": "cmp_1", "week": 49, "day": "2026-12-01", "share": 1}


def _body(**context):
    return {"context": {**GOOD, **context}, "entities": [{"customer_id": 7}]}


def test_the_typed_context_names_what_materialize_wrote() -> None:
    request = parse_request(_body(), SCHEMA, 10, DECLARED)
    materialized = {name: coerce_context_value(DECLARED[name], v) for name, v in GOOD.items()}
    assert context_key(request.typed) == context_key(materialized)
    assert request.context == GOOD  # echoed as sent
    assert request.keys == [(7,)]


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"campaign_id": 12}, "context.campaign_id: expected a string, got int 12"),
        ({"week": "49"}, "context.week: expected an integer, got str '49'"),
        ({"week": 49.5}, "context.week: expected an integer, got float 49.5"),
        ({"day": "01/12/2026"}, "context.day: expected an ISO date (YYYY-MM-DD), got str"),
        ({"share": "1"}, "context.share: expected a number, got str '1'"),
    ],
)
def test_a_context_value_of_the_wrong_type_is_named(context, message) -> None:
    with pytest.raises(ContractError) as caught:
        parse_request(_body(**context), SCHEMA, 10, DECLARED)
    assert caught.value.message.startswith(message)


def test_without_declarations_the_values_pass_as_sent() -> None:
    request = parse_request(_body(week="49"), SCHEMA, 10)
    assert request.typed == request.context
