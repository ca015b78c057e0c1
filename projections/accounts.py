"""The accounts read model: who the connected accounts are (name, email, metadata) and their
flags, so a finance team can find an account without knowing its ``acct_`` id.

One row per account (``rm_accounts``, ordered by the position of its opening, so pages stay
stable while accounts change) and one per metadata pair (``rm_account_metadata``) for the
``metadata[key]=value`` filters. ``search`` matches a lowercase text of name, email and metadata.
The projection is ``projections.projections.AccountsProjection``; these are its queries.
"""

from __future__ import annotations

import json
from typing import Any

from ledger.instants import micros_to_seconds
from projections import requirements
from projections.queries import LIST_LIMIT_DEFAULT, Page, QueryError, _page
from projections.store import ReadModel

SEARCH_LEN_MAX = 100
METADATA_FILTERS_MAX = 10


def account_object(row: dict[str, Any]) -> dict[str, Any]:
    """An account row as the API shows it (Stripe's account object, Sluice's fields)."""
    return {
        "id": row["id"],
        "object": "account",
        "kind": row["kind"],
        "name": row["name"],
        "email": row["email"],
        "metadata": json.loads(row["metadata"]),
        "country": row["country"],
        "default_currency": row["default_currency"],
        "verification_status": row["verification_status"],
        "charges_enabled": bool(row["charges_enabled"]),
        "payouts_enabled": bool(row["payouts_enabled"]),
        "created": micros_to_seconds(row["created"]),
        "closed": bool(row["closed"]),
    }


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def list_accounts(
    view: ReadModel,
    *,
    account: str | None = None,
    search: str | None = None,
    charges_enabled: bool | None = None,
    payouts_enabled: bool | None = None,
    metadata: dict[str, str] | None = None,
    limit: int = LIST_LIMIT_DEFAULT,
    starting_after: str | None = None,
) -> Page:
    """Accounts, newest first; every filter given must hold (``account`` scopes to one)."""
    filters: dict[str, Any] = {}
    if account is not None:
        filters["id"] = account
    if charges_enabled is not None:
        filters["charges_enabled"] = int(charges_enabled)
    if payouts_enabled is not None:
        filters["payouts_enabled"] = int(payouts_enabled)
    conditions: list[str] = []
    params: list[Any] = []
    if search is not None:
        if not 0 < len(search) <= SEARCH_LEN_MAX:
            raise QueryError(f"search is 1 to {SEARCH_LEN_MAX} characters", "search")
        conditions.append("search LIKE %s ESCAPE '\\'")
        params.append(_like(search))
    if len(metadata or {}) > METADATA_FILTERS_MAX:
        raise QueryError(f"at most {METADATA_FILTERS_MAX} metadata filters", "metadata")
    for key, value in sorted((metadata or {}).items()):
        conditions.append(
            "EXISTS (SELECT 1 FROM rm_account_metadata m WHERE m.account_id = rm_accounts.id"
            " AND m.key = %s AND m.value = %s)"
        )
        params += [key, value]
    rows, more = _page(
        view, "rm_accounts", filters, limit, starting_after, (" AND ".join(conditions), params)
    )
    return Page(requirements.attach(view, [account_object(r) for r in rows]), more)


def all_accounts(view: ReadModel, limit: int) -> list[dict[str, Any]]:
    """Every account (up to ``limit``), oldest first: the dashboard's and the CLI's overview."""
    with view.read() as tx:
        tx.execute("SELECT * FROM rm_accounts ORDER BY position, id LIMIT %s", (limit,))
        rows = [account_object(r) for r in tx.all()]
    return requirements.attach(view, rows)
