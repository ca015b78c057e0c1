"""Read models built from the Ledger's events: balances, balance transactions, payouts, revenue,
held routings.

Each projection is an ``eventsourcing.projection.Projection``; the runner hands it a batch of
events with an open transaction (``self.tx``), and commits the rows with the batch's tracking
position. Projections read only the events' own fields (the journal postings and facts), never
the aggregates, so a rebuild from the log reproduces them exactly.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Any, ClassVar

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection

from ledger.accounts import ConnectedAccount
from ledger.balances import Balance
from ledger.events import JournalEvent
from ledger.failures import PayoutReversal, RefundFailure, TopUpReversal
from ledger.ids import WORLD, balance_transaction_id
from ledger.instants import micros_to_seconds, to_micros
from ledger.journal import balance_row, row_book_deltas
from ledger.openings import Opening
from ledger.payments import Payment
from ledger.payouts import Payout
from ledger.reconciliation import StripeMovement
from ledger.risk import Reserve
from ledger.transfers import Transfer
from projections import requirements, risk
from projections.pages import BIGINT, TEXT, Inserts, PageWriter, Sink, Upserts
from projections.payments import PaymentsProjection
from projections.reconciliation import ReconciliationProjection, stripe_made_types
from projections.store import ReadModel, Tx

# Instants in the read model: integer microseconds since the epoch (exact, sortable).
micros = to_micros


class LedgerProjection(PageWriter, Projection[Any]):
    """Base: a named projection with its tables. ``tx`` is set by the runner for a batch
    (``begin_page``), and its sinks are written at the batch's end (``end_page``)."""

    name: str = ""
    tables: ClassVar[tuple[str, ...]] = ()
    tx: Tx

    def __init__(self, view: ReadModel) -> None:
        super().__init__(view)

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Events a projection does not use only advance its position (done per batch)."""


# Recent events' deltas, by identity: balances and balance transactions both need each journal
# event's, and a page is handed to one projection after another. The entry holds the event, so
# its id is not reused while cached; bounded (a rebuild's page is 2,000 events).
_DELTAS_CACHED_MAX = 8_192
_deltas_cached: dict[int, tuple[Any, dict[tuple[str, str], tuple[int, int, int]]]] = {}


def _balance_deltas(event: JournalEvent) -> dict[tuple[str, str], tuple[int, int, int]]:
    """Per (account, currency): (pending, available, reserved) deltas of one journal entry."""
    cached = _deltas_cached.get(id(event))
    if cached is not None and cached[0] is event:
        return cached[1]
    deltas = {}
    for key, books in row_book_deltas(event.postings).items():
        row = balance_row(books)
        if key[0] != WORLD and any(row):
            deltas[key] = row
    if len(_deltas_cached) >= _DELTAS_CACHED_MAX:
        _deltas_cached.clear()
    _deltas_cached[id(event)] = (event, deltas)
    return deltas


class BalancesProjection(LedgerProjection):
    name = "balances"
    handles = (JournalEvent,)
    reads = False
    tables = ("rm_balances",)
    ddl = (
        "CREATE TABLE IF NOT EXISTS rm_balances ("
        " account_id TEXT NOT NULL, currency TEXT NOT NULL,"
        " pending BIGINT NOT NULL, available BIGINT NOT NULL, reserved BIGINT NOT NULL,"
        " position BIGINT NOT NULL, PRIMARY KEY (account_id, currency))",
    )

    def __init__(self, view: ReadModel) -> None:
        super().__init__(view)
        self.balances = Upserts(
            "rm_balances",
            keys=(("account_id", TEXT), ("currency", TEXT)),
            sums=(("pending", BIGINT), ("available", BIGINT), ("reserved", BIGINT)),
            sets=(("position", BIGINT),),
        )

    def sinks(self) -> tuple[Sink, ...]:
        return (self.balances,)

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        if isinstance(domain_event, JournalEvent):
            position = (tracking.notification_id,)
            for key, deltas in _balance_deltas(domain_event).items():
                self.balances.add(key, deltas, position)


# (event class, owner is the platform?) → (type, reporting_category). ``None`` for either side.
BT_TYPES: dict[type, tuple[tuple[str, str], tuple[str, str]]] = {
    # (for the account it lands on / the platform) , (for a connected account)
    Payment.Captured: (("charge", "charge"), ("charge", "charge")),
    Payment.ApplicationFeeCollected: (
        ("application_fee", "platform_earning"),
        ("application_fee", "fee"),
    ),
    Payment.Refunded: (("refund", "refund"), ("refund", "refund")),
    Payment.ApplicationFeeRefunded: (
        ("application_fee_refund", "platform_earning_refund"),
        ("application_fee_refund", "fee"),
    ),
    Payment.DisputeFundsWithdrawn: (("adjustment", "dispute"), ("adjustment", "dispute")),
    Payment.DisputeFundsReinstated: (
        ("adjustment", "dispute_reversal"),
        ("adjustment", "dispute_reversal"),
    ),
    Transfer.Created: (("transfer", "transfer"), ("payment", "transfer")),
    Transfer.Reversed: (
        ("transfer_refund", "transfer_reversal"),
        ("payment_refund", "transfer_reversal"),
    ),
    Balance.ToppedUp: (("topup", "topup"), ("topup", "topup")),
    RefundFailure.Recorded: (
        ("refund_failure", "refund_failure"),
        ("refund_failure", "refund_failure"),
    ),
    TopUpReversal.Recorded: (
        ("topup_reversal", "topup_reversal"),
        ("topup_reversal", "topup_reversal"),
    ),
    PayoutReversal.Recorded: (("payout", "payout_reversal"), ("payout", "payout_reversal")),
    Payout.Requested: (("payout", "payout"), ("payout", "payout")),
    Payout.Failed: (("payout_failure", "payout_reversal"), ("payout_failure", "payout_reversal")),
    Payout.Canceled: (("payout_cancel", "payout_reversal"), ("payout_cancel", "payout_reversal")),
    # An imported opening balance (``ledger.openings``): pending lots show as pending rows, so
    # the scheduler releases them when due; offsets of facts it already held show beside them.
    Opening.Booked: (
        ("opening_balance", "opening_balance"),
        ("opening_balance", "opening_balance"),
    ),
    Opening.Offset: (
        ("opening_offset", "opening_balance"),
        ("opening_offset", "opening_balance"),
    ),
    # Reserves (ledger.risk), as Stripe's reserve_hold / reserve_release balance transactions.
    Reserve.Held: (
        ("reserve_hold", "risk_reserved_funds"),
        ("reserve_hold", "risk_reserved_funds"),
    ),
    Reserve.Released: (
        ("reserve_release", "risk_reserved_funds"),
        ("reserve_release", "risk_reserved_funds"),
    ),
}


def _bt_source(event: Any) -> str:
    for attr in (
        "source_id",  # a movement Stripe made on its own: the object it names, or its txn_
        "refund_id",
        "dispute_id",
        "reversal_id",
        "payout_id",
        "topup_id",
        "transfer_id",
        "payment_id",
        "application_fee_id",
        "release_id",  # a reserve's release (ledger.risk), then the reserve (its hold)
        "reserve_id",
    ):
        value = getattr(event, attr, None)
        if value:
            return str(value)
    return ""


def _net(event: Any, pending: int, available: int, reserved: int) -> int:
    """What the movement did to the account's Stripe balance: a reserve (ledger.risk) moves funds
    out of the payments balance, Stripe's ``reserve_hold``, and back, ``reserve_release``."""
    if isinstance(event, (Reserve.Held, Reserve.Released)):
        return available
    return pending + available + reserved


