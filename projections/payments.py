"""The payments read model: one row per captured charge (``rm_payments``, ordered by the position
of its capture, so pages stay stable while metadata changes) and one per metadata pair
(``rm_payment_metadata``) for the ``metadata[key]=value`` filters of ``GET /v1/payments``.

A payment belongs to the seller it lands with (``account_id``: the connected account of a direct
or destination charge, the platform for a separate charge); its metadata is Stripe's, folded
(``ledger.payments.Payment.MetadataReported``).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection

from ledger.instants import micros_to_seconds, to_micros
from ledger.payments import Payment
from projections.pages import BIGINT, TEXT, Inserts, PageWriter, Sink
from projections.queries import LIST_LIMIT_DEFAULT, Page, QueryError, _page
from projections.store import ReadModel, Tx

METADATA_FILTERS_MAX = 10


PAYMENT_COLUMNS = (
    ("id", TEXT),
    ("aggregate_id", TEXT),
    ("position", BIGINT),
    ("account_id", TEXT),
    ("charge_type", TEXT),
    ("currency", TEXT),
    ("amount", BIGINT),
    ("on_behalf_of", TEXT),
    ("transfer_group", TEXT),
    ("metadata", TEXT),
    ("created", BIGINT),
)
PAYMENT_METADATA = 9  # its index in a row
NO_METADATA = "{}"


class PaymentsProjection(PageWriter, Projection[Any]):
    """Payments and their metadata. Same interface as
    ``projections.projections.LedgerProjection`` (kept apart, as reconciliation's is)."""

    name = "payments"
    handles = (Payment.Captured, Payment.MetadataReported)
    reads = False
    tables: ClassVar[tuple[str, ...]] = ("rm_payments", "rm_payment_metadata")
    ddl: ClassVar[tuple[str, ...]] = (
        "CREATE TABLE IF NOT EXISTS rm_payments ("
        " id TEXT PRIMARY KEY, aggregate_id TEXT NOT NULL UNIQUE, position BIGINT NOT NULL,"
        " account_id TEXT NOT NULL, charge_type TEXT NOT NULL, currency TEXT NOT NULL,"
        " amount BIGINT NOT NULL, on_behalf_of TEXT, transfer_group TEXT,"
        " metadata TEXT NOT NULL, created BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS ix_payments_account ON rm_payments (account_id, position, id)",
        "CREATE TABLE IF NOT EXISTS rm_payment_metadata ("
        " payment_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
        " PRIMARY KEY (payment_id, key))",
    )
    tx: Tx

    def __init__(self, view: ReadModel) -> None:
        super().__init__(view)
        self.rows = Inserts("rm_payments", PAYMENT_COLUMNS)
        self.held: dict[str, list[Any]] = {}  # set-based: the page's rows by id, not written yet

    def sinks(self) -> tuple[Sink, ...]:
        return (self.rows,)

    def begin_page(self, tx: Tx, set_based: bool) -> None:
        super().begin_page(tx, set_based)
        self.held = {}

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        if isinstance(domain_event, Payment.Captured):
            row = [
                domain_event.payment_id,
                str(domain_event.originator_id),
                tracking.notification_id,
                domain_event.account_id or domain_event.platform_account_id,
                domain_event.charge_type,
                domain_event.currency,
                domain_event.amount_minor,
                domain_event.on_behalf_of,
                domain_event.transfer_group,
                NO_METADATA,
                to_micros(domain_event.effective_at),
            ]
            self.rows.insert(row)
            if self.set_based:
                self.held[domain_event.payment_id] = row
        elif isinstance(domain_event, Payment.MetadataReported):
            self._metadata(domain_event.payment_id, dict(domain_event.metadata))

    def _metadata(self, payment_id: str, metadata: dict[str, str]) -> None:
        encoded = json.dumps(metadata, sort_keys=True)
        held = self.held.get(payment_id)
        if held is not None:  # set-based: captured in this page, not written yet
            held[PAYMENT_METADATA] = encoded
        else:
            self.tx.execute(
                "UPDATE rm_payments SET metadata = %s WHERE id = %s", (encoded, payment_id)
            )
        self.tx.execute("DELETE FROM rm_payment_metadata WHERE payment_id = %s", (payment_id,))
        for key, value in sorted(metadata.items()):
            self.tx.execute(
                "INSERT INTO rm_payment_metadata (payment_id, key, value) VALUES (%s, %s, %s)",
                (payment_id, key, value),
            )


def payment_object(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "payment",
        "account": row["account_id"],
        "charge_type": row["charge_type"],
        "amount": int(row["amount"]),
        "currency": row["currency"],
        "on_behalf_of": row["on_behalf_of"],
        "transfer_group": row["transfer_group"],
        "metadata": json.loads(row["metadata"]),
        "created": micros_to_seconds(row["created"]),
    }


def list_payments(
    view: ReadModel,
    *,
    account: str | None = None,
    currency: str | None = None,
    metadata: dict[str, str] | None = None,
    limit: int = LIST_LIMIT_DEFAULT,
    starting_after: str | None = None,
) -> Page:
    """Payments, newest first; every filter given must hold (``account`` scopes to one)."""
    filters = {k: v for k, v in (("account_id", account), ("currency", currency)) if v}
    if len(metadata or {}) > METADATA_FILTERS_MAX:
        raise QueryError(f"at most {METADATA_FILTERS_MAX} metadata filters", "metadata")
    conditions: list[str] = []
    params: list[Any] = []
    for key, value in sorted((metadata or {}).items()):
        conditions.append(
            "EXISTS (SELECT 1 FROM rm_payment_metadata m WHERE m.payment_id = rm_payments.id"
            " AND m.key = %s AND m.value = %s)"
        )
        params += [key, value]
    rows, more = _page(
        view, "rm_payments", filters, limit, starting_after, (" AND ".join(conditions), params)
    )
    return Page([payment_object(r) for r in rows], more)
