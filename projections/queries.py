"""Finance queries over the read models. They never replay aggregates.

Lists follow Stripe's conventions: newest first, ``limit`` (at most ``LIST_LIMIT_MAX``) and
``starting_after`` an object id, returning ``(rows, has_more)``. Instants leave as unix seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledger.instants import from_micros, micros_to_seconds, to_micros
from projections.store import ReadModel

LIST_LIMIT_MAX = 100
LIST_LIMIT_DEFAULT = 10
STATEMENT_MOVEMENTS_MAX = 100_000
EXPORT_ROWS_MAX = 1_000_000
PAYOUT_METADATA_FILTERS_MAX = 10  # as many as a payment's (projections.payments)


class QueryError(ValueError):
    """A query's parameters are wrong (a 400 at the edge)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


_seconds = micros_to_seconds


def check_limit(limit: int) -> int:
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise QueryError(f"limit must be between 1 and {LIST_LIMIT_MAX}", "limit")
    return limit


def balance(view: ReadModel, account_id: str) -> dict[str, Any]:
    # One statement (one snapshot, one round trip): the balances, then reconciliation's
    # clearing book (projections.reconciliation: what open breaks hold) as rows of kind 'c'.
    both = view.query(
        "SELECT 'b' AS kind, currency, pending, available, reserved FROM rm_balances"
        " WHERE account_id = %s UNION ALL"
        " SELECT 'c' AS kind, currency, amount, 0, 0 FROM rm_clearing WHERE account_id = %s"
        " ORDER BY kind, currency",
        (account_id, account_id),
    )
    rows = [r for r in both if r["kind"] == "b"]
    clearing = [
        {"currency": r["currency"], "amount": r["pending"]} for r in both if r["kind"] == "c"
    ]
    return {
        "object": "balance",
        "account": account_id,
        "available": [{"amount": r["available"], "currency": r["currency"]} for r in rows],
        "pending": [{"amount": r["pending"], "currency": r["currency"]} for r in rows],
        "reserved": [{"amount": r["reserved"], "currency": r["currency"]} for r in rows],
        "clearing": [{"amount": r["amount"], "currency": r["currency"]} for r in clearing],
        "livemode": False,
    }


def balance_transaction(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "balance_transaction",
        "account": row["account_id"],
        "amount": row["amount"],
        "available_on": _seconds(row["available_on"]),
        "created": _seconds(row["created"]),
        "currency": row["currency"],
        "description": row["description"],
        "fee": row["fee"],
        "fee_details": json.loads(row["fee_details"]),
        "net": row["net"],
        "reporting_category": row["reporting_category"],
        "source": row["source"],
        "status": row["status"],
        "type": row["type"],
    }


def payout(row: dict[str, Any]) -> dict[str, Any]:
    timeline = json.loads(row["timeline"])
    last = timeline[-1] if timeline else {}
    return {
        "id": row["id"],
        "object": "payout",
        "account": row["account_id"],
        "amount": row["amount"],
        "currency": row["currency"],
        "status": row["status"],
        "failure_code": row["failure_code"],
        "created": _seconds(row["created"]),
        "updated": _seconds(row["updated"]),
        "timeline": timeline,
        # Why a held payout waits (Stripe's code and message); None unless held.
        "hold": {"reason_code": last.get("reason_code"), "message": last.get("message")}
        if row["status"] == "held"
        else None,
        # Fees on the payout and Stripe's conversion (ledger.payout_fx); None: none.
        "stripe_fee": row.get("stripe_fee"),
        "application_fee": row.get("application_fee"),
        "bank_currency": row.get("bank_currency"),
        "bank_amount": row.get("bank_amount"),
        "exchange_rate": row.get("exchange_rate"),
        # The payout as Stripe reports it (Payout.Reported); None: not reported yet.
        "stripe_payout_id": row.get("stripe_payout_id"),
        "arrival_date": row.get("arrival_date"),
        "destination": row.get("destination"),
        "failure_message": row.get("failure_message"),
        "automatic": None if row.get("automatic") is None else bool(row["automatic"]),
        # Stripe's metadata of the payout (Payout.MetadataReported); empty: none reported.
        "metadata": json.loads(row.get("metadata") or "{}"),
    }


@dataclass(frozen=True)
class Page:
    data: list[dict[str, Any]]
    has_more: bool