def _gross(event: Any, net: int) -> int:
    """Stripe's ``amount`` before fees; ``fee = amount - net``."""
    if isinstance(event, (Payment.Captured, StripeMovement.Recorded)):
        return int(event.amount_minor)
    if isinstance(event, Payment.DisputeFundsWithdrawn):
        return -int(event.amount_minor)
    if isinstance(event, Payment.DisputeFundsReinstated):
        # The reinstatement returns the disputed amount and the fee; Stripe shows the fee negative.
        return net + sum(p.amount_minor for p in event.entry_postings() if p.book == "stripe_fees")
    return net


# Events whose two sides differ: the side that gains (True) or loses (False) is the platform's.
_PLATFORM_GAINS: dict[type, bool] = {
    Payment.ApplicationFeeCollected: True,
    Payment.ApplicationFeeRefunded: False,
    Transfer.Created: False,
    Transfer.Reversed: True,
}


BT_COLUMNS = (
    ("id", TEXT),
    ("position", BIGINT),
    ("account_id", TEXT),
    ("type", TEXT),
    ("amount", BIGINT),
    ("fee", BIGINT),
    ("fee_details", TEXT),
    ("net", BIGINT),
    ("currency", TEXT),
    ("status", TEXT),
    ("available_on", BIGINT),
    ("created", BIGINT),
    ("recorded", BIGINT),
    ("source", TEXT),
    ("reporting_category", TEXT),
    ("description", TEXT),
    ("entry_id", TEXT),
)
BT_ACCOUNT, BT_CURRENCY, BT_STATUS, BT_AVAILABLE_ON = 2, 8, 9, 10  # indexes in a row
NO_FEES = json.dumps([])


