"""A refund that fails returns its funds, a top-up that fails or is reversed returns them to the
bank, a reversed payout brings them back: recorded as Stripe reports them, refused only when
malformed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from ledger import commands as c
from ledger import facts
from ledger.errors import (
    AccountNotFoundError,
    InvalidAmountError,
    InvalidParameterError,
    PaymentNotFoundError,
    SluiceError,
    UnknownCurrencyError,
)
from ledger.failures import HANDLERS, PayoutReversed, RefundFailed, TopUpReversed
from tests.support import PLATFORM, T0, event_count
from tests.unit.test_facts import Books, check_ledger

DAY = timedelta(days=1)


def refunded_charge() -> Books:
    b = Books()
    b.charge("ch_r", 10_000, T0, fee=320)
    b.fact(facts.FundsAvailable, T0, account_id=PLATFORM, currency="usd", until=T0)
    b.fact(facts.ChargeRefunded, T0 + DAY, payment_id="ch_r", refund_id="re_r", amount_minor=4_000)
    topped_up(b)
    return b


def test_a_failed_refund_returns_its_funds_to_available() -> None:
    b = refunded_charge()
    assert b.books(PLATFORM) == (5_000, 10_000 - 320 - 4_000)  # a top-up on its way
    ids = b.fact(RefundFailed, T0 + 2 * DAY, payment_id="ch_r", refund_id="re_r",
                 amount_minor=4_000, available_on=T0 + 2 * DAY)  # fmt: skip
    assert ids["refund_failure"] == "re_r" and "flagged" not in ids
    assert b.books(PLATFORM) == (5_000, 10_000 - 320)
    check_ledger(b.app)


def test_a_failure_larger_than_its_refund_is_recorded_and_flagged() -> None:
    b = refunded_charge()
    ids = b.fact(RefundFailed, T0 + 2 * DAY, payment_id="ch_r", refund_id="re_r",
                 amount_minor=5_000, available_on=T0 + 2 * DAY)  # fmt: skip
    assert "more than its 4000" in ids["flagged"]
    check_ledger(b.app)


Build = Callable[[], Any]


def _f(**params: Any) -> Build:
    defaults = {"payment_id": "ch_r", "refund_id": "re_r", "amount_minor": 100,
                "available_on": T0 + 2 * DAY}  # fmt: skip
    return lambda: RefundFailed(idempotency_key="bad", effective_at=T0 + 2 * DAY,
                                **(defaults | params))  # fmt: skip


MALFORMED: list[tuple[Build, type[SluiceError]]] = [
    (_f(payment_id="ch_nope"), PaymentNotFoundError),
    (_f(refund_id="re_never"), InvalidParameterError),
    (_f(refund_id=None), InvalidParameterError),
    (_f(amount_minor=0), InvalidAmountError),
    (_f(amount_minor="100"), InvalidAmountError),
    (_f(available_on=T0.replace(tzinfo=None)), InvalidParameterError),
]


def _t(**params: Any) -> Build:
    defaults = {"topup_id": "tu_t", "account_id": PLATFORM, "currency": "usd",
                "amount_minor": 100, "available_on": T0 + 2 * DAY, "status": "failed"}  # fmt: skip
    return lambda: TopUpReversed(idempotency_key="bad", effective_at=T0 + DAY,
                                 **(defaults | params))  # fmt: skip


MALFORMED += [
    (_t(topup_id="tu_never"), InvalidParameterError),
    (_t(account_id="acct_nobody"), AccountNotFoundError),
    (_t(currency="USD"), UnknownCurrencyError),
    (_t(amount_minor=-100), InvalidAmountError),
    (_t(status="succeeded"), InvalidParameterError),
    (_t(available_on=T0.replace(tzinfo=None)), InvalidParameterError),
]


def _p(**params: Any) -> Build:
    defaults = {"payout_id": "po_r", "original_payout_id": "po_o", "account_id": "acct_a",
                "currency": "usd", "amount_minor": 100, "available_on": T0 + DAY}  # fmt: skip
    return lambda: PayoutReversed(idempotency_key="bad", effective_at=T0 + DAY,
                                  **(defaults | params))  # fmt: skip


MALFORMED += [
    (_p(account_id="acct_nobody"), AccountNotFoundError),
    (_p(currency="xxx"), UnknownCurrencyError),
    (_p(amount_minor=0), InvalidAmountError),
    (_p(original_payout_id=""), InvalidParameterError),
    (_p(original_payout_id="po_r"), InvalidParameterError),
    (_p(available_on=T0.replace(tzinfo=None)), InvalidParameterError),
]


def test_a_reversed_payout_brings_its_funds_back_from_the_bank_once() -> None:
    b = Books()
    ids = b.fact(PayoutReversed, T0 + DAY, payout_id="po_r", original_payout_id="po_o",
                 account_id="acct_a", currency="usd", amount_minor=2_500,
                 available_on=T0 + DAY)  # fmt: skip
    assert ids == {"payout": "po_r", "original_payout": "po_o"}
    assert b.books("acct_a") == (0, 2_500)
    _, per_book = b.app.journal_totals()
    assert per_book[("acct_a", "bank", "usd")] == -2_500
    with pytest.raises(InvalidParameterError):
        b.fact(PayoutReversed, T0 + DAY, payout_id="po_r", original_payout_id="po_o",
               account_id="acct_a", currency="usd", amount_minor=2_500,
               available_on=T0 + DAY)  # fmt: skip
    check_ledger(b.app)


def topped_up(b: Books) -> None:
    b.command(c.TopUp, T0, account_id=PLATFORM, currency="usd", amount_minor=5_000,
              topup_id="tu_t", available_on=T0 + 2 * DAY)  # fmt: skip


def test_a_failed_top_up_nets_its_pending_funds_to_zero() -> None:
    b = refunded_charge()
    pending_before, available_before = b.books(PLATFORM)
    b.fact(TopUpReversed, T0 + DAY, topup_id="tu_t", account_id=PLATFORM, currency="usd",
           amount_minor=5_000, available_on=T0 + 2 * DAY, status="failed")  # fmt: skip
    assert b.books(PLATFORM) == (pending_before - 5_000, available_before)
    check_ledger(b.app)


def test_a_reversed_top_up_leaves_the_available_balance_even_below_zero() -> None:
    b = Books()
    topped_up(b)
    b.fact(facts.FundsAvailable, T0 + 2 * DAY, account_id=PLATFORM, currency="usd",
           until=T0 + 2 * DAY)  # fmt: skip
    b.fact(facts.PayoutCreated, T0 + 2 * DAY, payout_id="po_p", account_id=PLATFORM,
           currency="usd", amount_minor=3_000)  # fmt: skip
    ids = b.fact(TopUpReversed, T0 + 3 * DAY, topup_id="tu_t", account_id=PLATFORM,
                 currency="usd", amount_minor=5_000, available_on=T0 + 3 * DAY,
                 status="reversed")  # fmt: skip
    assert b.books(PLATFORM) == (0, -3_000)
    assert "below the floor" in ids["flagged"]  # recorded, and named
    check_ledger(b.app)


@pytest.mark.parametrize(("build", "error"), MALFORMED)
def test_a_malformed_refund_failure_is_refused_and_records_nothing(
    build: Build, error: type[SluiceError]
) -> None:
    b = refunded_charge()
    before = event_count(b.app)
    with pytest.raises(SluiceError) as caught:
        b.app.record(build())
    assert type(caught.value) is error, caught.value
    assert event_count(b.app) == before


def test_a_refund_fails_once() -> None:
    b = refunded_charge()
    b.fact(RefundFailed, T0 + 2 * DAY, payment_id="ch_r", refund_id="re_r", amount_minor=4_000,
           available_on=T0 + 2 * DAY)  # fmt: skip
    with pytest.raises(InvalidParameterError):
        b.fact(RefundFailed, T0 + 2 * DAY, payment_id="ch_r", refund_id="re_r",
               amount_minor=4_000, available_on=T0 + 2 * DAY)  # fmt: skip


def test_every_failure_fact_type_has_malformed_cases() -> None:
    assert {type(build()) for build, _ in MALFORMED} == set(HANDLERS)
