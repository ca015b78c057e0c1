"""The reconciliation read models: breaks (``rm_recon_breaks``) and clearing books
(``rm_clearing``), from ``ledger.reconciliation``'s events alone; and their queries.

A break row says what disagrees (its name, the Stripe object, the ledger entries, the difference)
and when it was first seen and resolved. A clearing row is the sum posted to an account's
``clearing`` book per currency: zero once every break of that account is resolved.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection

from ledger.events import JournalEvent
from ledger.instants import micros_to_seconds, to_micros
from ledger.journal import CLEARING, Posting
from ledger.reconciliation import BREAK_NAMES, OPEN, RESOLVED, Break
from projections.pages import BIGINT, TEXT, PageWriter, Sink, Upserts
from projections.queries import Page, QueryError, _page
from projections.store import ReadModel, Tx

BREAK_EXPORT_ROWS_MAX = 100_000  # one CSV export of breaks (a bound, not an expectation)
BREAK_STATUSES = (OPEN, RESOLVED)


class ReconciliationProjection(PageWriter, Projection[Any]):
    """Breaks and clearing books. Same interface as ``projections.projections.LedgerProjection``
    (kept apart so that module need not know reconciliation)."""

    name = "reconciliation"
    handles = (JournalEvent, Break.Found, Break.Changed, Break.Resolved)
    reads = False
    tables: ClassVar[tuple[str, ...]] = ("rm_recon_breaks", "rm_clearing")
    ddl: ClassVar[tuple[str, ...]] = (
        "CREATE TABLE IF NOT EXISTS rm_recon_breaks ("
        " id TEXT PRIMARY KEY, aggregate_id TEXT NOT NULL UNIQUE, position BIGINT NOT NULL,"
        " account_id TEXT NOT NULL, currency TEXT NOT NULL, object TEXT NOT NULL,"
        " name TEXT NOT NULL, status TEXT NOT NULL, stripe_ref TEXT NOT NULL,"
        " ledger_ref TEXT NOT NULL, difference TEXT NOT NULL, detail TEXT NOT NULL,"
        " clearing BIGINT NOT NULL, first_seen BIGINT NOT NULL, resolved_at BIGINT,"
        " resolution TEXT, updated BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS ix_recon_breaks_status"
        " ON rm_recon_breaks (status, position, id)",
        "CREATE TABLE IF NOT EXISTS rm_clearing ("
        " account_id TEXT NOT NULL, currency TEXT NOT NULL, amount BIGINT NOT NULL,"
        " position BIGINT NOT NULL, PRIMARY KEY (account_id, currency))",
    )
    tx: Tx

    def __init__(self, view: ReadModel) -> None:
        super().__init__(view)
        self.clearing = Upserts(
            "rm_clearing",
            keys=(("account_id", TEXT), ("currency", TEXT)),
            sums=(("amount", BIGINT),),
            sets=(("position", BIGINT),),
        )

    def sinks(self) -> tuple[Sink, ...]:
        return (self.clearing,)

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        position = tracking.notification_id
        if isinstance(domain_event, JournalEvent):
            self._clearing(domain_event, position)
        if isinstance(domain_event, Break.Found):
            self._found(domain_event, position)
        elif isinstance(domain_event, Break.Changed):
            self._update(
                domain_event,
                position,
                "name = %s, status = 'open', stripe_ref = %s, ledger_ref = %s,"
                " difference = %s, detail = %s, resolved_at = NULL, resolution = NULL",
                (
                    domain_event.name,
                    domain_event.stripe_ref,
                    domain_event.ledger_ref,
                    json.dumps(domain_event.difference, sort_keys=True),
                    domain_event.detail,
                ),
            )
        elif isinstance(domain_event, Break.Resolved):
            at = to_micros(domain_event.effective_at)
            self._update(
                domain_event,
                position,
                "status = 'resolved', resolved_at = %s, resolution = %s",
                (at, domain_event.how),
            )

    def _found(self, event: Break.Found, position: int) -> None:
        at = to_micros(event.effective_at)
        self.tx.execute(
            "INSERT INTO rm_recon_breaks (id, aggregate_id, position, account_id, currency,"
            " object, name, status, stripe_ref, ledger_ref, difference, detail, clearing,"
            " first_seen, resolved_at, resolution, updated)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, 'open', %s, %s, %s, %s, 0, %s, NULL, NULL, %s)",
            (
                event.break_id,
                str(event.originator_id),
                position,
                event.account_id,
                event.currency,
                event.key,
                event.name,
                event.stripe_ref,
                event.ledger_ref,
                json.dumps(event.difference, sort_keys=True),
                event.detail,
                at,
                at,
            ),
        )

    def _update(self, event: Any, position: int, assignments: str, params: tuple[Any, ...]) -> None:
        self.tx.execute(
            f"UPDATE rm_recon_breaks SET {assignments}, position = %s, updated = %s"
            " WHERE aggregate_id = %s",
            (*params, position, to_micros(event.effective_at), str(event.originator_id)),
        )

    def _clearing(self, event: JournalEvent, position: int) -> None:
        # Most entries post nothing to clearing: look at each row's book before decoding it.
        for row in event.postings:
            if row[1] != CLEARING:
                continue
            posting = Posting.from_row(row)
            self.clearing.add(
                (posting.owner, posting.currency), (posting.amount_minor,), (position,)
            )
            if isinstance(event, Break.Cleared | Break.Uncleared):
                self.tx.execute(
                    "UPDATE rm_recon_breaks SET clearing = clearing + %s WHERE aggregate_id = %s",
                    (posting.amount_minor, str(event.originator_id)),
                )


# Queries ---------------------------------------------------------------------------------------


def break_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "reconciliation_break",
        "account": row["account_id"],
        "currency": row["currency"],
        "name": row["name"],
        "status": row["status"],
        "stripe_object": row["object"],
        "stripe_ref": row["stripe_ref"],
        "ledger_ref": row["ledger_ref"],
        "difference": json.loads(row["difference"]),
        "detail": row["detail"],
        "clearing": row["clearing"],
        "first_seen": micros_to_seconds(row["first_seen"]),
        "resolved_at": micros_to_seconds(row["resolved_at"]),
        "resolution": row["resolution"],
    }


def _filters(status: str | None, account: str | None, name: str | None) -> dict[str, Any]:
    if status is not None and status not in BREAK_STATUSES:
        raise QueryError(f"status is one of {', '.join(BREAK_STATUSES)}", "status")
    if name is not None and name not in BREAK_NAMES:
        raise QueryError(f"name is one of {', '.join(BREAK_NAMES)}", "name")
    given = {"status": status, "account_id": account, "name": name}
    return {column: value for column, value in given.items() if value is not None}


def list_breaks(
    view: ReadModel,
    *,
    status: str | None = None,
    account: str | None = None,
    name: str | None = None,
    limit: int = 10,
    starting_after: str | None = None,
) -> Page:
    rows, has_more = _page(
        view, "rm_recon_breaks", _filters(status, account, name), limit, starting_after
    )
    return Page([break_row(r) for r in rows], has_more)


def all_breaks(
    view: ReadModel,
    *,
    status: str | None = None,
    account: str | None = None,
    name: str | None = None,
) -> list[dict[str, Any]]:
    """Every break matching (for exports and the CLI), newest first, bounded."""
    filters = _filters(status, account, name)
    where = " AND ".join(f"{column} = %s" for column in filters)
    with view.read() as tx:
        tx.execute(
            "SELECT * FROM rm_recon_breaks"
            + (f" WHERE {where}" if where else "")
            + " ORDER BY position DESC, id DESC LIMIT %s",
            (*filters.values(), BREAK_EXPORT_ROWS_MAX),
        )
        return [break_row(r) for r in tx.all()]


def break_counts(view: ReadModel) -> dict[tuple[str, str], int]:
    """(status, name) → count."""
    with view.read() as tx:
        tx.execute("SELECT status, name, COUNT(*) AS n FROM rm_recon_breaks GROUP BY status, name")
        return {(r["status"], r["name"]): int(r["n"]) for r in tx.all()}


def clearing_books(view: ReadModel, account: str | None = None) -> dict[tuple[str, str], int]:
    """(account, currency) → the clearing book's balance (zero once breaks are resolved)."""
    with view.read() as tx:
        if account is None:
            tx.execute("SELECT account_id, currency, amount FROM rm_clearing")
        else:
            tx.execute(
                "SELECT account_id, currency, amount FROM rm_clearing WHERE account_id = %s",
                (account,),
            )
        return {(r["account_id"], r["currency"]): int(r["amount"]) for r in tx.all()}


def stripe_made_types(event: Any) -> tuple[tuple[str, str], tuple[str, str]] | None:
    """A movement Stripe made on its own, as a balance transaction: Stripe's own type (both
    sides), reporting category ``fee`` for a ``stripe_fee``, ``other_adjustment`` otherwise."""
    from ledger.reconciliation import StripeMovement

    if not isinstance(event, StripeMovement.Recorded):
        return None
    category = "fee" if event.bt_type == "stripe_fee" else "other_adjustment"
    return (event.bt_type, category), (event.bt_type, category)
