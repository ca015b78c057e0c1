"""Finance exports over the read models: every matching row, streamed in pages, and two
itemized reports modelled on Stripe's (balance change by reporting category; per-seller period
summaries). Amounts stay integers in minor units here; decimals are the edge's presentation.

Exports stream oldest first on (position, id), the order the index serves, in pages of
``EXPORT_PAGE_ROWS`` (one short read transaction each), at most ``EXPORT_ROWS_MAX`` rows: a
caller counts first (``count_*``) and refuses a larger export rather than cut it silently.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from projections.queries import (
    EXPORT_ROWS_MAX,
    QueryError,
    balance_transaction,
    payout,
    payout_metadata_filter,
)
from projections.store import ReadModel

EXPORT_PAGE_ROWS = 1_000
SUMMARY_ACCOUNTS_MAX = 100_000  # rows of one per-seller summary (accounts by currencies)

# Stripe's reporting categories, grouped into the per-seller summary's columns. Every balance
# transaction lands in exactly one group with its ``amount``, and its Stripe fee (``-fee``) in
# ``fees``; since ``net = amount - fee``, the columns sum to the period's net movement exactly.
SUMMARY_GROUPS: dict[str, str] = {
    "charge": "gross",
    "refund": "refunds",
    "dispute": "disputes",
    "dispute_reversal": "disputes",
    "transfer": "transfers",
    "transfer_reversal": "transfers",
    "payout": "payouts",
    "payout_reversal": "payouts",
    "fee": "fees",
    "platform_earning": "fees",
    "platform_earning_refund": "fees",
}
SUMMARY_COLUMNS = ("gross", "fees", "refunds", "disputes", "transfers", "payouts", "other")


def _where(
    filters: Mapping[str, Any], created_gte: int | None, created_lt: int | None
) -> tuple[str, list[Any]]:
    clauses = [f"{column} = %s" for column, value in filters.items() if value is not None]
    params: list[Any] = [value for value in filters.values() if value is not None]
    if created_gte is not None:
        clauses.append("created >= %s")
        params.append(created_gte * 1_000_000)
    if created_lt is not None:
        clauses.append("created < %s")
        params.append(created_lt * 1_000_000)
    return " AND ".join(clauses), params


def _iter_table(
    view: ReadModel, table: str, where: str, params: Sequence[Any], max_rows: int
) -> Iterator[dict[str, Any]]:
    """Rows oldest first by (position, id), a page per read transaction, at most ``max_rows``."""
    after: tuple[int, str] | None = None
    sent = 0
    while sent < max_rows:  # bounded by max_rows; each turn sends ≥ 1 row or stops
        clauses = [where] if where else []
        page_params = list(params)
        if after is not None:
            clauses.append("(position > %s OR (position = %s AND id > %s))")
            page_params += [after[0], after[0], after[1]]
        clause = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with view.read() as tx:
            tx.execute(
                f"SELECT * FROM {table}{clause} ORDER BY position, id LIMIT %s",
                (*page_params, min(EXPORT_PAGE_ROWS, max_rows - sent)),
            )
            rows = tx.all()
        if not rows:
            return
        yield from rows
        sent += len(rows)
        after = (int(rows[-1]["position"]), str(rows[-1]["id"]))


def _count(view: ReadModel, table: str, where: str, params: Sequence[Any]) -> int:
    with view.read() as tx:
        tx.execute(
            f"SELECT COUNT(*) AS n FROM {table}" + (f" WHERE {where}" if where else ""), params
        )
        row = tx.one()
    return int(row["n"]) if row else 0


def bt_filters(
    account: str | None = None,
    currency: str | None = None,
    type: str | None = None,
    source: str | None = None,
    created_gte: int | None = None,
    created_lt: int | None = None,
) -> tuple[str, list[Any]]:
    equal = {"account_id": account, "currency": currency, "type": type, "source": source}
    return _where(equal, created_gte, created_lt)


def accounts_in(view: ReadModel, account: str | None = None) -> list[str]:
    """``[account]``, or every account with a balance (the columns of a metadata export)."""
    if account:
        return [account]
    with view.read() as tx:
        tx.execute("SELECT DISTINCT account_id FROM rm_balances ORDER BY account_id")
        return [str(r["account_id"]) for r in tx.all()][:SUMMARY_ACCOUNTS_MAX]


def count_balance_transactions(view: ReadModel, **filters: Any) -> int:
    return _count(view, "rm_balance_transactions", *bt_filters(**filters))


def iter_balance_transactions(
    view: ReadModel, *, max_rows: int = EXPORT_ROWS_MAX, **filters: Any
) -> Iterator[dict[str, Any]]:
    """Balance transactions (the API's shape plus ``entry_id``), oldest first."""
    for row in _iter_table(view, "rm_balance_transactions", *bt_filters(**filters), max_rows):
        yield balance_transaction(row) | {"entry_id": row["entry_id"]}


def count_payouts(
    view: ReadModel,
    *,
    account: str | None = None,
    status: str | None = None,
    metadata: dict[str, str] | None = None,
) -> int:
    return _count(view, "rm_payouts", *_payout_where(account, status, metadata))


def iter_payouts(
    view: ReadModel,
    *,
    account: str | None = None,
    status: str | None = None,
    metadata: dict[str, str] | None = None,
    max_rows: int = EXPORT_ROWS_MAX,
) -> Iterator[dict[str, Any]]:
    where, params = _payout_where(account, status, metadata)
    for row in _iter_table(view, "rm_payouts", where, params, max_rows):
        yield payout(row)


def _payout_where(
    account: str | None, status: str | None, metadata: dict[str, str] | None
) -> tuple[str, list[Any]]:
    where, params = _where({"account_id": account, "status": status}, None, None)
    by_metadata, more = payout_metadata_filter(metadata)
    clauses = [c for c in (where, by_metadata) if c]
    return " AND ".join(clauses), [*params, *more]


# Reports ---------------------------------------------------------------------------------------


def _grouped(
    view: ReadModel, start: int, end: int, account: str | None
) -> tuple[dict[tuple[str, str], int], list[dict[str, Any]]]:
    """Opening totals per (account, currency) before ``start``, and the period's sums per
    (account, currency, reporting category)."""
    scope, scope_params = ("account_id = %s AND ", [account]) if account else ("", [])
    with view.read() as tx:
        tx.execute(
            "SELECT account_id, currency, SUM(net) AS net FROM rm_balance_transactions"
            f" WHERE {scope}created < %s GROUP BY account_id, currency",
            (*scope_params, start * 1_000_000),
        )
        opening = {(r["account_id"], r["currency"]): int(r["net"]) for r in tx.all()}
        tx.execute(
            "SELECT account_id, currency, reporting_category, COUNT(*) AS n,"
            " SUM(amount) AS amount, SUM(fee) AS fee, SUM(net) AS net"
            f" FROM rm_balance_transactions WHERE {scope}created >= %s AND created < %s"
            " GROUP BY account_id, currency, reporting_category"
            " ORDER BY account_id, currency, reporting_category",
            (*scope_params, start * 1_000_000, end * 1_000_000),
        )
        groups = [
            {
                "account": r["account_id"],
                "currency": r["currency"],
                "reporting_category": r["reporting_category"],
                "count": int(r["n"]),
                "gross": int(r["amount"]),
                "fee": int(r["fee"]),
                "net": int(r["net"]),
            }
            for r in tx.all()
        ]
    return opening, groups


def balance_change(view: ReadModel, account: str, start: int, end: int) -> list[dict[str, Any]]:
    """Stripe's "balance change from activity", itemized: per currency, one row per reporting
    category (count, gross, fee, net) between an opening and a closing row; closing = opening
    + the categories' nets, exactly. ``start`` ≤ created < ``end`` (unix seconds)."""
    opening, groups = _grouped(view, start, end, account)
    currencies = sorted({cur for (_, cur) in opening} | {g["currency"] for g in groups})
    rows: list[dict[str, Any]] = []
    for currency in currencies:
        balance = opening.get((account, currency), 0)
        rows.append(_report_row(account, currency, "opening_balance", net=balance))
        for g in (g for g in groups if g["currency"] == currency):
            rows.append(_report_row(account, currency, g["reporting_category"], **_sums(g)))
            balance += g["net"]
        rows.append(_report_row(account, currency, "closing_balance", net=balance))
    return rows


def _sums(group: Mapping[str, Any]) -> dict[str, int]:
    return {k: int(group[k]) for k in ("count", "gross", "fee", "net")}


def _report_row(
    account: str, currency: str, category: str, *, count: int = 0, gross: int = 0, fee: int = 0,
    net: int = 0,
) -> dict[str, Any]:  # fmt: skip
    return {
        "account": account,
        "currency": currency,
        "reporting_category": category,
        "count": count,
        "gross": gross,
        "fee": fee,
        "net": net,
    }


def summary_row(
    account: str, currency: str, opening: int, groups: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """One seller's period: opening, the movements by column, closing = opening + movements."""
    columns = dict.fromkeys(SUMMARY_COLUMNS, 0)
    count = 0
    for g in groups:
        columns[SUMMARY_GROUPS.get(str(g["reporting_category"]), "other")] += int(g["gross"])
        columns["fees"] -= int(g["fee"])
        count += int(g["count"])
    return {
        "account": account,
        "currency": currency,
        "opening": opening,
        **columns,
        "closing": opening + sum(columns.values()),
        "count": count,
    }


def seller_summaries(
    view: ReadModel,
    start: int,
    end: int,
    *,
    account: str | None = None,
    exclude: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Per (account, currency): opening, gross, fees, refunds, disputes, transfers, payouts,
    other, closing for ``start`` ≤ created < ``end``. Accounts in ``exclude`` (the platform)
    are left out."""
    opening, groups = _grouped(view, start, end, account)
    keys = sorted(set(opening) | {(g["account"], g["currency"]) for g in groups})
    keys = [k for k in keys if k[0] not in exclude]
    if len(keys) > SUMMARY_ACCOUNTS_MAX:
        raise QueryError(f"more than {SUMMARY_ACCOUNTS_MAX} rows: name an account", "account")
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for g in groups:
        by_key.setdefault((g["account"], g["currency"]), []).append(g)
    return [
        summary_row(a, cur, opening.get((a, cur), 0), by_key.get((a, cur), [])) for a, cur in keys
    ]
