"""Reconciliation's ledger side: breaks with a name, clearing books that return to zero, a cursor
that only moves forward, and movements Stripe makes on its own recorded as reported."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import commands as c
from ledger import facts
from ledger import reconciliation as r
from ledger.application import Ledger
from ledger.errors import InvalidParameterError
from ledger.journal import CLEARING
from tests.support import PLATFORM, T0, new_ledger
from tests.unit.test_facts import check_ledger

SELLER = "acct_seller"
DAY = timedelta(days=1)


def books() -> Ledger:
    app = new_ledger("memory://", lambda: T0)
    app.execute(
        c.OpenAccount(idempotency_key="p", effective_at=T0, account_id=PLATFORM, kind="platform")
    )
    app.execute(c.OpenAccount(idempotency_key="s", effective_at=T0, account_id=SELLER))
    return app


def clearing(app: Ledger, account: str = SELLER, currency: str = "usd") -> int:
    _, per_book = app.journal_totals()
    return per_book.get((account, CLEARING, currency), 0)


def report(app: Ledger, key: str, n: int, **kw: object) -> None:
    params: dict[str, object] = {
        "account_id": SELLER,
        "currency": "usd",
        "key": "ch_1",
        "break_name": r.MISSING_IN_LEDGER,
        "stripe_ref": "txn_1 ch_1",
        "ledger_ref": "",
        "difference": {"amount": 1000, "fee": 0, "net": 1000},
    }
    params.update(kw)
    app.execute(r.ReportBreak(idempotency_key=f"{key}:{n}", effective_at=T0 + n * DAY, **params))  # type: ignore[arg-type]


def test_a_break_books_its_difference_in_clearing_and_resolving_returns_it_to_zero() -> None:
    app = books()
    report(app, "b", 1, clearing_available_minor=1000)
    balance = app.get_balance(SELLER, "usd")
    assert balance is not None and balance.available_minor == 1000
    assert clearing(app) == -1000
    found = r.get_break(app, SELLER, "usd", "ch_1")
    assert found is not None and found.status == r.OPEN and found.name == r.MISSING_IN_LEDGER
    assert found.first_seen == T0 + DAY
    app.execute(
        r.ResolveBreak(
            idempotency_key="res",
            effective_at=T0 + 2 * DAY,
            account_id=SELLER,
            currency="usd",
            key="ch_1",
            how="refetched",
        )
    )
    found = r.get_break(app, SELLER, "usd", "ch_1")
    assert found is not None and found.status == r.RESOLVED and found.resolved_at == T0 + 2 * DAY
    assert clearing(app) == 0
    balance = app.get_balance(SELLER, "usd")
    assert balance is not None and balance.available_minor == 0
    check_ledger(app)


def test_a_pending_difference_follows_the_release_and_still_reverses_to_zero() -> None:
    app = books()
    on = T0 + 3 * DAY
    report(app, "b", 1, clearing_pending_minor=700, clearing_on=on)
    balance = app.get_balance(SELLER, "usd")
    assert balance is not None and balance.pending_minor == 700
    app.record(
        facts.FundsAvailable(
            idempotency_key="rel", effective_at=on, account_id=SELLER, currency="usd", until=on
        )
    )
    balance = app.get_balance(SELLER, "usd")
    assert balance is not None and (balance.pending_minor, balance.available_minor) == (0, 700)
    app.execute(
        r.ResolveBreak(
            idempotency_key="res",
            effective_at=on,
            account_id=SELLER,
            currency="usd",
            key="ch_1",
            how="matched",
        )
    )
    balance = app.get_balance(SELLER, "usd")
    assert balance is not None and (balance.pending_minor, balance.available_minor) == (0, 0)
    assert clearing(app) == 0
    check_ledger(app)


def test_a_changed_break_rebooks_its_clearing_and_an_unchanged_one_records_nothing() -> None:
    app = books()
    report(app, "b", 1, clearing_available_minor=1000)
    before = app.recorder.max_notification_id()
    report(app, "b", 2, clearing_available_minor=1000)  # same observation, new key
    after_same = app.recorder.max_notification_id()
    report(
        app,
        "b",
        3,
        break_name=r.AMOUNT_MISMATCH,
        difference={"amount": 40, "fee": 0, "net": 40},
        clearing_available_minor=40,
    )
    found = r.get_break(app, SELLER, "usd", "ch_1")
    assert (
        found is not None and found.name == r.AMOUNT_MISMATCH and found.difference["amount"] == 40
    )
    assert clearing(app) == -40
    # Only the command record of the repeat was written: no break event, no entry.
    assert after_same is not None and before is not None and after_same - before == 1
    check_ledger(app)


def test_unknown_break_names_are_refused() -> None:
    app = books()
    with pytest.raises(InvalidParameterError):
        report(app, "b", 1, break_name="it_is_fine")


def test_the_cursor_moves_forward_only() -> None:
    app = books()
    app.execute(
        r.AdvanceCursor(
            idempotency_key="c1", effective_at=T0, account_id=SELLER, cursor=100, checked=3
        )
    )
    assert r.get_cursor(app, SELLER) == 100
    with pytest.raises(InvalidParameterError):
        app.execute(
            r.AdvanceCursor(idempotency_key="c2", effective_at=T0, account_id=SELLER, cursor=99)
        )
    assert r.get_cursor(app, SELLER) == 100


@pytest.mark.parametrize(
    ("bt_type", "amount", "fee", "pending"),
    [
        ("adjustment", -2500, 0, False),
        ("stripe_fee", -300, 0, False),
        ("adjustment", 1200, 200, True),
    ],
)
def test_a_movement_stripe_made_on_its_own_is_booked_as_reported(
    bt_type: str, amount: int, fee: int, pending: bool
) -> None:
    app = books()
    available_on = T0 + (3 * DAY if pending else timedelta(0))
    fact = facts.StripeAdjustment(
        idempotency_key=f"stripe:txn:{bt_type}",
        effective_at=T0,
        movement_id=f"txn_{bt_type}",
        account_id=SELLER,
        currency="usd",
        bt_type=bt_type,
        amount_minor=amount,
        fee_minor=fee,
        available_on=available_on,
    )
    app.record(fact)
    balance = app.get_balance(SELLER, "usd")
    assert balance is not None
    booked = (balance.pending_minor, balance.available_minor)
    assert booked == ((amount - fee, 0) if pending else (0, amount - fee))
    check_ledger(app)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-50_000, 50_000), st.integers(-50_000, 50_000), st.booleans()),
        min_size=1,
        max_size=6,
    )
)
def test_every_clearing_book_is_zero_once_its_breaks_are_resolved(
    observations: list[tuple[int, int, bool]],
) -> None:
    app = books()
    for n, (pending, available, release) in enumerate(observations, start=1):
        on = T0 + n * DAY
        report(
            app,
            "b",
            n,
            difference={"amount": pending + available, "fee": 0, "net": pending + available},
            clearing_pending_minor=pending,
            clearing_available_minor=available,
            clearing_on=on,
        )
        if release:
            app.record(
                facts.FundsAvailable(
                    idempotency_key=f"rel{n}",
                    effective_at=on,
                    account_id=SELLER,
                    currency="usd",
                    until=on,
                )
            )
        check_ledger(app)
    app.execute(
        r.ResolveBreak(
            idempotency_key="res",
            effective_at=T0 + 99 * DAY,
            account_id=SELLER,
            currency="usd",
            key="ch_1",
            how="matched",
        )
    )
    assert clearing(app) == 0
    balance = app.get_balance(SELLER, "usd")
    assert balance is None or balance.pending_minor + balance.available_minor == 0
    check_ledger(app)


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"amount_minor": 0, "fee_minor": 0}, "amount_minor"),
        ({"amount_minor": 1.5}, "amount_minor"),
        ({"amount_minor": 100_000_000}, "amount_minor"),
        ({"account_id": "acct_nobody"}, "account"),
        ({"currency": "USD"}, "currency"),
    ],
)
def test_a_malformed_movement_is_refused_and_records_nothing(
    changes: dict[str, object], param: str
) -> None:
    from ledger.errors import SluiceError

    app = books()
    before = app.recorder.max_notification_id()
    fields: dict[str, object] = {
        "idempotency_key": "stripe:txn:bad",
        "effective_at": T0,
        "movement_id": "txn_bad",
        "account_id": SELLER,
        "currency": "usd",
        "bt_type": "adjustment",
        "amount_minor": -100,
        "available_on": T0,
        **changes,
    }
    with pytest.raises(SluiceError) as refused:
        app.record(facts.StripeAdjustment(**fields))  # type: ignore[arg-type]
    assert refused.value.param == param
    assert app.recorder.max_notification_id() == before


def test_one_movement_is_recorded_once() -> None:
    app = books()
    fact = facts.StripeAdjustment(
        idempotency_key="stripe:txn:1",
        effective_at=T0,
        movement_id="txn_1",
        account_id=SELLER,
        currency="usd",
        bt_type="adjustment",
        amount_minor=-100,
        available_on=T0,
    )
    app.record(fact)
    assert app.record(fact).replayed
    with pytest.raises(InvalidParameterError):  # the same Stripe movement under another key
        app.record(
            facts.StripeAdjustment(
                idempotency_key="other",
                effective_at=T0,
                movement_id="txn_1",
                account_id=SELLER,
                currency="usd",
                bt_type="adjustment",
                amount_minor=-100,
                available_on=T0,
            )
        )
    balance = app.get_balance(SELLER, "usd")
    assert balance is not None and balance.available_minor == -100
