"""Facts are not commands: what Stripe reports as done is recorded as reported.

Each case sets up the state in which Sluice's own command is refused, then shows the fact
Stripe reports for the same movement being recorded, with Stripe's numbers, and flagged where it
breaks an expectation. Malformed facts (bugs at the edge) are still refused, recording nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import commands as c
from ledger import facts
from ledger.application import Ledger
from ledger.balances import Balance
from ledger.errors import (
    AccountNotFoundError,
    ChargeDisputedError,
    InsufficientFundsError,
    InvalidAmountError,
    InvalidParameterError,
    InvariantViolation,
    PaymentNotFoundError,
    PayoutNotFoundError,
    SluiceError,
    TransferExceedsSourceError,
    TransferNotFoundError,
    UnknownCurrencyError,
)
from ledger.journal import BALANCE_BOOKS
from tests.property.invariants import check_balances_mirror_journal, check_books_conserved
from tests.support import PLATFORM, T0, event_count, new_ledger

DAY = timedelta(days=1)


def check_ledger(app: Ledger) -> None:
    """The journal conserves money and every Balance mirrors its postings."""
    per_currency, per_book = app.journal_totals()
    check_books_conserved(per_currency)
    balances = {}
    for owner, book, currency in per_book:
        found = app.get_balance(owner, currency) if book in BALANCE_BOOKS else None
        if found is not None:
            balances[(owner, currency)] = (
                found.pending_minor,
                found.available_minor,
                found.reserved_minor,
            )
    check_balances_mirror_journal(balances, per_book)


class Books:
    """A platform with one seller, driven through both doors with fresh keys."""

    def __init__(self) -> None:
        self.app: Ledger = new_ledger("memory://", lambda: T0)
        self._n = 0
        self.command(c.OpenAccount, account_id=PLATFORM, kind="platform")
        self.command(c.OpenAccount, account_id="acct_a")
        self.command(
            c.UpdateAccount, account_id="acct_a", charges_enabled=True, payouts_enabled=True
        )

    def _key(self) -> str:
        self._n += 1
        return f"k{self._n}"

    def command(self, cls: type[c.Command], at: datetime = T0, **params: Any) -> dict[str, str]:
        return self.app.execute(cls(idempotency_key=self._key(), effective_at=at, **params)).ids

    def fact(self, cls: type[facts.Fact], at: datetime = T0, **params: Any) -> dict[str, str]:
        return self.app.record(cls(idempotency_key=self._key(), effective_at=at, **params)).ids

    def charge(self, payment_id: str, amount: int, available_on: datetime, fee: int = 0) -> None:
        self.fact(
            facts.ChargeSucceeded,
            payment_id=payment_id,
            charge_type="separate",
            currency="usd",
            amount_minor=amount,
            stripe_fee_minor=fee,
            available_on=available_on,
        )

    def books(self, account: str) -> tuple[int, int]:
        balance = self.app.get_balance(account, "usd")
        return (0, 0) if balance is None else (balance.pending_minor, balance.available_minor)


def test_a_transfer_stripe_made_beyond_the_platforms_available_funds_is_recorded_and_flagged() -> (
    None
):
    """Issue 8, defect 1: a sourced transfer 'automatically succeeds' at Stripe even when the
    platform's available balance can't cover it (here: its charge was refunded meanwhile)."""
    b = Books()
    b.charge("ch_4", 56_736, T0 + 4 * DAY, fee=1_675)
    b.charge("ch_5", 3_726, T0 + 4 * DAY, fee=138)
    b.fact(
        facts.FundsAvailable, T0 + 4 * DAY, account_id=PLATFORM, currency="usd", until=T0 + 4 * DAY
    )
    b.fact(
        facts.ChargeRefunded, T0 + 5 * DAY, payment_id="ch_4", refund_id="re_4", amount_minor=56_736
    )
    later = T0 + 8 * DAY
    with pytest.raises(InsufficientFundsError):  # Sluice's own command keeps its check
        b.command(
            c.CreateTransfer, later, destination_account_id="acct_a", currency="usd",
            amount_minor=1_996, source_payment_id="ch_5",
        )  # fmt: skip
    ids = b.fact(
        facts.TransferCreated, later, transfer_id="tr_1", destination_account_id="acct_a",
        currency="usd", amount_minor=1_996, available_on=T0 + 4 * DAY, source_payment_id="ch_5",
    )  # fmt: skip
    assert b.books(PLATFORM) == (0, -83)  # as Stripe's GET /v1/balance says
    assert b.books("acct_a") == (0, 1_996)
    assert "acct_platform usd available -83 below the floor" in ids["flagged"]
    check_ledger(b.app)


def test_a_transfer_sourced_from_a_settled_charge_is_available_at_once_whatever_the_lots_hold() -> (
    None
):
    """Issue 8, defect 2: the platform's lot for the charge netted to zero, so no release ever
    moved Sluice's ``released_through`` past it; availability follows the charge's own instant."""
    b = Books()
    b.command(c.OpenAccount, account_id="acct_b")
    b.charge("ch_9", 138, T0 + 3 * DAY, fee=34)
    b.fact(
        facts.TransferCreated, T0, transfer_id="tr_a", destination_account_id="acct_b",
        currency="usd", amount_minor=104, available_on=T0 + 3 * DAY, source_payment_id="ch_9",
    )  # fmt: skip
    assert b.books(PLATFORM) == (0, 0)  # the charge's lot netted to zero and is gone
    b.fact(
        facts.TransferCreated, T0 + 5 * DAY, transfer_id="tr_b", destination_account_id="acct_a",
        currency="usd", amount_minor=23, available_on=T0 + 3 * DAY, source_payment_id="ch_9",
    )  # fmt: skip
    assert b.books(PLATFORM) == (0, -23)
    assert b.books("acct_a") == (0, 23)
    # Sluice's own command follows the same rule.
    b.charge("ch_10", 1_000, T0 + 3 * DAY)
    b.fact(
        facts.FundsAvailable, T0 + 3 * DAY, account_id=PLATFORM, currency="usd", until=T0 + 3 * DAY
    )
    b.command(
        c.CreateTransfer, T0 + 6 * DAY, destination_account_id="acct_a", currency="usd",
        amount_minor=500, source_payment_id="ch_10",
    )  # fmt: skip
    assert b.books("acct_a") == (0, 523)
    check_ledger(b.app)


@pytest.mark.parametrize(("fee_returned", "expected_available"), [(True, 1_000), (False, -500)])
def test_a_won_dispute_reinstates_what_stripes_balance_transaction_says(
    fee_returned: bool, expected_available: int
) -> None:
    """Issue 8, defect 3: whether the dispute fee comes back on a win is Stripe's to say."""
    b = Books()
    b.charge("ch_d", 1_000, T0)
    b.fact(facts.FundsAvailable, T0, account_id=PLATFORM, currency="usd", until=T0)
    b.fact(
        facts.DisputeFundsWithdrawn, T0 + DAY, payment_id="ch_d", dispute_id="dp_1",
        amount_minor=1_000, fee_minor=1_500,
    )  # fmt: skip
    assert b.books(PLATFORM) == (0, -1_500)
    b.fact(
        facts.DisputeFundsReinstated, T0 + 2 * DAY, payment_id="ch_d", dispute_id="dp_1",
        amount_minor=1_000, fee_minor=-1_500 if fee_returned else 0,
    )  # fmt: skip
    assert b.books(PLATFORM) == (0, expected_available)
    check_ledger(b.app)


