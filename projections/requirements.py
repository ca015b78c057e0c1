"""Accounts' onboarding requirements in the accounts read model: one row per account that Stripe
reported requirements for (``rm_account_requirements``), written by ``AccountsProjection`` from
``ConnectedAccount.RequirementsSet`` and shown beside each account in lists and the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ledger.accounts import ConnectedAccount
from ledger.requirements import blocking
from projections.store import ReadModel, Tx

TABLE = "rm_account_requirements"
DDL = (
    "CREATE TABLE IF NOT EXISTS rm_account_requirements ("
    " account_id TEXT PRIMARY KEY, currently_due TEXT NOT NULL, past_due TEXT NOT NULL,"
    " eventually_due TEXT NOT NULL, disabled_reason TEXT, current_deadline BIGINT)"
)
IDS_PER_QUERY_MAX = 100  # a page of accounts at most (LIST_LIMIT_MAX)


def requirements_object(
    currently_due: Sequence[str],
    past_due: Sequence[str],
    eventually_due: Sequence[str],
    disabled_reason: str | None,
    current_deadline_s: int | None,
) -> dict[str, Any]:
    """Requirements as the API and the CLI show them, with whether they pause Sluice's payouts."""
    shown = {
        "currently_due": list(currently_due),
        "past_due": list(past_due),
        "eventually_due": list(eventually_due),
        "disabled_reason": disabled_reason,
        "current_deadline": current_deadline_s,
    }
    return shown | {"payouts_paused": blocking(shown)}


def record(tx: Tx, event: ConnectedAccount.RequirementsSet, aggregate_id: str) -> None:
    """Replaces the account's row with what Stripe reported last."""
    tx.execute("SELECT id FROM rm_accounts WHERE aggregate_id = %s", (aggregate_id,))
    row = tx.one()
    if row is None:
        return  # cannot happen in a consistent log; the verify command would report it
    deadline = event.current_deadline
    tx.execute(f"DELETE FROM {TABLE} WHERE account_id = %s", (row["id"],))
    tx.execute(
        f"INSERT INTO {TABLE} (account_id, currently_due, past_due, eventually_due,"
        " disabled_reason, current_deadline) VALUES (%s, %s, %s, %s, %s, %s)",
        (
            row["id"],
            json.dumps(list(event.currently_due)),
            json.dumps(list(event.past_due)),
            json.dumps(list(event.eventually_due)),
            event.disabled_reason,
            int(deadline.timestamp()) if isinstance(deadline, datetime) else None,
        ),
    )


def attach(view: ReadModel, accounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each account object with its ``requirements`` (none due where Stripe reported none)."""
    found: dict[str, dict[str, Any]] = {}
    ids = [a["id"] for a in accounts]
    with view.read() as tx:
        for start in range(0, len(ids), IDS_PER_QUERY_MAX):
            chunk = ids[start : start + IDS_PER_QUERY_MAX]
            marks = ", ".join(["%s"] * len(chunk))
            tx.execute(f"SELECT * FROM {TABLE} WHERE account_id IN ({marks})", tuple(chunk))
            for r in tx.all():
                found[r["account_id"]] = requirements_object(
                    json.loads(r["currently_due"]),
                    json.loads(r["past_due"]),
                    json.loads(r["eventually_due"]),
                    r["disabled_reason"],
                    r["current_deadline"],
                )
    return [
        a | {"requirements": found.get(a["id"]) or requirements_object([], [], [], None, None)}
        for a in accounts
    ]
