"""A payout as Stripe reports it (``Payout.Reported``, issue 14 item 6): recorded verbatim
through the fact door, once per distinct report; malformed details are refused, recording
nothing."""

from __future__ import annotations

from typing import Any

import pytest

from ledger import facts
from ledger.errors import InvalidParameterError
from tests.unit.test_facts import Books

DETAILS: dict[str, Any] = {
    "automatic": True,
    "stripe_payout_id": "po_1",
    "arrival_date": 1_700_000_000,
    "destination": "ba_1",
    "failure_code": None,
    "failure_message": None,
}


def _books_with_payout() -> Books:
    b = Books()
    b.fact(facts.PayoutCreated, payout_id="po_1", account_id="acct_a", currency="usd",
           amount_minor=500)  # fmt: skip
    return b


def test_stripes_details_of_a_payout_are_recorded_once_per_distinct_report() -> None:
    b = _books_with_payout()
    b.fact(facts.PayoutStatusReported, payout_id="po_1", status="pending", details=DETAILS)
    payout = b.app.get_payout("po_1")
    assert payout is not None and payout.reported == DETAILS
    version = payout.version
    b.fact(facts.PayoutStatusReported, payout_id="po_1", status="pending", details=DETAILS)
    again = b.app.get_payout("po_1")
    assert again is not None and again.version == version  # the same report: nothing new
    failed = DETAILS | {"failure_code": "account_closed", "failure_message": "closed"}
    b.fact(facts.PayoutStatusReported, payout_id="po_1", status="failed",
           failure_code="account_closed", details=failed)  # fmt: skip
    last = b.app.get_payout("po_1")
    assert last is not None and last.reported == failed and last.status == "failed"


@pytest.mark.parametrize(
    "wrong",
    [
        {"stripe_payout_id": "tr_1"},
        {"arrival_date": -1},
        {"arrival_date": True},
        {"automatic": "yes"},
        {"destination": 7},
    ],
)
def test_malformed_details_are_refused_and_record_nothing(wrong: dict[str, Any]) -> None:
    b = _books_with_payout()
    before = b.app.get_payout("po_1")
    with pytest.raises(InvalidParameterError):
        b.fact(facts.PayoutStatusReported, payout_id="po_1", status="pending",
               details=DETAILS | wrong)  # fmt: skip
    after = b.app.get_payout("po_1")
    assert before is not None and after is not None and after.version == before.version
    assert after.reported is None


def test_the_payouts_read_model_shows_stripes_id_once_submitted_and_the_rest_once_reported(
    tmp_path: Any,
) -> None:
    from adapters.bootstrap import bootstrap, init_database, read_model
    from adapters.settings import Settings
    from ledger import commands as c
    from projections import queries
    from projections.runner import Projector
    from tests.support import PLATFORM, T0

    store = Settings(database_url=f"sqlite:///{tmp_path}/p.db")  # a real SQLite store
    init_database(store)
    app = bootstrap(store, clock=lambda: T0)
    n = iter(range(100))

    def run(cls: Any, **params: Any) -> dict[str, str]:
        door = app.record if issubclass(cls, facts.Fact) else app.execute
        return door(cls(idempotency_key=f"k{next(n)}", effective_at=T0, **params)).ids

    run(c.OpenAccount, account_id=PLATFORM, kind="platform")
    run(c.OpenAccount, account_id="acct_a")
    run(c.UpdateAccount, account_id="acct_a", charges_enabled=True, payouts_enabled=True)
    run(facts.ChargeSucceeded, payment_id="ch_1", charge_type="direct", account_id="acct_a",
        currency="usd", amount_minor=1_000, stripe_fee_minor=0, available_on=T0)  # fmt: skip
    run(facts.FundsAvailable, account_id="acct_a", currency="usd", until=T0)
    payout_id = run(c.RequestPayout, account_id="acct_a", currency="usd", amount_minor=500)[
        "payout"
    ]
    run(c.SubmitPayout, payout_id=payout_id, stripe_payout_id="po_9")
    projector = Projector(app, read_model(store))
    projector.run_once()
    [row] = queries.list_payouts(projector.view, account="acct_a").data
    assert (row["stripe_payout_id"], row["destination"], row["automatic"]) == ("po_9", None, None)
    details = DETAILS | {"stripe_payout_id": "po_9", "automatic": False}
    run(facts.PayoutStatusReported, payout_id=payout_id, status="in_transit", details=details)
    projector.run_once()
    [row] = queries.list_payouts(projector.view, account="acct_a").data
    assert {k: row[k] for k in details} == details and row["status"] == "in_transit"
