"""Authorization holds in the ledger: held amounts are visible, never available; a capture after
the authorization expired is refused as a command and recorded (flagged) as a fact."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from ledger import facts
from ledger.errors import (
    AccountNotFoundError,
    AmountTooLargeError,
    InvalidAmountError,
    InvalidParameterError,
    InvalidTransitionError,
    SluiceError,
    UnknownCurrencyError,
)
from ledger.holds import (
    HANDLERS,
    AuthorizationCaptured,
    AuthorizationExpiredError,
    AuthorizationNotFoundError,
    AuthorizationReleased,
    CaptureAuthorization,
    HeldFunds,
    PaymentAuthorized,
    held_funds_aggregate_id,
)
from ledger.journal import AUTHORIZED, AVAILABLE, CARD_AUTHORIZATIONS, PENDING
from tests.support import PLATFORM, T0, event_count
from tests.unit.test_facts import Books, check_ledger

DAY = timedelta(days=1)
EXPIRES = T0 + 7 * DAY


def authorized(b: Books, account: str = PLATFORM, currency: str = "usd") -> int:
    """The account's ``authorized`` figure, read two ways that must agree."""
    held = b.app._find(held_funds_aggregate_id(account, currency), HeldFunds)
    figure = held.authorized_minor if held is not None else 0
    _, per_book = b.app.journal_totals()
    assert per_book.get((account, AUTHORIZED, currency), 0) == figure
    return figure


def hold(b: Books, payment_id: str, amount: int, at: datetime = T0) -> dict[str, str]:
    return b.fact(
        PaymentAuthorized, at, payment_id=payment_id, account_id=PLATFORM, currency="usd",
        amount_minor=amount, expires_at=at + 7 * DAY,
    )  # fmt: skip


def test_a_held_amount_is_authorized_and_never_pending_nor_available() -> None:
    b = Books()
    hold(b, "ch_h", 10_000)
    assert authorized(b) == 10_000
    assert b.books(PLATFORM) == (0, 0)  # nothing to pay out
    _, per_book = b.app.journal_totals()
    assert per_book[("world", CARD_AUTHORIZATIONS, "usd")] == -10_000
    assert (PLATFORM, PENDING, "usd") not in per_book
    assert (PLATFORM, AVAILABLE, "usd") not in per_book
    check_ledger(b.app)


def test_a_partial_capture_books_the_captured_charge_and_releases_the_rest() -> None:
    b = Books()
    hold(b, "ch_h", 10_000)
    ids = b.command(CaptureAuthorization, T0 + DAY, payment_id="ch_h", amount_minor=6_000)
    assert ids == {"authorization": "ch_h", "captured": "6000"}
    b.charge("ch_h", 6_000, T0 + 3 * DAY, fee=204)  # what Stripe booked for the capture
    assert authorized(b) == 0
    assert b.books(PLATFORM) == (6_000 - 204, 0)
    check_ledger(b.app)


def test_a_capture_after_expiry_is_refused_as_a_command_and_records_nothing() -> None:
    b = Books()
    hold(b, "ch_h", 10_000)
    before = event_count(b.app)
    with pytest.raises(AuthorizationExpiredError) as refused:
        b.command(CaptureAuthorization, EXPIRES, payment_id="ch_h")
    assert refused.value.code == "authorization_expired"
    assert event_count(b.app) == before
    assert authorized(b) == 10_000


def test_a_capture_stripe_reports_after_expiry_is_recorded_and_flagged() -> None:
    b = Books()
    hold(b, "ch_h", 10_000)
    ids = b.fact(AuthorizationCaptured, EXPIRES + DAY, payment_id="ch_h", amount_minor=10_000)
    assert "captured after its authorization expired" in ids["flagged"]
    assert authorized(b) == 0
    check_ledger(b.app)


def test_a_capture_stripe_reports_after_a_release_is_recorded_and_releases_nothing_twice() -> None:
    b = Books()
    hold(b, "ch_h", 10_000)
    b.fact(AuthorizationReleased, EXPIRES, payment_id="ch_h", reason="expired")
    assert authorized(b) == 0
    ids = b.fact(AuthorizationCaptured, EXPIRES, payment_id="ch_h", amount_minor=10_000)
    assert "captured after its hold was expired" in ids["flagged"]
    assert authorized(b) == 0
    with pytest.raises(InvalidTransitionError):
        hold(b, "ch_g", 500)
        b.fact(AuthorizationReleased, T0, payment_id="ch_g", reason="canceled")
        b.command(CaptureAuthorization, T0, payment_id="ch_g")
    check_ledger(b.app)