@functools.lru_cache(maxsize=4_096)
def _stripe_fee_details(fee: int, currency: str) -> str:
    """A charge's ``fee_details``. Cached: fees repeat (a price list's amounts), and encoding
    was a tenth of a rebuild's projecting."""
    details = [
        {
            "type": "stripe_fee",
            "amount": fee,
            "currency": currency,
            "description": "Stripe processing fees",
        }
    ]
    return json.dumps(details)


class BalanceTransactionsProjection(LedgerProjection):
    name = "balance_transactions"
    handles = (JournalEvent, Balance.Settled)  # Balance.Released is a JournalEvent
    reads = False
    tables = ("rm_balance_transactions",)
    ddl = (
        "CREATE TABLE IF NOT EXISTS rm_balance_transactions ("
        " id TEXT PRIMARY KEY, position BIGINT NOT NULL, account_id TEXT NOT NULL,"
        " type TEXT NOT NULL, amount BIGINT NOT NULL, fee BIGINT NOT NULL,"
        " fee_details TEXT NOT NULL, net BIGINT NOT NULL, currency TEXT NOT NULL,"
        " status TEXT NOT NULL, available_on BIGINT, created BIGINT NOT NULL,"
        " recorded BIGINT NOT NULL, source TEXT NOT NULL, reporting_category TEXT NOT NULL,"
        " description TEXT NOT NULL, entry_id TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS ix_bt_account"
        " ON rm_balance_transactions (account_id, currency, created, id)",
        "CREATE INDEX IF NOT EXISTS ix_bt_pending"
        " ON rm_balance_transactions (account_id, currency, status, available_on)",
        # Lists page newest first on (position, id) per account: the keyset needs this order.
        "CREATE INDEX IF NOT EXISTS ix_bt_account_position"
        " ON rm_balance_transactions (account_id, position, id)",
    )
    # The lists' indexes: 0.9 s of the server's 3.5 s per 100k events rebuilt (ix_bt_pending
    # stays: each page's releases look up earlier pages' pending rows through it).
    deferred_indexes = ("ix_bt_account", "ix_bt_account_position")

    def __init__(self, view: ReadModel) -> None:
        super().__init__(view)
        self.rows = Inserts("rm_balance_transactions", BT_COLUMNS)
        # Set-based: the page's held rows still pending, per (account, currency), for the
        # page's releases to make available in place; and per key the latest ``until`` released,
        # for the rows of earlier pages (releases only widen: the latest bound covers the rest).
        self.pending: dict[tuple[str, str], list[list[Any]]] = {}
        self.releases: dict[tuple[str, str], int] = {}

    def sinks(self) -> tuple[Sink, ...]:
        return (self.rows,)

    def begin_page(self, tx: Tx, set_based: bool) -> None:
        super().begin_page(tx, set_based)
        self.pending, self.releases = {}, {}

    def end_page(self, dialect: str) -> None:
        """The page's releases reach earlier pages' rows first, then the page's rows go (their
        statuses already released in place)."""
        releases, self.releases = self.releases, {}
        if dialect == "postgres" and releases:
            keys = list(releases)
            self.tx.execute(
                "UPDATE rm_balance_transactions AS b SET status = 'available'"
                " FROM unnest(%b::text[], %b::text[], %b::bigint[]) AS r (account, cur, until)"
                " WHERE b.account_id = r.account AND b.currency = r.cur"
                " AND b.status = 'pending' AND b.available_on <= r.until",
                ([k[0] for k in keys], [k[1] for k in keys], list(releases.values())),
            )
        else:
            for (owner, currency), until_us in releases.items():
                self._release_stored(owner, currency, until_us)
        super().end_page(dialect)

    def _insert(self, row: list[Any]) -> None:
        self.rows.insert(row)
        if self.set_based and row[BT_STATUS] == "pending":
            self.pending.setdefault((row[BT_ACCOUNT], row[BT_CURRENCY]), []).append(row)

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        if isinstance(domain_event, Balance.Released):
            owner = next(p.owner for p in domain_event.entry_postings())
            currency = next(p.currency for p in domain_event.entry_postings())
            self._released(owner, currency, domain_event.until)
            return
        if isinstance(domain_event, Balance.Settled):
            self._released(domain_event.account_id, domain_event.currency, domain_event.until)
            return
        if isinstance(domain_event, Payout.FeeCharged):
            self._payout_fees(domain_event, tracking)
            return
        types = BT_TYPES.get(type(domain_event)) or stripe_made_types(domain_event)
        if types is None or not isinstance(domain_event, JournalEvent):
            return
        platform_side, connected_side = types
        gains = _PLATFORM_GAINS.get(type(domain_event))
        source = _bt_source(domain_event)
        description = f"{domain_event.kind.replace('_', ' ')} {source}"
        # Funds available at once carry the instant Stripe says they became available
        # (a transfer from a settled charge: the charge's), else the movement's own.
        on = domain_event.available_on or domain_event.effective_at
        available_on = micros(on) if on is not None else None
        created, recorded = micros(domain_event.effective_at), micros(domain_event.timestamp)
        for (account, currency), (pending, available, reserved) in _balance_deltas(
            domain_event
        ).items():
            net = _net(domain_event, pending, available, reserved)
            if net == 0 and not isinstance(domain_event, Payment.Captured):
                continue
            on_platform_side = gains is None or (net > 0) == gains
            bt_type, category = platform_side if on_platform_side else connected_side
            gross = _gross(domain_event, net)
            fee = gross - net
            fee_details = _stripe_fee_details(fee, currency) if fee else NO_FEES
            self._insert(
                [
                    balance_transaction_id(domain_event.entry_id, account),
                    tracking.notification_id,
                    account,
                    bt_type,
                    gross,
                    fee,
                    fee_details,
                    net,
                    currency,
                    "pending" if pending else "available",
                    available_on,
                    created,
                    recorded,
                    source,
                    category,
                    description,
                    domain_event.entry_id,
                ]
            )

    def _payout_fees(self, event: Payout.FeeCharged, tracking: Tracking) -> None:
        """A payout's fees as Stripe itemizes them: on the seller, fees of the payout (its
        balance transaction's ``fee_details``); on the platform, its ``application_fee``."""
        fees = {
            "stripe_fee": event.stripe_fee_minor,
            "application_fee": event.application_fee_minor,
        }
        for (account, currency), (_, available, _) in _balance_deltas(event).items():
            on_platform = available > 0
            details = [
                {"type": kind, "amount": amount, "currency": currency, "description": kind}
                for kind, amount in fees.items()
                if amount and not on_platform
            ]
            gross = available if on_platform else 0
            row = (
                ("application_fee", "platform_earning", event.application_fee_id or "")
                if on_platform
                else ("payout", "payout", event.payout_id)
            )
            self._insert(
                [
                    balance_transaction_id(event.entry_id, account),
                    tracking.notification_id,
                    account,
                    row[0],
                    gross,
                    gross - available,
                    json.dumps(details),
                    available,
                    currency,
                    "available",
                    micros(event.effective_at),
                    micros(event.effective_at),
                    micros(event.timestamp),
                    row[2],
                    row[1],
                    f"payout fee {event.payout_id}",
                    event.entry_id,
                ]
            )

    def _released(self, owner: str, currency: str, until: datetime) -> None:
        """What was pending up to ``until`` is available now."""
        until_us = micros(until)
        if not self.set_based:
            self._release_stored(owner, currency, until_us)
            return
        key = (owner, currency)
        self.releases[key] = max(until_us, self.releases.get(key, until_us))
        held = self.pending.get(key)
        if held:  # set-based: this page's rows, not written yet
            still = []
            for row in held:
                if row[BT_AVAILABLE_ON] is not None and row[BT_AVAILABLE_ON] <= until_us:
                    row[BT_STATUS] = "available"
                else:
                    still.append(row)
            self.pending[key] = still

    def _release_stored(self, owner: str, currency: str, until_us: int) -> None:
        self.tx.execute(
            "UPDATE rm_balance_transactions SET status = 'available'"
            " WHERE account_id = %s AND currency = %s AND status = 'pending'"
            " AND available_on <= %s",
            (owner, currency, until_us),
        )


