"""The platform's exposure per seller: who covers each connected account's losses (its
``controller.losses.payments``, ``rm_account_liability``, written by ``AccountsProjection`` from
``ledger.risk.LossLiability``) beside its balances (``rm_balances``).

A seller whose available balance is negative owes that much; when the platform is liable for
its losses (``application``) and Stripe cannot recover it, the platform pays: that is the
platform's exposure. Funds Stripe holds in reserve for the seller (``reserved``) are shown
beside it: they are the seller's, neither available nor paid out while held.
"""

from __future__ import annotations

from typing import Any

from ledger.risk import LossLiability
from projections.store import ReadModel, Tx

TABLE = "rm_account_liability"
DDL = (
    "CREATE TABLE IF NOT EXISTS rm_account_liability ("
    " account_id TEXT PRIMARY KEY, losses_payments TEXT NOT NULL)"
)
EXPOSURE_ROWS_MAX = 10_000  # sellers times currencies in one answer
HANDLES = (LossLiability.Recorded, LossLiability.Changed)  # the events ``process`` uses


def process(tx: Tx, event: Any) -> None:
    """``AccountsProjection``'s share: who covers the account's losses, as last reported."""
    if isinstance(event, HANDLES):
        tx.execute(f"DELETE FROM {TABLE} WHERE account_id = %s", (event.account_id,))
        tx.execute(
            f"INSERT INTO {TABLE} (account_id, losses_payments) VALUES (%s, %s)",
            (event.account_id, event.losses_payments),
        )


def exposure(view: ReadModel, account: str | None = None) -> dict[str, Any]:
    """Per connected account and currency: available, reserved, who covers a negative balance,
    and the platform's exposure (the negative part, when the platform covers it); totals per
    currency. Accounts with no balance are left out."""
    where = "a.kind = 'connected'" + (" AND a.id = %s" if account is not None else "")
    with view.read() as tx:
        tx.execute(
            "SELECT b.account_id, b.currency, b.available, b.reserved, l.losses_payments"
            " FROM rm_balances b JOIN rm_accounts a ON a.id = b.account_id"
            f" LEFT JOIN {TABLE} l ON l.account_id = b.account_id"
            f" WHERE {where} ORDER BY b.account_id, b.currency LIMIT %s",
            (*([account] if account is not None else []), EXPOSURE_ROWS_MAX),
        )
        rows = tx.all()
    data = []
    totals: dict[str, int] = {}
    for r in rows:
        negative = max(0, -int(r["available"]))
        covered_by = r["losses_payments"]  # None: Stripe has not said (yet)
        exposed = negative if covered_by == "application" else 0
        totals[r["currency"]] = totals.get(r["currency"], 0) + exposed
        data.append(
            {
                "account": r["account_id"],
                "currency": r["currency"],
                "available": int(r["available"]),
                "reserved": int(r["reserved"]),
                "negative_balance": negative,
                "losses_covered_by": covered_by,
                "platform_exposure": exposed,
            }
        )
    return {
        "object": "risk_exposure",
        "data": data,
        "total_platform_exposure": [
            {"currency": currency, "amount": amount} for currency, amount in sorted(totals.items())
        ],
    }