def test_a_refund_stripe_made_on_a_disputed_charge_is_recorded() -> None:
    """Reordered delivery folds a dispute before a refund Stripe made earlier."""
    b = Books()
    b.charge("ch_r", 2_000, T0)
    b.fact(
        facts.DisputeFundsWithdrawn, T0 + DAY, payment_id="ch_r", dispute_id="dp_r",
        amount_minor=2_000, fee_minor=0,
    )  # fmt: skip
    with pytest.raises(ChargeDisputedError):
        b.command(c.RefundPayment, payment_id="ch_r", amount_minor=500)
    b.fact(facts.ChargeRefunded, payment_id="ch_r", refund_id="re_r", amount_minor=500)
    payment = b.app.get_payment("ch_r")
    assert payment is not None and payment.refunds == {"re_r": 500}
    check_ledger(b.app)


def test_transfers_past_their_source_charge_are_recorded_and_flagged_as_facts_only() -> None:
    b = Books()
    b.charge("ch_s", 1_000, T0 + DAY)
    with pytest.raises(TransferExceedsSourceError):
        b.command(
            c.CreateTransfer, destination_account_id="acct_a", currency="usd",
            amount_minor=1_001, source_payment_id="ch_s",
        )  # fmt: skip
    ids = b.fact(
        facts.TransferCreated, transfer_id="tr_s", destination_account_id="acct_a",
        currency="usd", amount_minor=1_001, available_on=T0 + DAY, source_payment_id="ch_s",
    )  # fmt: skip
    assert "transfers from ch_s exceed the charge" in ids["flagged"]
    check_ledger(b.app)


