"""Onboarding requirements in the ledger: recorded as Stripe reports them, and Sluice's own
payouts pause while Stripe holds fields past due (or disabled the account); a payout Stripe
reports is still recorded (facts are not commands)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from ledger import commands as c
from ledger.errors import PayoutsDisabledError
from ledger.payout_policy import DUE, PAUSED, decide_payout
from ledger.requirements import SetAccountRequirements
from tests.support import PLATFORM, T0, new_ledger

SELLER = "acct_seller"


@pytest.fixture
def ledger() -> Any:
    app = new_ledger("memory://", lambda: T0)
    keys = iter(range(1_000))

    def run(cls: type[c.Command], **params: Any) -> dict[str, str]:
        return app.execute(cls(idempotency_key=f"k{next(keys)}", effective_at=T0, **params)).ids

    run(c.OpenAccount, account_id=PLATFORM, kind="platform")
    run(c.OpenAccount, account_id=SELLER)
    run(c.UpdateAccount, account_id=SELLER, charges_enabled=True, payouts_enabled=True)
    run(c.TopUp, account_id=SELLER, currency="usd", amount_minor=5_000)
    run(c.ReleaseFunds, account_id=SELLER, currency="usd", until=T0)
    app.run = run  # type: ignore[attr-defined]
    return app


def test_requirements_are_kept_as_reported_sorted_and_deduplicated(ledger: Any) -> None:
    deadline = T0 + timedelta(days=3)
    ledger.run(
        SetAccountRequirements,
        account_id=SELLER,
        currently_due=("tos_acceptance.ip", "external_account", "external_account"),
        eventually_due=("tos_acceptance.ip", "external_account", "individual.dob.day"),
        current_deadline=deadline,
    )
    assert ledger.get_account(SELLER).requirements == {
        "currently_due": ["external_account", "tos_acceptance.ip"],
        "past_due": [],
        "eventually_due": ["external_account", "individual.dob.day", "tos_acceptance.ip"],
        "disabled_reason": None,
        "current_deadline": deadline,
    }


def test_sluices_payouts_pause_while_fields_are_past_due_and_resume_once_provided(
    ledger: Any,
) -> None:
    slot = T0.date()
    account = ledger.get_account(SELLER)
    balance = ledger.get_balance(SELLER, "usd")
    assert decide_payout(account, balance, "usd", slot).reason == DUE

    ledger.run(
        SetAccountRequirements,
        account_id=SELLER,
        currently_due=("external_account",),
        past_due=("external_account",),
        disabled_reason="requirements.past_due",
    )
    account = ledger.get_account(SELLER)
    assert decide_payout(account, balance, "usd", slot).reason == PAUSED
    with pytest.raises(PayoutsDisabledError, match=r"requirements\.past_due"):
        ledger.run(c.RequestPayout, account_id=SELLER, currency="usd", amount_minor=100)
    # A payout Stripe made anyway is Stripe's fact: recorded, whatever the requirements say.
    made = ledger.run(
        c.RequestPayout,
        account_id=SELLER,
        currency="usd",
        amount_minor=100,
        reported_by_stripe=True,
    )
    assert ledger.get_payout(made["payout"]) is not None

    ledger.run(SetAccountRequirements, account_id=SELLER)  # everything provided
    account = ledger.get_account(SELLER)
    assert decide_payout(account, balance, "usd", slot).reason == DUE
    assert ledger.run(c.RequestPayout, account_id=SELLER, currency="usd", amount_minor=100)


def test_past_due_fields_alone_pause_payouts_even_without_a_disabled_reason(ledger: Any) -> None:
    ledger.run(SetAccountRequirements, account_id=SELLER, past_due=("individual.id_number",))
    with pytest.raises(PayoutsDisabledError, match=r"individual\.id_number"):
        ledger.run(c.RequestPayout, account_id=SELLER, currency="usd", amount_minor=100)


def test_fields_currently_due_before_their_deadline_do_not_pause_payouts(ledger: Any) -> None:
    ledger.run(
        SetAccountRequirements,
        account_id=SELLER,
        currently_due=("individual.verification.document",),
        current_deadline=T0 + timedelta(days=7),
    )
    assert ledger.run(c.RequestPayout, account_id=SELLER, currency="usd", amount_minor=100)


def test_a_closed_accounts_requirements_are_still_recorded(ledger: Any) -> None:
    ledger.run(c.CloseAccount, account_id=SELLER)
    ledger.run(SetAccountRequirements, account_id=SELLER, disabled_reason="rejected.other")
    assert ledger.get_account(SELLER).requirements["disabled_reason"] == "rejected.other"


def test_stripes_requirements_translate_to_the_ledgers_shape_without_parking_the_event() -> None:
    from adapters.stripe.onboarding import account_requirements, requirements_change

    acct = {
        "id": SELLER,
        "requirements": {
            "currently_due": ["tos_acceptance.ip", "external_account", "bad\x00name"],
            "past_due": ["external_account"],
            "eventually_due": None,
            "disabled_reason": "requirements.something_new",  # newer than Sluice's vocabulary
            "current_deadline": 1_793_577_600,
        },
    }
    shown = account_requirements(acct)
    assert shown["currently_due"] == ["bad name", "external_account", "tos_acceptance.ip"]
    assert shown["past_due"] == ["external_account"]
    assert shown["eventually_due"] == []
    assert shown["disabled_reason"] == "other"  # still disabled, as Stripe says
    assert shown["current_deadline"].timestamp() == 1_793_577_600
    change = requirements_change(SELLER, None, acct, T0)
    assert change is not None and change.disabled_reason == "other"
    assert requirements_change(SELLER, shown, acct, T0) is None  # known already: nothing to do
    assert requirements_change(SELLER, None, {"id": SELLER}, T0) is None  # none reported
