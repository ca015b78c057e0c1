"""Payouts in every currency an account holds, and Stripe's conversions of them, as laws: each
currency the account has an external account for is paid out; a conversion books both sides at
Stripe's rate through the world's fx book, so every currency's journal still sums to zero."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from ledger import commands as c
from ledger import payout_policy as policy
from ledger.application import Ledger
from ledger.errors import InvalidParameterError, PayoutNotFoundError, SluiceError
from ledger.ids import WORLD
from ledger.journal import FX
from ledger.payout_fx import ExternalAccountsReported, PayoutConverted, PayoutFeeCharged
from tests.property.invariants import check_books_conserved
from tests.support import PLATFORM, T0, event_count, new_ledger

SLOT = date(2026, 3, 3)


class Seller:
    def __init__(self) -> None:
        self.app = new_ledger("memory://", lambda: T0)
        self.n = 0
        self.run(c.OpenAccount, account_id=PLATFORM, kind="platform")
        self.run(c.OpenAccount, account_id="acct_s", country="DE", default_currency="usd")
        self.run(c.UpdateAccount, account_id="acct_s", payouts_enabled=True)
        self.run(c.SetPayoutSchedule, account_id="acct_s", interval="daily", delay_days=2)

    def key(self) -> str:
        self.n += 1
        return f"k{self.n}"

    def run(self, cls: type[c.Command], **params: Any) -> dict[str, str]:
        return dict(
            self.app.execute(cls(idempotency_key=self.key(), effective_at=T0, **params)).ids
        )

    def record(self, cls: type[Any], **params: Any) -> dict[str, str]:
        fact = cls(idempotency_key=self.key(), effective_at=T0, **params)
        return dict(self.app.record(fact).ids)

    def fund(self, currency: str, amount: int) -> None:
        self.run(
            c.TopUp, account_id="acct_s", currency=currency, amount_minor=amount, available_on=T0
        )
        self.run(c.ReleaseFunds, account_id="acct_s", currency=currency, until=T0)

    def decide(self, currency: str) -> policy.PayoutDecision:
        app = self.app
        return policy.decide_payout(
            app.get_account("acct_s"), app.get_balance("acct_s", currency), currency, SLOT
        )


def totals(app: Ledger) -> dict[str, int]:
    per_currency, _ = app.journal_totals()
    return per_currency


def fx_book(app: Ledger, currency: str) -> int:
    _, per_book = app.journal_totals()
    return per_book.get((WORLD, FX, currency), 0)


def test_every_currency_with_an_external_account_is_paid_out() -> None:
    s = Seller()
    s.fund("usd", 5_000)
    s.fund("eur", 3_000)
    s.fund("gbp", 700)
    assert s.decide("eur").reason == policy.OTHER_CURRENCY  # no external account in eur yet
    s.record(
        ExternalAccountsReported, account_id="acct_s", by_currency={"eur": "new", "usd": "new"}
    )
    assert (s.decide("usd").reason, s.decide("usd").amount_minor) == (policy.DUE, 5_000)
    assert (s.decide("eur").reason, s.decide("eur").amount_minor) == (policy.DUE, 3_000)
    assert s.decide("gbp").reason == policy.OTHER_CURRENCY  # none in gbp: stays


def test_an_errored_bank_pauses_only_its_own_currency() -> None:
    s = Seller()
    s.fund("usd", 5_000)
    s.fund("eur", 3_000)
    s.record(
        ExternalAccountsReported, account_id="acct_s", by_currency={"eur": "errored", "usd": "new"}
    )
    assert s.decide("eur").reason == policy.PAUSED
    assert s.decide("usd").reason == policy.DUE


def test_a_converted_payout_books_both_sides_through_fx_and_each_currency_sums_to_zero() -> None:
    s = Seller()
    s.fund("usd", 10_000)
    payout = s.run(c.RequestPayout, account_id="acct_s", currency="usd", amount_minor=10_000)
    s.record(
        PayoutConverted,
        payout_id=payout["payout"],
        amount_minor=10_000,
        bank_currency="eur",
        bank_amount_minor=9_238,
        exchange_rate="0.9238",
    )
    check_books_conserved(totals(s.app))
    assert (fx_book(s.app, "usd"), fx_book(s.app, "eur")) == (10_000, -9_238)
    s.run(c.MarkPayoutInTransit, payout_id=payout["payout"])
    s.run(c.MarkPayoutPaid, payout_id=payout["payout"])
    _, per_book = s.app.journal_totals()
    assert per_book[("acct_s", "bank", "eur")] == 9_238
    assert per_book.get(("acct_s", "payouts_in_transit", "usd"), 0) == 0
    recorded = s.app.get_payout(payout["payout"])
    assert recorded is not None and recorded.exchange_rate == "0.9238"


def test_a_failed_converted_payout_returns_the_amount_taken_through_fx() -> None:
    s = Seller()
    s.fund("usd", 10_000)
    payout = s.run(c.RequestPayout, account_id="acct_s", currency="usd", amount_minor=4_000)
    s.record(
        PayoutConverted,
        payout_id=payout["payout"],
        amount_minor=4_000,
        bank_currency="eur",
        bank_amount_minor=3_695,
        exchange_rate="0.9238",
    )
    s.run(c.FailPayout, payout_id=payout["payout"], failure_code="account_closed")
    check_books_conserved(totals(s.app))
    balance = s.app.get_balance("acct_s", "usd")
    assert balance is not None and balance.available_minor == 10_000
    _, per_book = s.app.journal_totals()
    assert per_book.get(("acct_s", "payouts_in_transit", "eur"), 0) == 0


def _converted(**overrides: Any) -> dict[str, Any]:
    return {
        "amount_minor": 1_000,
        "bank_currency": "eur",
        "bank_amount_minor": 924,
        "exchange_rate": "0.9238",
    } | overrides


@pytest.mark.parametrize(
    ("params", "error"),
    [
        (_converted(exchange_rate=0.9238), InvalidParameterError),
        (_converted(exchange_rate="0"), InvalidParameterError),
        (_converted(exchange_rate="1e3"), InvalidParameterError),
        (_converted(bank_currency="usd"), InvalidParameterError),
        (_converted(bank_currency="xxx"), SluiceError),
        (_converted(amount_minor=999), InvalidParameterError),
        (_converted(bank_amount_minor=-1), SluiceError),
        (_converted(payout_id="po_nowhere"), PayoutNotFoundError),
    ],
)
def test_a_malformed_conversion_is_refused_and_records_nothing(
    params: dict[str, Any], error: type[SluiceError]
) -> None:
    s = Seller()
    s.fund("usd", 1_000)
    payout = s.run(c.RequestPayout, account_id="acct_s", currency="usd", amount_minor=1_000)
    before = event_count(s.app)
    with pytest.raises(error):
        s.record(PayoutConverted, **({"payout_id": payout["payout"]} | params))
    assert event_count(s.app) == before


@pytest.mark.parametrize(
    "by_currency",
    [{"xxx": "new"}, {"eur": "lost"}, {"eur": 1}, "eur", {f"c{i:02d}": "new" for i in range(40)}],
)
def test_malformed_external_accounts_are_refused_and_record_nothing(by_currency: Any) -> None:
    s = Seller()
    before = event_count(s.app)
    with pytest.raises(SluiceError):
        s.record(ExternalAccountsReported, account_id="acct_s", by_currency=by_currency)
    assert event_count(s.app) == before


def test_a_conversion_is_recorded_once() -> None:
    s = Seller()
    s.fund("usd", 1_000)
    payout = s.run(c.RequestPayout, account_id="acct_s", currency="usd", amount_minor=1_000)
    fact = PayoutConverted(
        idempotency_key="conv", effective_at=T0, payout_id=payout["payout"], **_converted()
    )
    s.app.record(fact)
    before = event_count(s.app)
    s.app.record(fact)
    assert event_count(s.app) == before
    with pytest.raises(SluiceError):
        s.record(PayoutConverted, payout_id=payout["payout"], **_converted())


# Payout fees: Stripe's (an Instant Payout's) and the platform's (payout monetization) ---------


def test_a_payout_fee_is_taken_from_available_and_the_platforms_share_is_its_revenue() -> None:
    s = Seller()
    s.fund("usd", 10_000)
    payout = s.run(c.RequestPayout, account_id="acct_s", currency="usd", amount_minor=9_000)
    s.record(
        PayoutFeeCharged,
        payout_id=payout["payout"],
        stripe_fee_minor=90,
        application_fee_minor=45,
        platform_account_id=PLATFORM,
    )
    check_books_conserved(totals(s.app))
    seller = s.app.get_balance("acct_s", "usd")
    platform = s.app.get_balance(PLATFORM, "usd")
    assert seller is not None and seller.available_minor == 10_000 - 9_000 - 90 - 45
    assert platform is not None and platform.available_minor == 45
    _, per_book = s.app.journal_totals()
    assert per_book[(WORLD, "stripe_fees", "usd")] == 90


def test_a_failed_payout_returns_stripes_fee_and_the_platform_keeps_its_own() -> None:
    s = Seller()
    s.fund("usd", 10_000)
    payout = s.run(c.RequestPayout, account_id="acct_s", currency="usd", amount_minor=9_000)
    s.record(
        PayoutFeeCharged,
        payout_id=payout["payout"],
        stripe_fee_minor=90,
        application_fee_minor=45,
        platform_account_id=PLATFORM,
    )
    s.run(c.FailPayout, payout_id=payout["payout"], failure_code="account_closed")
    check_books_conserved(totals(s.app))
    seller = s.app.get_balance("acct_s", "usd")
    assert seller is not None and seller.available_minor == 10_000 - 45
    _, per_book = s.app.journal_totals()
    assert per_book.get((WORLD, "stripe_fees", "usd"), 0) == 0


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"stripe_fee_minor": 0}, InvalidParameterError),  # no fee at all
        ({"application_fee_minor": 5}, SluiceError),  # no platform named
        ({"application_fee_minor": 5, "platform_account_id": "acct_s"}, InvalidParameterError),
        ({"application_fee_minor": -5, "platform_account_id": PLATFORM}, SluiceError),
    ],
)
def test_a_malformed_payout_fee_is_refused_and_records_nothing(
    params: dict[str, Any], error: type[SluiceError]
) -> None:
    s = Seller()
    s.fund("usd", 1_000)
    payout = s.run(c.RequestPayout, account_id="acct_s", currency="usd", amount_minor=1_000)
    before = event_count(s.app)
    with pytest.raises(error):
        s.record(
            PayoutFeeCharged, **({"payout_id": payout["payout"], "stripe_fee_minor": 0} | params)
        )
    assert event_count(s.app) == before