def test_the_doors_do_not_mix() -> None:
    b = Books()
    fact = facts.FundsAvailable(
        idempotency_key="x", effective_at=T0, account_id=PLATFORM, currency="usd", until=T0
    )
    command = c.ReleaseFunds(
        idempotency_key="y", effective_at=T0, account_id=PLATFORM, currency="usd", until=T0
    )
    with pytest.raises(InvariantViolation):
        b.app.execute(fact)  # type: ignore[arg-type]
    with pytest.raises(InvariantViolation):
        b.app.record(command)  # type: ignore[arg-type]


BadFact = Callable[[], facts.Fact]


def _f(cls: type[facts.Fact], **params: Any) -> BadFact:
    return lambda: cls(idempotency_key="bad", effective_at=T0, **params)


MALFORMED: list[tuple[BadFact, type[SluiceError]]] = [
    (_f(facts.ChargeSucceeded, payment_id="ch_x", charge_type="separate", currency="xxx",
        amount_minor=100, stripe_fee_minor=0, available_on=T0), UnknownCurrencyError),
    (_f(facts.ChargeSucceeded, payment_id="ch_x", charge_type="direct", currency="usd",
        amount_minor=100, stripe_fee_minor=0, available_on=T0, account_id="acct_nobody"),
     AccountNotFoundError),
    (_f(facts.TransferCreated, transfer_id="tr_x", destination_account_id="acct_a",
        currency="usd", amount_minor=-5, available_on=T0), InvalidAmountError),
    (_f(facts.TransferCreated, transfer_id="tr_x", destination_account_id="acct_a",
        currency="usd", amount_minor=5, available_on=T0, source_payment_id="ch_nope"),
     PaymentNotFoundError),
    (_f(facts.TransferReversed, transfer_id="tr_nope", reversal_id="trr_x", amount_minor=5),
     TransferNotFoundError),
    (_f(facts.ChargeRefunded, payment_id="ch_nope", refund_id="re_x", amount_minor=5),
     PaymentNotFoundError),
    (_f(facts.ApplicationFeeRefunded, payment_id="ch_nope", fee_refund_id="fr_x",
        amount_minor=5), PaymentNotFoundError),
    (_f(facts.DisputeFundsWithdrawn, payment_id="ch_nope", dispute_id="dp_x", amount_minor=5,
        fee_minor=0), PaymentNotFoundError),
    (_f(facts.DisputeFundsReinstated, payment_id="ch_nope", dispute_id="dp_x",
        amount_minor=5, fee_minor=0), PaymentNotFoundError),
    (_f(facts.DisputeLost, payment_id="ch_nope", dispute_id="dp_x"), PaymentNotFoundError),
    (_f(facts.PayoutCreated, payout_id="po_x", account_id="acct_a", currency="usd",
        amount_minor=0), InvalidAmountError),
    (_f(facts.PayoutStatusReported, payout_id="po_nope", status="paid"), PayoutNotFoundError),
    (_f(facts.FundsAvailable, account_id="acct_a", currency="usd",
        until=T0.replace(tzinfo=None)), InvalidParameterError),
    (_f(facts.TopUpSucceeded, topup_id="tu_x", account_id="acct_nobody", currency="usd",
        amount_minor=5, available_on=T0), AccountNotFoundError),
    (_f(facts.OpeningBalanceImported, account_id="acct_a", currency="usd", available_minor=5,
        pending=((T0, 5),)), InvalidParameterError),  # a lot due at the cut-over, not after
    (_f(facts.BalanceTransactionsImported, account_id="acct_a", cursor="txn_x"),
     InvalidParameterError),  # no opening balance to resume
]  # fmt: skip