class PayoutsProjection(LedgerProjection):
    name = "payouts"
    tables = ("rm_payouts", "rm_payout_metadata")
    ddl = (
        "CREATE TABLE IF NOT EXISTS rm_payouts ("
        " id TEXT PRIMARY KEY, aggregate_id TEXT NOT NULL UNIQUE, position BIGINT NOT NULL,"
        " account_id TEXT NOT NULL, currency TEXT NOT NULL, amount BIGINT NOT NULL,"
        " status TEXT NOT NULL,"
        " failure_code TEXT, created BIGINT NOT NULL, updated BIGINT NOT NULL,"
        " timeline TEXT NOT NULL,"
        # Migration 0007: the payout's fees and Stripe's conversion (ledger.payout_fx).
        " stripe_fee BIGINT, application_fee BIGINT, bank_currency TEXT, bank_amount BIGINT,"
        " exchange_rate TEXT,"
        # Migration 0008: the payout as Stripe reports it (Payout.Reported).
        " stripe_payout_id TEXT, arrival_date BIGINT, destination TEXT, failure_message TEXT,"
        " automatic INTEGER,"
        # Migration 0010: the payout's metadata as Stripe reports it (Payout.MetadataReported),
        # JSON (NULL: none reported), and one row per pair for the metadata[key]=value filters.
        " metadata TEXT)",
        "CREATE INDEX IF NOT EXISTS ix_payouts_account ON rm_payouts (account_id, position, id)",
        "CREATE TABLE IF NOT EXISTS rm_payout_metadata ("
        " payout_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
        " PRIMARY KEY (payout_id, key))",
    )
    STATUS: ClassVar[dict[type, str]] = {
        Payout.MarkedInTransit: "in_transit",
        Payout.Paid: "paid",
        Payout.Failed: "failed",
        Payout.Canceled: "canceled",
        Payout.Held: "held",
    }

    handles = (
        Payout.Requested,
        Payout.FeeCharged,
        Payout.Converted,
        Payout.Reported,
        Payout.MetadataReported,
        Payout.Submitted,
        *STATUS,
    )

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        if isinstance(domain_event, Payout.Requested):
            self._requested(domain_event, tracking)
            return
        if isinstance(domain_event, (Payout.FeeCharged, Payout.Converted)):
            self._priced(domain_event, tracking)
            return
        if isinstance(domain_event, Payout.Reported):
            self._reported(domain_event, tracking)
            return
        if isinstance(domain_event, Payout.MetadataReported):
            self._metadata(domain_event.payout_id, dict(domain_event.metadata))
            return
        status = self.STATUS.get(type(domain_event))
        if status is None and not isinstance(domain_event, Payout.Submitted):
            return
        aggregate_id = str(domain_event.originator_id)
        if isinstance(domain_event, Payout.Submitted):  # Stripe's po_ id, before it reports more
            self.tx.execute(
                "UPDATE rm_payouts SET stripe_payout_id = %s WHERE aggregate_id = %s",
                (domain_event.stripe_payout_id, aggregate_id),
            )
        self.tx.execute(
            "SELECT status, timeline FROM rm_payouts WHERE aggregate_id = %s", (aggregate_id,)
        )
        row = self.tx.one()
        if row is None:
            return  # cannot happen in a consistent log; the verify command would report it
        if status is None:
            if row["status"] != "held":
                return  # a submission changes no status, but ends a hold (ledger.payouts)
            status = "pending"
        at = micros(domain_event.effective_at)
        step: dict[str, Any] = {"status": status, "at": micros_to_seconds(at)}
        if isinstance(domain_event, Payout.Held):
            step.update(reason_code=domain_event.reason_code, message=domain_event.message)
        timeline = [*json.loads(row["timeline"]), step]
        self.tx.execute(
            "UPDATE rm_payouts SET status = %s, failure_code = COALESCE(%s, failure_code),"
            " updated = %s, timeline = %s, position = %s WHERE aggregate_id = %s",
            (
                status,
                getattr(domain_event, "failure_code", None),
                at,
                json.dumps(timeline),
                tracking.notification_id,
                aggregate_id,
            ),
        )

    def _priced(self, event: Payout.FeeCharged | Payout.Converted, tracking: Tracking) -> None:
        """The payout's fees, or Stripe's conversion: what else the payout cost and became."""
        if isinstance(event, Payout.FeeCharged):
            sets = "stripe_fee = %s, application_fee = %s"
            values: tuple[Any, ...] = (event.stripe_fee_minor, event.application_fee_minor)
        else:
            sets = "bank_currency = %s, bank_amount = %s, exchange_rate = %s"
            values = (event.bank_currency, event.bank_amount_minor, event.exchange_rate)
        self.tx.execute(
            f"UPDATE rm_payouts SET {sets}, position = %s WHERE aggregate_id = %s",
            (*values, tracking.notification_id, str(event.originator_id)),
        )

    def _reported(self, event: Payout.Reported, tracking: Tracking) -> None:
        """Stripe's id, arrival date, destination and failure of the payout, as reported."""
        self.tx.execute(
            "UPDATE rm_payouts SET stripe_payout_id = %s, arrival_date = %s, destination = %s,"
            " failure_code = COALESCE(%s, failure_code), failure_message = %s, automatic = %s,"
            " position = %s WHERE aggregate_id = %s",
            (
                event.stripe_payout_id,
                event.arrival_date,
                event.destination,
                event.failure_code,
                event.failure_message,
                None if event.automatic is None else int(event.automatic),
                tracking.notification_id,
                str(event.originator_id),
            ),
        )

    def _metadata(self, payout_id: str, metadata: dict[str, str]) -> None:
        """Stripe's metadata of the payout, replaced whole (the list's order stays put)."""
        self.tx.execute(
            "UPDATE rm_payouts SET metadata = %s WHERE id = %s",
            (json.dumps(metadata, sort_keys=True), payout_id),
        )
        self.tx.execute("DELETE FROM rm_payout_metadata WHERE payout_id = %s", (payout_id,))
        for key, value in sorted(metadata.items()):
            self.tx.execute(
                "INSERT INTO rm_payout_metadata (payout_id, key, value) VALUES (%s, %s, %s)",
                (payout_id, key, value),
            )

    def _requested(self, domain_event: Payout.Requested, tracking: Tracking) -> None:
        at = micros(domain_event.effective_at)
        self.tx.execute(
            "INSERT INTO rm_payouts (id, aggregate_id, position, account_id, currency, amount,"
            " status, failure_code, created, updated, timeline)"
            " VALUES (%s, %s, %s, %s, %s, %s, 'pending', NULL, %s, %s, %s)",
            (
                domain_event.payout_id,
                str(domain_event.originator_id),
                tracking.notification_id,
                domain_event.account_id,
                domain_event.currency,
                domain_event.amount_minor,
                at,
                at,
                json.dumps([{"status": "pending", "at": micros_to_seconds(at)}]),
            ),
        )


