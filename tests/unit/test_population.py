from __future__ import annotations

import datetime as dt

from ml.population import described


def test_a_context_is_described_as_the_user_wrote_it() -> None:
    context = {"as_of_date": dt.date(2026, 12, 1), "campaign_id": "cmp_2026_12", "wave": 3}
    assert described(context) == "as_of_date=2026-12-01, campaign_id='cmp_2026_12', wave=3"
    assert described({}) == "no filter"
    long = described({"campaign_id": "x" * 10_000})
    assert long.startswith("campaign_id='xxx") and long.endswith("(10,002 chars)")
    assert len(long) < 100