@pytest.mark.parametrize(("build", "error"), MALFORMED)
def test_a_malformed_fact_is_refused_with_its_specific_error_and_records_nothing(
    build: BadFact, error: type[SluiceError]
) -> None:
    b = Books()
    before = event_count(b.app)
    with pytest.raises(SluiceError) as caught:
        b.app.record(build())
    assert type(caught.value) is error, caught.value
    assert event_count(b.app) == before


def test_every_fact_type_has_malformed_cases() -> None:
    assert {type(build()) for build, _ in MALFORMED} == set(facts.FACT_HANDLERS)


@settings(max_examples=60, deadline=None)
@given(
    funded=st.integers(min_value=0, max_value=10_000),
    amounts=st.lists(st.integers(min_value=1, max_value=5_000), min_size=1, max_size=8),
)
def test_unsourced_transfers_stripe_reports_are_never_refused_and_the_books_follow_them(
    funded: int, amounts: list[int]
) -> None:
    """Law: whatever the platform holds, every transfer Stripe reports is recorded; available
    falls by exactly their sum; a fact is flagged exactly when it took available lower below
    the floor; the journal balances throughout."""
    b = Books()
    if funded:
        b.charge("ch_f", funded, T0)
        b.fact(facts.FundsAvailable, account_id=PLATFORM, currency="usd", until=T0)
    available = funded
    for n, amount in enumerate(amounts):
        ids = b.fact(
            facts.TransferCreated, transfer_id=f"tr_{n}", destination_account_id="acct_a",
            currency="usd", amount_minor=amount, available_on=T0,
        )  # fmt: skip
        available -= amount
        assert ("flagged" in ids) == (available < 0)
    assert b.books(PLATFORM) == (0, funded - sum(amounts))
    assert b.books("acct_a") == (0, sum(amounts))
    check_ledger(b.app)


def test_funds_stripe_reports_available_are_settled_even_when_their_lots_netted_to_zero() -> None:
    """A destination charge whose platform share nets to zero leaves no lot to release; Stripe's
    report still settles it, so read models stop showing its movements as pending."""
    b = Books()
    b.fact(
        facts.ChargeSucceeded, payment_id="ch_z", charge_type="destination", currency="usd",
        amount_minor=54, stripe_fee_minor=1, application_fee_minor=1, account_id="acct_a",
        available_on=T0,
    )  # fmt: skip
    assert b.books(PLATFORM) == (0, 0)
    b.fact(facts.FundsAvailable, account_id=PLATFORM, currency="usd", until=T0)
    balance = b.app.get_balance(PLATFORM, "usd")
    assert balance is not None and balance.released_through == T0
    settled = [e for _, e in b.app.iter_events() if isinstance(e, Balance.Settled)]
    assert [(e.account_id, e.currency, e.until) for e in settled] == [(PLATFORM, "usd", T0)]
    # Reported again (a duplicate, or an older instant): nothing more is recorded.
    before = event_count(b.app)
    b.fact(facts.FundsAvailable, account_id=PLATFORM, currency="usd", until=T0)
    assert event_count(b.app) == before + 1  # the fact's own idempotency record only
    check_ledger(b.app)
