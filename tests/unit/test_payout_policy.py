"""The payout policy as laws: a slot pays at most what is available, under one id, and only
when its schedule says so and nothing pauses it."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import commands as c
from ledger import payout_policy as policy
from ledger.application import Ledger
from tests.support import PLATFORM, T0, new_ledger

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def seller(
    interval: str, anchor: int, minimum: int, enabled: bool, errored: bool, funded: int
) -> Ledger:
    app = new_ledger("memory://", lambda: T0)
    n = iter(range(100))

    def run(cls: type[c.Command], **params: object) -> None:
        app.execute(cls(idempotency_key=f"k{next(n)}", effective_at=T0, **params))

    run(c.OpenAccount, account_id=PLATFORM, kind="platform")
    run(c.OpenAccount, account_id="acct_s")
    run(
        c.UpdateAccount,
        account_id="acct_s",
        payouts_enabled=enabled,
        external_account_status="errored" if errored else "new",
    )
    run(
        c.SetPayoutSchedule,
        account_id="acct_s",
        interval=interval,
        delay_days=2,
        weekly_anchor=WEEKDAYS[anchor % 7] if interval == "weekly" else None,
        monthly_anchor=anchor % 31 + 1 if interval == "monthly" else None,
        minimum_minor={"usd": minimum} if minimum else None,
    )
    if funded:
        run(c.TopUp, account_id="acct_s", currency="usd", amount_minor=funded, available_on=T0)
        run(c.ReleaseFunds, account_id="acct_s", currency="usd", until=T0)
    return app


@settings(max_examples=80, deadline=None)
@given(
    interval=st.sampled_from(["daily", "weekly", "monthly", "manual"]),
    anchor=st.integers(min_value=0, max_value=30),
    minimum=st.integers(min_value=0, max_value=5_000),
    enabled=st.booleans(),
    errored=st.booleans(),
    funded=st.integers(min_value=0, max_value=10_000),
    day=st.integers(min_value=0, max_value=400),
    unreconciled=st.sampled_from([0, 0, 1, 2_500, 10_000, 20_000]),
)
def test_a_slot_pays_everything_available_only_when_due_and_not_paused(
    interval: str,
    anchor: int,
    minimum: int,
    enabled: bool,
    errored: bool,
    funded: int,
    day: int,
    unreconciled: int,
) -> None:
    """Unreconciled credit (open breaks' clearing entries) is held back: a late webhook for the
    same movement would book it again beside the clearing entry, and it must not be paid twice."""
    app = seller(interval, anchor, minimum, enabled, errored, funded)
    slot = date(2026, 1, 1) + timedelta(days=day)
    account, balance = app.get_account("acct_s"), app.get_balance("acct_s", "usd")
    decision = policy.decide_payout(account, balance, "usd", slot, unreconciled_minor=unreconciled)
    assert decision.payout_id == policy.payout_id_for("acct_s", "usd", slot.isoformat())
    due = policy.payout_due(account.schedule if account else {}, slot)
    payable = funded - unreconciled
    expected = due and enabled and not errored and payable >= max(minimum, 1)
    assert decision.pay == expected, decision
    if decision.pay:
        assert decision.amount_minor == payable  # everything explained, never more
    assert decision.amount_minor <= max(payable, 0) or not decision.pay
    # Another currency, or no account: never paid.
    assert not policy.decide_payout(account, balance, "jpy", slot).pay
    assert not policy.decide_payout(None, balance, "usd", slot).pay


def test_manual_schedules_never_pay_and_monthly_anchors_clamp_to_the_months_end() -> None:
    assert not policy.payout_due({"interval": "manual"}, date(2026, 2, 28))
    assert policy.payout_due({"interval": "monthly", "monthly_anchor": 31}, date(2026, 2, 28))
    assert not policy.payout_due({"interval": "monthly", "monthly_anchor": 31}, date(2026, 2, 27))
    assert policy.payout_due({"interval": "weekly", "weekly_anchor": "monday"}, date(2026, 11, 2))
