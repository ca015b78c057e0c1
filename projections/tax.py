"""Tax reporting (1099-K style): per connected account, calendar year (UTC) and currency, the
gross payment volume, refunds and number of payments, in total and per month.

Read from the balance transactions as the account sees them: a payment is a ``charge`` on the
account (direct charges) or a ``payment`` it received (destination and separate charges, the
transfer of its share); a refund is a ``refund`` or a ``payment_refund`` (a reversed transfer).
Amounts are gross, in minor units; currencies are never added together.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ledger.instants import from_micros, to_micros
from projections.queries import QueryError
from projections.store import ReadModel

PAYMENT_TYPES = ("charge", "payment")
REFUND_TYPES = ("refund", "payment_refund")
YEAR_MIN, YEAR_MAX = 2000, 9998
ROWS_MAX = 1_000_000  # movements read for one report (a bound on its scan)
CSV_COLUMNS = "account name year currency month gross_volume refunds payments".split()


def _year_bounds(year: int) -> tuple[int, int]:
    start, end = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    return to_micros(start), to_micros(end)


def _empty(account: str, name: str | None, year: int, currency: str) -> dict[str, Any]:
    return {
        "object": "tax_report",
        "account": account,
        "name": name,
        "year": year,
        "currency": currency,
        "gross_volume": 0,
        "refunds": 0,
        "payments": 0,
        "months": [
            {"month": m, "gross_volume": 0, "refunds": 0, "payments": 0} for m in range(1, 13)
        ],
    }


def _movements(tx: Any, year: int, account: str | None) -> list[dict[str, Any]]:
    """The year's payments and refunds of connected accounts (one scan, bounded)."""
    types = (*PAYMENT_TYPES, *REFUND_TYPES)
    marks = ", ".join(["%s"] * len(types))
    start, end = _year_bounds(year)
    where = "t.account_id = %s" if account is not None else "a.kind = 'connected'"
    tx.execute(
        "SELECT t.account_id, a.name, t.currency, t.type, t.amount, t.created"
        " FROM rm_balance_transactions t JOIN rm_accounts a ON a.id = t.account_id"
        f" WHERE {where} AND t.type IN ({marks}) AND t.created >= %s AND t.created < %s"
        " LIMIT %s",
        (*([account] if account is not None else []), *types, start, end, ROWS_MAX + 1),
    )
    rows = tx.all()
    if len(rows) > ROWS_MAX:
        raise QueryError(
            f"more than {ROWS_MAX} movements in {year}: ask for one account at a time", "year"
        )
    return rows


def tax_reports(view: ReadModel, year: int, account: str | None = None) -> list[dict[str, Any]]:
    """One report per (account, currency) with activity in ``year`` (``account``: only its)."""
    if not YEAR_MIN <= year <= YEAR_MAX:
        raise QueryError(f"year must be between {YEAR_MIN} and {YEAR_MAX}", "year")
    reports: dict[tuple[str, str], dict[str, Any]] = {}
    with view.read() as tx:
        rows = _movements(tx, year, account)
    for row in rows:
        key = (row["account_id"], row["currency"])
        report = reports.setdefault(key, _empty(key[0], row["name"], year, key[1]))
        _add(report, from_micros(row["created"]).month, row)
    return [reports[k] for k in sorted(reports)]


def _add(report: dict[str, Any], month: int, row: dict[str, Any]) -> None:
    total, count = int(row["amount"]), 1
    bucket = report["months"][month - 1]
    if row["type"] in PAYMENT_TYPES:
        for target in (report, bucket):
            target["gross_volume"] += total
            target["payments"] += count
    else:
        for target in (report, bucket):
            target["refunds"] += -total  # refunds are negative movements: reported positive


def csv_rows(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per month and one for the year (``month`` = ``year``), per account and currency."""
    rows: list[dict[str, Any]] = []
    for report in reports:
        head = {k: report[k] for k in ("account", "name", "year", "currency")}
        for month in report["months"]:
            rows.append({**head, **month})
        rows.append(
            {
                **head,
                "month": "year",
                **{k: report[k] for k in ("gross_volume", "refunds", "payments")},
            }
        )
    return rows
