"""The finance dashboard's queries: balances per account and currency, money in and out per
day, recent payouts, open reconciliation breaks, clearing books, the platform's exposure. All
from the read models, each bounded, each optionally confined to one account (an account key's
view)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from ledger.instants import micros_to_seconds
from ledger.reconciliation import BREAK_NAMES, OPEN
from projections import risk
from projections.queries import payout
from projections.reconciliation import clearing_books, list_breaks
from projections.requirements import IDS_PER_QUERY_MAX
from projections.store import ReadModel

FLOW_ROWS_MAX = 200_000  # balance transactions read for the charts (a bound on one page view)
BALANCE_ROWS_MAX = 10_000
PAYOUTS_SHOWN = 25
BREAKS_SHOWN = 100  # LIST_LIMIT_MAX: one page of one break name
FLOWS = ("gross_volume", "fees", "refunds", "disputes", "payouts")
DAY_S = 86_400


def balances(view: ReadModel, account: str | None) -> list[dict[str, Any]]:
    """Pending, available and reserved per account and currency (the balances read model)."""
    where, params = ("WHERE b.account_id = %s", [account]) if account else ("", [])
    with view.read() as tx:
        tx.execute(
            "SELECT b.account_id, b.currency, b.pending, b.available, b.reserved, a.name"
            " FROM rm_balances b LEFT JOIN rm_accounts a ON a.id = b.account_id"
            f" {where} ORDER BY b.account_id, b.currency LIMIT %s",
            (*params, BALANCE_ROWS_MAX),
        )
        return [
            {
                "account": r["account_id"],
                "name": r["name"],
                "currency": r["currency"],
                "pending": r["pending"],
                "available": r["available"],
                "reserved": r["reserved"],
            }
            for r in tx.all()
        ]


def _flow(row: dict[str, Any]) -> dict[str, int]:
    """What one balance transaction adds to each flow (positive amounts, minor units)."""
    kind, category, amount = row["type"], row["reporting_category"], int(row["amount"])
    out = dict.fromkeys(FLOWS, 0)
    if kind in ("charge", "payment"):
        out["gross_volume"] = amount
    out["fees"] = int(row["fee"])
    if kind in ("refund", "payment_refund"):
        out["refunds"] = -amount
    if category == "dispute":
        out["disputes"] = -amount
    if kind == "payout":
        out["payouts"] = -amount
    return out


def flows(view: ReadModel, account: str | None) -> dict[str, dict[str, dict[str, int]]]:
    """currency → day (YYYY-MM-DD, UTC) → flow → amount. With no account: the platform's
    view, every account's movements (a transfer is counted once, as the seller's payment)."""
    where, params = ("WHERE account_id = %s", [account]) if account else ("", [])
    with view.read() as tx:
        tx.execute(
            "SELECT currency, type, reporting_category, amount, fee, created"
            f" FROM rm_balance_transactions {where} ORDER BY created LIMIT %s",
            (*params, FLOW_ROWS_MAX),
        )
        rows = tx.all()
    series: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
    for row in rows:
        if account is None and row["type"] == "transfer":
            continue  # the platform's side of a transfer: the seller's payment counts it
        seconds = micros_to_seconds(row["created"])
        day = _day(seconds)
        bucket = series[row["currency"]].setdefault(day, dict.fromkeys(FLOWS, 0))
        for name, amount in _flow(row).items():
            bucket[name] += amount
    return {cur: dict(sorted(days.items())) for cur, days in sorted(series.items())}


def _day(seconds: int) -> str:
    return datetime.fromtimestamp(seconds - seconds % DAY_S, UTC).date().isoformat()


def recent_payouts(view: ReadModel, account: str | None) -> list[dict[str, Any]]:
    where, params = ("WHERE account_id = %s", [account]) if account else ("", [])
    with view.read() as tx:
        tx.execute(
            f"SELECT * FROM rm_payouts {where} ORDER BY created DESC, id DESC LIMIT %s",
            (*params, PAYOUTS_SHOWN),
        )
        return [payout(r) for r in tx.all()]


def open_breaks(view: ReadModel, account: str | None) -> dict[str, int]:
    """Open reconciliation breaks per name (every name, zero included), optionally one
    account's."""
    where, params = ("AND account_id = %s", [account]) if account else ("", [])
    with view.read() as tx:
        tx.execute(
            "SELECT name, COUNT(*) AS n FROM rm_recon_breaks"
            f" WHERE status = %s {where} GROUP BY name",
            (OPEN, *params),
        )
        found = {r["name"]: int(r["n"]) for r in tx.all()}
    return {name: found.get(name, 0) for name in BREAK_NAMES}


def clearing(view: ReadModel, account: str | None) -> list[dict[str, Any]]:
    """Each account's clearing book per currency (what its open breaks hold), with its name."""
    books = clearing_books(view, account)
    names = _names(view, sorted({a for a, _ in books}))
    return [
        {"account": a, "name": names.get(a), "currency": c, "amount": amount}
        for (a, c), amount in sorted(books.items())
    ]


def _names(view: ReadModel, accounts: list[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    with view.read() as tx:
        for start in range(0, len(accounts), IDS_PER_QUERY_MAX):
            chunk = accounts[start : start + IDS_PER_QUERY_MAX]
            marks = ", ".join(["%s"] * len(chunk))
            tx.execute(f"SELECT id, name FROM rm_accounts WHERE id IN ({marks})", tuple(chunk))
            found |= {r["id"]: r["name"] for r in tx.all()}
    return found


def exposure(view: ReadModel, account: str | None) -> dict[str, Any]:
    """``projections.risk.exposure`` with each seller's name beside its id."""
    found = risk.exposure(view, account)
    names = _names(view, sorted({row["account"] for row in found["data"]}))
    found["data"] = [row | {"name": names.get(row["account"])} for row in found["data"]]
    return found


def breaks_shown(view: ReadModel, account: str | None, name: str) -> list[dict[str, Any]]:
    """The open breaks of one name, newest first (a page of them), optionally one account's."""
    return list_breaks(view, status=OPEN, account=account, name=name, limit=BREAKS_SHOWN).data