class RoutingHoldsProjection(LedgerProjection):
    """Payments whose routing is held (``Payment.RoutingHeld``) until it resumes: one row each,
    with the latest reason; the row goes when the routing resumes."""

    name = "routing_holds"
    handles = (Payment.RoutingHeld, Payment.RoutingResumed)
    reads = False
    tables = ("rm_routing_holds",)
    ddl = (
        "CREATE TABLE IF NOT EXISTS rm_routing_holds ("
        " payment_id TEXT PRIMARY KEY, position BIGINT NOT NULL, destination TEXT NOT NULL,"
        " reason_code TEXT NOT NULL, message TEXT NOT NULL, held_at BIGINT NOT NULL,"
        " holds BIGINT NOT NULL)",
    )

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        if isinstance(domain_event, Payment.RoutingResumed):
            self.tx.execute(
                "DELETE FROM rm_routing_holds WHERE payment_id = %s", (domain_event.payment_id,)
            )
        if not isinstance(domain_event, Payment.RoutingHeld):
            return
        self.tx.execute(
            "INSERT INTO rm_routing_holds AS h (payment_id, position, destination, reason_code,"
            " message, held_at, holds) VALUES (%s, %s, %s, %s, %s, %s, 1)"
            " ON CONFLICT (payment_id) DO UPDATE SET position = excluded.position,"
            " destination = excluded.destination, reason_code = excluded.reason_code,"
            " message = excluded.message, held_at = excluded.held_at, holds = h.holds + 1",
            (
                domain_event.payment_id,
                tracking.notification_id,
                domain_event.destination,
                domain_event.reason_code,
                domain_event.message,
                micros(domain_event.effective_at),
            ),
        )