def _page(
    view: ReadModel,
    table: str,
    filters: dict[str, Any],
    limit: int,
    starting_after: str | None,
    extra: tuple[str, list[Any]] = ("", []),
) -> tuple[list[dict[str, Any]], bool]:
    """Keyset pagination on (position, id) descending: stable under concurrent inserts."""
    check_limit(limit)
    where = [f"{column} = %s" for column in filters]
    params: list[Any] = list(filters.values())
    if extra[0]:
        where.append(extra[0])
        params.extend(extra[1])
    with view.read() as tx:
        if starting_after is not None:
            tx.execute(f"SELECT position, id FROM {table} WHERE id = %s", (starting_after,))
            cursor = tx.one()
            if cursor is None:
                raise QueryError(f"no such object: {starting_after}", "starting_after")
            where.append("(position < %s OR (position = %s AND id < %s))")
            params += [cursor["position"], cursor["position"], cursor["id"]]
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        tx.execute(
            f"SELECT * FROM {table}{clause} ORDER BY position DESC, id DESC LIMIT %s",
            (*params, limit + 1),
        )
        rows = tx.all()
    return rows[:limit], len(rows) > limit


def list_balance_transactions(
    view: ReadModel,
    *,
    account: str | None = None,
    currency: str | None = None,
    type: str | None = None,
    source: str | None = None,
    created_gte: int | None = None,
    created_lt: int | None = None,
    limit: int = LIST_LIMIT_DEFAULT,
    starting_after: str | None = None,
) -> Page:
    filters = {
        k: v
        for k, v in (
            ("account_id", account),
            ("currency", currency),
            ("type", type),
            ("source", source),
        )
        if v is not None
    }
    conditions, params = [], []
    if created_gte is not None:
        conditions.append("created >= %s")
        params.append(created_gte * 1_000_000)
    if created_lt is not None:
        conditions.append("created < %s")
        params.append(created_lt * 1_000_000)
    rows, more = _page(
        view,
        "rm_balance_transactions",
        filters,
        limit,
        starting_after,
        (" AND ".join(conditions), params),
    )
    return Page([balance_transaction(r) for r in rows], more)


def list_payouts(
    view: ReadModel,
    *,
    account: str | None = None,
    status: str | None = None,
    metadata: dict[str, str] | None = None,
    limit: int = LIST_LIMIT_DEFAULT,
    starting_after: str | None = None,
) -> Page:
    """Payouts, newest first; every filter given must hold (``account`` scopes to one)."""
    filters = {k: v for k, v in (("account_id", account), ("status", status)) if v is not None}
    rows, more = _page(
        view, "rm_payouts", filters, limit, starting_after, payout_metadata_filter(metadata)
    )
    return Page([payout(r) for r in rows], more)


def payout_metadata_filter(metadata: dict[str, str] | None) -> tuple[str, list[Any]]:
    """SQL for ``metadata[key]=value`` filters on ``rm_payouts``: every pair must hold."""
    if len(metadata or {}) > PAYOUT_METADATA_FILTERS_MAX:
        raise QueryError(f"at most {PAYOUT_METADATA_FILTERS_MAX} metadata filters", "metadata")
    conditions: list[str] = []
    params: list[Any] = []
    for key, value in sorted((metadata or {}).items()):
        conditions.append(
            "EXISTS (SELECT 1 FROM rm_payout_metadata m WHERE m.payout_id = rm_payouts.id"
            " AND m.key = %s AND m.value = %s)"
        )
        params += [key, value]
    return " AND ".join(conditions), params


def revenue(view: ReadModel, day_from: str, day_to: str) -> list[dict[str, Any]]:
    """Platform fee revenue per UTC day and currency, ``day_from`` ≤ day < ``day_to``."""
    with view.read() as tx:
        tx.execute(
            "SELECT day, currency, fees_collected, fees_refunded, count FROM rm_revenue"
            " WHERE day >= %s AND day < %s ORDER BY day, currency",
            (day_from, day_to),
        )
        rows = tx.all()
    return [
        {
            "object": "revenue_day",
            "day": r["day"],
            "currency": r["currency"],
            "application_fees": r["fees_collected"],
            "application_fee_refunds": r["fees_refunded"],
            "net": r["fees_collected"] - r["fees_refunded"],
            "count": r["count"],
        }
        for r in rows
    ]


