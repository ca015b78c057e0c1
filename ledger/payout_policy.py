"""When a seller is paid out, and how much: Sluice's payout policy, as pure functions.

A scheduled payout belongs to a slot (account, currency, day): its id derives from the slot, so
a slot pays at most once however often it is evaluated. The workers only load the account and
its balance, ask ``decide_payout``, and request what it says.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date
from typing import Any

from ledger.accounts import ConnectedAccount
from ledger.balances import Balance
from ledger.ids import object_id
from ledger.payout_fx import bank_errored, payable_in
from ledger.requirements import blocking

DUE = "due"
NOT_DUE = "not_due"  # not a payout day on the account's schedule
NOT_PAYABLE = "not_payable"  # no such connected account, or closed
OTHER_CURRENCY = "other_currency"  # no external account takes it (ledger.payout_fx)
PAUSED = "paused"  # payouts disabled, or the bank account errored until it is updated
BELOW_MINIMUM = "below_minimum"


@dataclass(frozen=True)
class PayoutDecision:
    """What a slot calls for: a payout of ``amount_minor`` under ``payout_id`` when ``reason``
    is ``due``; otherwise nothing, and why."""

    payout_id: str
    reason: str
    amount_minor: int = 0

    @property
    def pay(self) -> bool:
        return self.reason == DUE


def payout_id_for(account_id: str, currency: str, slot: str) -> str:
    """The payout of one schedule slot (a day, ISO format): the same slot, the same id."""
    return object_id("po", account_id, currency, slot)


def payout_due(schedule: dict[str, Any], slot: date) -> bool:
    """Whether ``slot`` is a payout day: daily every day, weekly on the anchor weekday, monthly
    on the anchor day (clamped to the month's last day), manual never."""
    interval = schedule.get("interval")
    if interval == "daily":
        return True
    if interval == "weekly":
        return slot.strftime("%A").lower() == schedule.get("weekly_anchor")
    if interval == "monthly":
        anchor = int(schedule.get("monthly_anchor") or 0)
        last = calendar.monthrange(slot.year, slot.month)[1]
        return anchor > 0 and slot.day == min(anchor, last)
    return False


def decide_payout(
    account: ConnectedAccount | None,
    balance: Balance | None,
    currency: str,
    slot: date,
    *,
    unreconciled_minor: int = 0,
) -> PayoutDecision:
    """The slot's payout: everything available, when the schedule says so and nothing stops it.
    ``account`` and ``balance`` are the ledger's current state (None: not there).

    ``unreconciled_minor``: what open reconciliation breaks booked into this balance from its
    clearing book (Stripe showed more than the ledger could explain). It is held back: until the
    break is resolved, the movement behind it may still arrive (a late webhook) and be booked a
    second time beside the clearing entry, and paying that out would pay it twice."""
    account_id = account.account_id if account is not None else ""
    payout_id = payout_id_for(account_id, currency, slot.isoformat())
    if account is None or account.closed or account.kind != "connected":
        return PayoutDecision(payout_id, NOT_PAYABLE)
    if not payable_in(account, currency):
        return PayoutDecision(payout_id, OTHER_CURRENCY)
    if not payout_due(account.schedule, slot):
        return PayoutDecision(payout_id, NOT_DUE)
    if not account.payouts_enabled or bank_errored(account, currency):
        return PayoutDecision(payout_id, PAUSED)
    # Stripe's requirements past due (or a disabled account): paused until Stripe lifts them.
    if blocking(getattr(account, "requirements", None)) is not None:
        return PayoutDecision(payout_id, PAUSED)
    available = (balance.available_minor if balance is not None else 0) - max(0, unreconciled_minor)
    minimum = max(int(account.schedule.get("minimum_minor", {}).get(currency, 0)), 1)
    if available < minimum:
        return PayoutDecision(payout_id, BELOW_MINIMUM, available)
    return PayoutDecision(payout_id, DUE, available)