def test_released_and_captured_holds_leave_only_the_open_ones_authorized() -> None:
    b = Books()
    for n, amount in enumerate((1_000, 2_000, 4_000)):
        hold(b, f"ch_{n}", amount)
    b.fact(AuthorizationReleased, T0 + DAY, payment_id="ch_0", reason="canceled")
    b.command(CaptureAuthorization, T0 + DAY, payment_id="ch_1")
    assert authorized(b) == 4_000
    repeat = b.fact(AuthorizationReleased, T0 + DAY, payment_id="ch_0", reason="canceled")
    assert repeat == {"authorization": "ch_0", "status": "canceled"}  # ended already
    check_ledger(b.app)


# Malformed facts and bad commands: refused with their specific error, recording nothing ---------

Build = Callable[[], Any]


def _m(cls: type[Any], **params: Any) -> Build:
    return lambda: cls(idempotency_key="bad", effective_at=T0, **params)


HELD = {"payment_id": "ch_held"}
MALFORMED: list[tuple[Build, type[SluiceError]]] = [
    (_m(PaymentAuthorized, payment_id="ch_x", account_id=PLATFORM, currency="xxx",
        amount_minor=100, expires_at=EXPIRES), UnknownCurrencyError),
    (_m(PaymentAuthorized, payment_id="ch_x", account_id="acct_nobody", currency="usd",
        amount_minor=100, expires_at=EXPIRES), AccountNotFoundError),
    (_m(PaymentAuthorized, payment_id="ch_x", account_id=PLATFORM, currency="usd",
        amount_minor=0, expires_at=EXPIRES), InvalidAmountError),
    (_m(PaymentAuthorized, payment_id="ch_x", account_id=PLATFORM, currency="usd",
        amount_minor=100, expires_at=EXPIRES.replace(tzinfo=None)), InvalidParameterError),
    (_m(PaymentAuthorized, payment_id="ch_x", account_id=PLATFORM, currency="usd",
        amount_minor=100, expires_at=T0), InvalidParameterError),
    (_m(PaymentAuthorized, payment_id="ch_held", account_id=PLATFORM, currency="usd",
        amount_minor=100, expires_at=EXPIRES), InvalidParameterError),  # exists already
    (_m(AuthorizationCaptured, payment_id="ch_nope", amount_minor=5), AuthorizationNotFoundError),
    (_m(AuthorizationCaptured, **HELD, amount_minor=-5), InvalidAmountError),
    (_m(AuthorizationCaptured, **HELD, amount_minor=10.0), InvalidAmountError),
    (_m(AuthorizationReleased, payment_id="ch_nope", reason="canceled"),
     AuthorizationNotFoundError),
    (_m(AuthorizationReleased, **HELD, reason="bored"), InvalidParameterError),
]  # fmt: skip
BAD_COMMANDS: list[tuple[Build, type[SluiceError]]] = [
    (_m(CaptureAuthorization, payment_id="ch_nope"), AuthorizationNotFoundError),
    (_m(CaptureAuthorization, payment_id=None), InvalidParameterError),
    (_m(CaptureAuthorization, **HELD, amount_minor=1_001), AmountTooLargeError),
    (_m(CaptureAuthorization, **HELD, amount_minor=0), InvalidAmountError),
    (_m(CaptureAuthorization, **HELD, amount_minor=True), InvalidAmountError),
    (lambda: CaptureAuthorization(idempotency_key="bad", effective_at=EXPIRES, **HELD),
     AuthorizationExpiredError),
]  # fmt: skip


def _with_a_hold() -> Books:
    b = Books()
    hold(b, "ch_held", 1_000)
    return b


@pytest.mark.parametrize(("build", "error"), MALFORMED)
def test_a_malformed_hold_fact_is_refused_with_its_specific_error(
    build: Build, error: type[SluiceError]
) -> None:
    b = _with_a_hold()
    before = event_count(b.app)
    with pytest.raises(SluiceError) as caught:
        b.app.record(build())
    assert type(caught.value) is error, caught.value
    assert event_count(b.app) == before


@pytest.mark.parametrize(("build", "error"), BAD_COMMANDS)
def test_a_bad_capture_command_is_refused_with_its_specific_error(
    build: Build, error: type[SluiceError]
) -> None:
    b = _with_a_hold()
    before = event_count(b.app)
    with pytest.raises(SluiceError) as caught:
        b.app.execute(build())
    assert type(caught.value) is error, caught.value
    assert event_count(b.app) == before


def test_every_hold_fact_and_command_type_has_bad_input_cases() -> None:
    covered = {type(build()) for build, _ in MALFORMED + BAD_COMMANDS}
    assert covered == set(HANDLERS)
    assert all(issubclass(t, facts.Fact) for t in HANDLERS if t is not CaptureAuthorization)