class RevenueProjection(LedgerProjection):
    """Platform fee revenue by UTC day and currency: application fees collected and refunded."""

    name = "revenue"
    handles = (Payment.ApplicationFeeCollected, Payment.ApplicationFeeRefunded, Payout.FeeCharged)
    reads = False
    tables = ("rm_revenue",)
    ddl = (
        "CREATE TABLE IF NOT EXISTS rm_revenue ("
        " day TEXT NOT NULL, currency TEXT NOT NULL, fees_collected BIGINT NOT NULL,"
        " fees_refunded BIGINT NOT NULL, count BIGINT NOT NULL, PRIMARY KEY (day, currency))",
    )

    def __init__(self, view: ReadModel) -> None:
        super().__init__(view)
        self.days = Upserts(
            "rm_revenue",
            keys=(("day", TEXT), ("currency", TEXT)),
            sums=(("fees_collected", BIGINT), ("fees_refunded", BIGINT), ("count", BIGINT)),
        )

    def sinks(self) -> tuple[Sink, ...]:
        return (self.days,)

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        collected = isinstance(domain_event, Payment.ApplicationFeeCollected)
        refunded = isinstance(domain_event, Payment.ApplicationFeeRefunded)
        # Payout monetization (ledger.payout_fx): the platform's fee on a seller's payout.
        fee_charged = isinstance(domain_event, Payout.FeeCharged)
        on_payout = domain_event.application_fee_minor if fee_charged else 0
        collected = collected or on_payout > 0
        if not (collected or refunded):
            return
        amount = on_payout or int(domain_event.amount_minor)
        currency = domain_event.entry_postings()[0].currency
        self.days.add(
            (domain_event.effective_at.date().isoformat(), currency),
            (amount if collected else 0, amount if refunded else 0, 1 if collected else 0),
        )