def statement(view: ReadModel, account: str, currency: str, start: int, end: int) -> dict[str, Any]:
    """Opening balance, movements and closing balance for ``start`` ≤ created < ``end``.

    Balances here are pending + available together (the account's total funds): a movement's
    availability changes its status, not the total.
    """
    if end <= start:
        raise QueryError("the period's end must be after its start", "to")
    with view.read() as tx:
        tx.execute(
            "SELECT COALESCE(SUM(net), 0) AS total FROM rm_balance_transactions"
            " WHERE account_id = %s AND currency = %s AND created < %s",
            (account, currency, start * 1_000_000),
        )
        opening_row = tx.one()
        tx.execute(
            "SELECT * FROM rm_balance_transactions WHERE account_id = %s AND currency = %s"
            " AND created >= %s AND created < %s ORDER BY created, position, id LIMIT %s",
            (account, currency, start * 1_000_000, end * 1_000_000, STATEMENT_MOVEMENTS_MAX + 1),
        )
        rows = tx.all()
    if len(rows) > STATEMENT_MOVEMENTS_MAX:
        raise QueryError("the period holds too many movements; choose a shorter one", "to")
    opening = int(opening_row["total"]) if opening_row else 0
    movements = [balance_transaction(r) for r in rows]
    return {
        "object": "statement",
        "account": account,
        "currency": currency,
        "from": start,
        "to": end,
        "opening_balance": opening,
        "movements": movements,
        "total_movements": sum(m["net"] for m in movements),
        "closing_balance": opening + sum(m["net"] for m in movements),
    }


# Named queries for the workers (what is due, what is funded, what was never submitted) -----


def due_releases(view: ReadModel, now: datetime) -> list[tuple[str, str, datetime]]:
    """(account, currency, latest available_on) of balances holding pending funds due by now."""
    with view.read() as tx:
        tx.execute(
            "SELECT account_id, currency, MAX(available_on) AS until"
            " FROM rm_balance_transactions WHERE status = 'pending' AND available_on <= %s"
            " GROUP BY account_id, currency ORDER BY account_id, currency",
            (to_micros(now),),
        )
        return [(r["account_id"], r["currency"], from_micros(int(r["until"]))) for r in tx.all()]


def funded_balances(view: ReadModel) -> list[tuple[str, str]]:
    """(account, currency) of every balance with funds available."""
    with view.read() as tx:
        tx.execute(
            "SELECT account_id, currency FROM rm_balances WHERE available > 0"
            " ORDER BY account_id, currency"
        )
        return [(r["account_id"], r["currency"]) for r in tx.all()]


def pending_payouts_before(view: ReadModel, cutoff: datetime, limit: int) -> list[str]:
    """Ids of payouts still pending that were requested at or before ``cutoff``, oldest first."""
    with view.read() as tx:
        tx.execute(
            "SELECT id FROM rm_payouts WHERE status = 'pending' AND created <= %s"
            " ORDER BY created LIMIT %s",
            (to_micros(cutoff), limit),
        )
        return [str(r["id"]) for r in tx.all()]


def held_payouts(view: ReadModel, limit: int) -> list[str]:
    """Ids of held payouts, the longest-waiting first."""
    with view.read() as tx:
        tx.execute(
            "SELECT id FROM rm_payouts WHERE status = 'held' ORDER BY updated LIMIT %s", (limit,)
        )
        return [str(r["id"]) for r in tx.all()]


def held_routings(view: ReadModel, limit: int) -> list[dict[str, Any]]:
    """Payments whose routing is held, the longest-waiting first, with the latest reason."""
    with view.read() as tx:
        tx.execute(
            "SELECT payment_id, destination, reason_code, message, held_at, holds"
            " FROM rm_routing_holds ORDER BY held_at LIMIT %s",
            (limit,),
        )
        return [
            {
                "object": "routing_hold",
                "payment": r["payment_id"],
                "destination": r["destination"],
                "reason_code": r["reason_code"],
                "message": r["message"],
                "held_at": _seconds(r["held_at"]),
                "holds": r["holds"],
            }
            for r in tx.all()
        ]


def hold_counts(view: ReadModel) -> dict[str, int]:
    """How many payouts and routings are held (for the status routes)."""
    with view.read() as tx:
        tx.execute("SELECT COUNT(*) AS n FROM rm_payouts WHERE status = 'held'")
        payouts = tx.one()
        tx.execute("SELECT COUNT(*) AS n FROM rm_routing_holds")
        routings = tx.one()
    return {
        "payouts": int(payouts["n"]) if payouts else 0,
        "routings": int(routings["n"]) if routings else 0,
    }
