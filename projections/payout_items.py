"""What each payout settled, from the ledger's own read models: the balance transactions behind
`GET /v1/balance_transactions?payout=…` and the payout reconciliation report (issue 14, item 6).

Which balance transactions a payout settled is Stripe's rule, read here as Stripe lists them
under `balance_transactions?payout=`: an **automatic** payout settles every balance transaction
of its account and currency that became available after the previous automatic payout of that
account and currency was made and by the time this one was (its own transaction apart); a
**manual** payout itemizes nothing but itself. Stripe's payout is in the read model once folded
(`Payout.Reported`: its `po_` id and whether it is automatic). An automatic payout's items net
exactly to its amount, or the report flags it (`differs`): a movement the ledger lacks or holds
wrongly (see `sluice reconcile`). Stripe also separates payouts by source type (card, bank
account): the ledger does not know a movement's source type, so two automatic payouts of one
account, currency and instant are read as one settlement (a platform-funded top-up case only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from projections.queries import QueryError, balance_transaction, payout
from projections.store import ReadModel

ITEMS_PER_PAYOUT_MAX = 10_000  # balance transactions one payout may settle, in a report
PAYOUTS_PER_REPORT_MAX = 1_000  # payouts one report covers: narrow the period beyond
OWN_TYPES = ("payout", "payout_failure", "payout_cancel")  # a payout's own transactions
SUMS, DIFFERS, NOT_ITEMIZED = "sums", "differs", "not_itemized"  # a report row's check


@dataclass(frozen=True)
class Settlement:
    """One payout with the balance transactions it settled and its own (API shapes)."""

    payout: dict[str, Any]
    items: list[dict[str, Any]]
    own: list[dict[str, Any]]


def find_payout(view: ReadModel, payout_id: str) -> dict[str, Any] | None:
    """A payout by Sluice's id or Stripe's ``po_`` (the read model's row)."""
    with view.read() as tx:
        tx.execute(
            "SELECT * FROM rm_payouts WHERE id = %s OR stripe_payout_id = %s ORDER BY id LIMIT 1",
            (payout_id, payout_id),
        )
        row = tx.one()
    return dict(row) if row is not None else None


def settlement(view: ReadModel, row: dict[str, Any]) -> Settlement:
    """What the payout (its read-model row) settled: items, and its own transactions."""
    with view.read() as tx:
        tx.execute(
            "SELECT * FROM rm_balance_transactions WHERE account_id = %s AND source = %s"
            " AND type IN (%s, %s, %s) ORDER BY created, id",
            (row["account_id"], row["id"], *OWN_TYPES),
        )
        own = [balance_transaction(r) for r in tx.all()]
        items: list[dict[str, Any]] = []
        if row.get("automatic"):
            tx.execute(
                "SELECT MAX(created) AS since FROM rm_payouts WHERE account_id = %s"
                " AND currency = %s AND automatic = 1 AND created < %s",
                (row["account_id"], row["currency"], row["created"]),
            )
            previous = tx.one()
            since = previous["since"] if previous is not None else None
            tx.execute(
                "SELECT * FROM rm_balance_transactions WHERE account_id = %s AND currency = %s"
                " AND available_on <= %s AND available_on > %s"
                " AND NOT (source = %s AND type IN (%s, %s, %s))"
                " ORDER BY available_on, created, id LIMIT %s",
                (
                    row["account_id"],
                    row["currency"],
                    row["created"],
                    -1 if since is None else since,
                    row["id"],
                    *OWN_TYPES,
                    ITEMS_PER_PAYOUT_MAX + 1,
                ),
            )
            items = [balance_transaction(r) for r in tx.all()]
    if len(items) > ITEMS_PER_PAYOUT_MAX:
        raise QueryError(f"payout {row['id']} settles too many items to list", param="payout")
    return Settlement(payout(row), items, own)


def reconciliation_row(found: Settlement) -> dict[str, Any]:
    """One payout of the report: its items, their sums, and whether they net to its amount."""
    p = found.payout
    gross = sum(int(i["amount"]) for i in found.items)
    fee = sum(int(i["fee"]) for i in found.items)
    net = sum(int(i["net"]) for i in found.items)
    check = (DIFFERS if net != p["amount"] else SUMS) if p.get("automatic") else NOT_ITEMIZED
    return {
        "object": "payout_reconciliation",
        "payout": p["id"],
        "stripe_payout_id": p.get("stripe_payout_id"),
        "account": p["account"],
        "currency": p["currency"],
        "amount": p["amount"],
        "status": p["status"],
        "automatic": bool(p.get("automatic")),
        "created": p["created"],
        "arrival_date": p.get("arrival_date"),
        "item_count": len(found.items),
        "gross": gross,
        "fee": fee,
        "net": net,
        "difference": p["amount"] - net if check != NOT_ITEMIZED else 0,
        "check": check,
        "flagged": check == DIFFERS,
        "items": [
            {k: i[k] for k in ("id", "type", "source", "created", "available_on")}
            | {"gross": i["amount"], "fee": i["fee"], "net": i["net"]}
            for i in found.items
        ],
    }


def payout_reconciliation(
    view: ReadModel,
    *,
    payout_id: str | None = None,
    account: str | None = None,
    created_from_s: int | None = None,
    created_to_s: int | None = None,
) -> list[dict[str, Any]]:
    """The report: one payout (``payout_id``, Sluice's or Stripe's), or every payout of an
    account (or of all) created in ``created_from_s`` ≤ created < ``created_to_s``."""
    if payout_id is not None:
        row = find_payout(view, payout_id)
        if row is None:
            raise QueryError(f"no such payout: {payout_id}", param="payout")
        return [reconciliation_row(settlement(view, row))]
    where, params = ["1 = 1"], []
    for clause, value in (
        ("account_id = %s", account),
        ("created >= %s", None if created_from_s is None else created_from_s * 1_000_000),
        ("created < %s", None if created_to_s is None else created_to_s * 1_000_000),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    with view.read() as tx:
        tx.execute(
            f"SELECT * FROM rm_payouts WHERE {' AND '.join(where)} ORDER BY created, id LIMIT %s",
            (*params, PAYOUTS_PER_REPORT_MAX + 1),
        )
        rows = [dict(r) for r in tx.all()]
    if len(rows) > PAYOUTS_PER_REPORT_MAX:
        raise QueryError(
            f"over {PAYOUTS_PER_REPORT_MAX} payouts match: narrow the period", param="from"
        )
    return [reconciliation_row(settlement(view, row)) for row in rows]


def settled_balance_transactions(view: ReadModel, payout_id: str) -> list[dict[str, Any]]:
    """``balance_transactions?payout=``: what the payout settled and its own, as Stripe lists
    them (newest first)."""
    row = find_payout(view, payout_id)
    if row is None:
        raise QueryError(f"no such payout: {payout_id}", param="payout")
    found = settlement(view, row)
    listed = [*found.items, *found.own]
    return sorted(listed, key=lambda bt: (bt["created"], bt["id"]), reverse=True)