# The accounts read model (its queries: projections.accounts) ---------------------------------


class AccountsProjection(LedgerProjection):
    name = "accounts"
    handles = (
        ConnectedAccount.Opened,
        ConnectedAccount.Updated,
        ConnectedAccount.ProfileSet,
        ConnectedAccount.RequirementsSet,
        ConnectedAccount.Closed,
        *risk.HANDLES,
    )
    tables = ("rm_accounts", "rm_account_metadata", requirements.TABLE, risk.TABLE)
    ddl = (
        "CREATE TABLE IF NOT EXISTS rm_accounts ("
        " id TEXT PRIMARY KEY, aggregate_id TEXT NOT NULL UNIQUE, position BIGINT NOT NULL,"
        " kind TEXT NOT NULL, country TEXT NOT NULL, default_currency TEXT NOT NULL,"
        " verification_status TEXT NOT NULL, charges_enabled INTEGER NOT NULL,"
        " payouts_enabled INTEGER NOT NULL, name TEXT, email TEXT, metadata TEXT NOT NULL,"
        " search TEXT NOT NULL, created BIGINT NOT NULL, closed INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS rm_account_metadata ("
        " account_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
        " PRIMARY KEY (account_id, key))",
        requirements.DDL,
        risk.DDL,
    )

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        aggregate_id = str(domain_event.originator_id)
        if isinstance(domain_event, ConnectedAccount.Opened):
            self._opened(domain_event, tracking)
        elif isinstance(domain_event, ConnectedAccount.Updated):
            self.tx.execute(
                "UPDATE rm_accounts SET verification_status = %s, charges_enabled = %s,"
                " payouts_enabled = %s WHERE aggregate_id = %s",
                (
                    domain_event.verification_status,
                    int(domain_event.charges_enabled),
                    int(domain_event.payouts_enabled),
                    aggregate_id,
                ),
            )
        elif isinstance(domain_event, ConnectedAccount.ProfileSet):
            self._profile(domain_event, aggregate_id)
        elif isinstance(domain_event, ConnectedAccount.RequirementsSet):
            requirements.record(self.tx, domain_event, aggregate_id)
        elif isinstance(domain_event, ConnectedAccount.Closed):
            self.tx.execute(
                "UPDATE rm_accounts SET closed = 1 WHERE aggregate_id = %s", (aggregate_id,)
            )
        else:
            risk.process(self.tx, domain_event)  # loss liability (projections.risk)

    def _opened(self, event: ConnectedAccount.Opened, tracking: Tracking) -> None:
        self.tx.execute(
            "INSERT INTO rm_accounts (id, aggregate_id, position, kind, country,"
            " default_currency, verification_status, charges_enabled, payouts_enabled, name,"
            " email, metadata, search, created, closed)"
            " VALUES (%s, %s, %s, %s, %s, %s, 'unverified', 0, 0, NULL, NULL, '{}', %s, %s, 0)",
            (
                event.account_id,
                str(event.originator_id),
                tracking.notification_id,
                event.kind,
                event.country,
                event.default_currency,
                event.account_id.lower(),
                micros(event.effective_at),
            ),
        )

    def _profile(self, event: ConnectedAccount.ProfileSet, aggregate_id: str) -> None:
        self.tx.execute("SELECT id FROM rm_accounts WHERE aggregate_id = %s", (aggregate_id,))
        row = self.tx.one()
        if row is None:
            return  # cannot happen in a consistent log; the verify command would report it
        metadata = dict(event.metadata)
        words = [row["id"], event.name or "", event.email or ""]
        words += [f"{k} {v}" for k, v in sorted(metadata.items())]
        self.tx.execute(
            "UPDATE rm_accounts SET name = %s, email = %s, metadata = %s, search = %s"
            " WHERE aggregate_id = %s",
            (
                event.name,
                event.email,
                json.dumps(metadata, sort_keys=True),
                "\n".join(words).lower(),
                aggregate_id,
            ),
        )
        self.tx.execute("DELETE FROM rm_account_metadata WHERE account_id = %s", (row["id"],))
        for key, value in sorted(metadata.items()):
            self.tx.execute(
                "INSERT INTO rm_account_metadata (account_id, key, value) VALUES (%s, %s, %s)",
                (row["id"], key, value),
            )


PROJECTIONS: dict[str, type[LedgerProjection]] = {
    p.name: p
    for p in (
        BalancesProjection,
        BalanceTransactionsProjection,
        PayoutsProjection,
        RevenueProjection,
        RoutingHoldsProjection,
        AccountsProjection,
        ReconciliationProjection,
        PaymentsProjection,
    )
}
META_DDL = (
    "CREATE TABLE IF NOT EXISTS rm_projection_meta ("
    " name TEXT PRIMARY KEY, position BIGINT NOT NULL, event_recorded BIGINT NOT NULL,"
    " updated BIGINT NOT NULL)"
)
ALL_DDL: tuple[str, ...] = (*(ddl for p in PROJECTIONS.values() for ddl in p.ddl), META_DDL)
