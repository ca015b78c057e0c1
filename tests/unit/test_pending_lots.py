"""A balance keeps a bounded number of pending lots; exceeding it rejects one command cleanly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import ledger.balances
import ledger.engine
from ledger.application import Ledger
from ledger.errors import PendingLotsExceededError

T0 = datetime(2026, 4, 1, 12, 30, tzinfo=UTC)


def make_ledger() -> Ledger:
    app = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=lambda: T0)
    app.open_account(idempotency_key="p", account_id="acct_platform", kind="platform")
    app.open_account(idempotency_key="s", account_id="acct_s")
    return app


def pay(app: Ledger, n: int, available_on: datetime | None) -> None:
    app.record_payment(
        idempotency_key=f"pay{n}",
        charge_type="destination",
        currency="usd",
        amount_minor=1_000,
        account_id="acct_s",
        effective_at=T0,
        available_on=available_on,
    )


def test_derived_available_on_falls_on_a_utc_midnight_so_lots_stay_few() -> None:
    app = make_ledger()
    for n in range(5):
        pay(app, n, None)
    balance = app.get_balance("acct_s", "usd")
    assert balance is not None
    assert balance.lots == [[datetime(2026, 4, 3, tzinfo=UTC), 5_000]]


def test_a_payment_beyond_the_lot_limit_is_rejected_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger.balances, "LOTS_MAX", 3)
    monkeypatch.setattr(ledger.engine, "LOTS_MAX", 3)
    app = make_ledger()
    for n in range(3):
        pay(app, n, T0 + timedelta(days=2, seconds=n))
    events = len(list(app.iter_events()))
    with pytest.raises(PendingLotsExceededError) as refused:
        pay(app, 9, T0 + timedelta(days=9))
    assert refused.value.code == "pending_lots_exceeded"
    assert len(list(app.iter_events())) == events
    pay(app, 10, T0 + timedelta(days=2, seconds=1))  # an existing lot still takes funds
