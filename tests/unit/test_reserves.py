"""Reserves and loss liability in the ledger (``ledger.risk``): a reserve moves available funds
into the reserved book and its release moves them back, with Stripe's amounts; payouts draw on
available only, so reserved funds are never paid out; a hold Stripe made beyond the available
balance is recorded and flagged; malformed facts are refused and record nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from ledger import commands as c
from ledger import risk
from ledger.errors import (
    AccountNotFoundError,
    InsufficientFundsError,
    InvalidAmountError,
    InvalidParameterError,
    SluiceError,
    UnknownCurrencyError,
)
from ledger.payout_policy import DUE, decide_payout
from ledger.risk import ReserveHeld, ReserveReleased, SetLossLiability
from tests.support import PLATFORM, T0, event_count, new_ledger

SELLER = "acct_seller"
LATER = T0 + timedelta(days=30)


@pytest.fixture
def ledger() -> Any:
    app = new_ledger("memory://", lambda: T0)
    keys = iter(range(1_000))

    def run(cls: type[c.Message], **params: Any) -> dict[str, str]:
        message = cls(idempotency_key=f"k{next(keys)}", effective_at=T0, **params)
        result = app.record(message) if isinstance(message, risk.Fact) else app.execute(message)
        return dict(result.ids)

    run(c.OpenAccount, account_id=PLATFORM, kind="platform")
    run(c.OpenAccount, account_id=SELLER)
    run(c.UpdateAccount, account_id=SELLER, charges_enabled=True, payouts_enabled=True)
    run(c.TopUp, account_id=SELLER, currency="usd", amount_minor=5_000)
    run(c.ReleaseFunds, account_id=SELLER, currency="usd", until=T0)
    app.run = run  # type: ignore[attr-defined]
    return app


def books(ledger: Any) -> tuple[int, int]:
    balance = ledger.get_balance(SELLER, "usd")
    return balance.available_minor, balance.reserved_minor


def test_a_reserve_holds_available_funds_back_and_its_release_returns_them(ledger: Any) -> None:
    ledger.run(
        ReserveHeld,
        reserve_id="resh_1",
        account_id=SELLER,
        currency="usd",
        amount_minor=1_200,
        release_after=LATER,
    )
    assert books(ledger) == (3_800, 1_200)
    ledger.run(ReserveReleased, reserve_id="resh_1", release_id="resrel_1", amount_minor=200)
    assert books(ledger) == (4_000, 1_000)
    ledger.run(ReserveReleased, reserve_id="resh_1", release_id="resrel_2", amount_minor=1_000)
    assert books(ledger) == (5_000, 0)
    assert ledger.journal_totals()[0] == {"usd": 0}


def test_reserved_funds_are_never_paid_out_while_held(ledger: Any) -> None:
    ledger.run(
        ReserveHeld, reserve_id="resh_1", account_id=SELLER, currency="usd", amount_minor=1_200
    )
    with pytest.raises(InsufficientFundsError):
        ledger.run(c.RequestPayout, account_id=SELLER, currency="usd", amount_minor=3_801)
    # The payout worker's decision pays what is available, the reserve left alone.
    decided = decide_payout(
        ledger.get_account(SELLER), ledger.get_balance(SELLER, "usd"), "usd", T0.date()
    )
    assert (decided.reason, decided.amount_minor) == (DUE, 3_800)
    ledger.run(c.RequestPayout, account_id=SELLER, currency="usd", amount_minor=3_800)
    assert books(ledger) == (0, 1_200)


def test_a_hold_stripe_made_beyond_the_available_balance_is_recorded_and_flagged(
    ledger: Any,
) -> None:
    ids = ledger.run(
        ReserveHeld, reserve_id="resh_big", account_id=SELLER, currency="usd", amount_minor=6_000
    )
    assert ids["flagged"] == f"{SELLER} usd available -1000 below the floor"
    assert books(ledger) == (-1_000, 6_000)


def test_loss_liability_is_recorded_as_reported_and_changes_are_kept(ledger: Any) -> None:
    ledger.run(SetLossLiability, account_id=SELLER, losses_payments="application")
    found = ledger.repository.get(risk.liability_aggregate_id(SELLER))
    assert found.losses_payments == "application"
    ledger.run(SetLossLiability, account_id=SELLER, losses_payments="stripe")
    found = ledger.repository.get(risk.liability_aggregate_id(SELLER))
    assert (found.losses_payments, found.version) == ("stripe", 2)


Build = Callable[[], c.Message]


def _fact(cls: type[c.Message], **params: Any) -> Build:
    return lambda: cls(idempotency_key="bad", effective_at=T0, **params)


HELD = {"reserve_id": "resh_ok", "account_id": SELLER, "currency": "usd", "amount_minor": 100}
MALFORMED: list[tuple[Build, type[SluiceError], str]] = [
    (_fact(ReserveHeld, **{**HELD, "currency": "xyz"}), UnknownCurrencyError, "currency"),
    (_fact(ReserveHeld, **{**HELD, "amount_minor": 0}), InvalidAmountError, "amount"),
    (_fact(ReserveHeld, **{**HELD, "account_id": "acct_nobody"}), AccountNotFoundError, "account"),
    (_fact(ReserveHeld, **{**HELD, "reserve_id": ""}), InvalidParameterError, "reserve_id"),
    (
        _fact(ReserveHeld, **{**HELD, "release_after": LATER.replace(tzinfo=None)}),
        InvalidParameterError,
        "release_after",
    ),
    (
        _fact(ReserveReleased, reserve_id="resh_nobody", release_id="r", amount_minor=1),
        InvalidParameterError,
        "reserve_id",
    ),
    (
        _fact(ReserveReleased, reserve_id="resh_1", release_id="resrel_x", amount_minor=1_201),
        InvalidParameterError,
        "amount_minor",
    ),
    (
        _fact(ReserveReleased, reserve_id="resh_1", release_id="resrel_1", amount_minor=1),
        InvalidParameterError,
        "release_id",
    ),
    (
        _fact(ReserveReleased, reserve_id="resh_1", release_id="resrel_x", amount_minor=-5),
        InvalidAmountError,
        "amount",
    ),
    (
        _fact(SetLossLiability, account_id=SELLER, losses_payments="platform"),
        InvalidParameterError,
        "losses_payments",
    ),
    (
        _fact(SetLossLiability, account_id=PLATFORM, losses_payments="application"),
        InvalidParameterError,
        "account",
    ),
    (
        _fact(SetLossLiability, account_id="acct_nobody", losses_payments="stripe"),
        AccountNotFoundError,
        "account",
    ),
]


@pytest.mark.parametrize(("build", "error", "param"), MALFORMED)
def test_a_malformed_reserve_or_liability_is_refused_and_records_nothing(
    ledger: Any, build: Build, error: type[SluiceError], param: str
) -> None:
    ledger.run(
        ReserveHeld, reserve_id="resh_1", account_id=SELLER, currency="usd", amount_minor=1_200
    )
    ledger.run(ReserveReleased, reserve_id="resh_1", release_id="resrel_1", amount_minor=200)
    before = event_count(ledger)
    message = build()
    with pytest.raises(SluiceError) as caught:
        if isinstance(message, risk.Fact):
            ledger.record(message)
        else:
            ledger.execute(message)
    assert type(caught.value) is error, caught.value
    assert caught.value.param == param
    assert event_count(ledger) == before


def test_every_risk_message_type_has_malformed_cases() -> None:
    assert {type(build()) for build, _, _ in MALFORMED} == set(risk.HANDLERS)
