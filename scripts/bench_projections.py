"""The projections suite: the read side at a realistic log size.

One history of routed payments (destination charges with fees, separate charges split between
sellers, refunds, daily releases, weekly payouts) is written with execute_batch until the log
holds ``--events`` events; then, in the same schema, the events table is read raw (psycopg) and
through the library (decoded), every projection is rebuilt from it beside that raw read rate, the
balance queries are timed beside a raw primary-key SELECT, and the read models are checked against
the Balance aggregates, account by account.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import math
import os
import pstats
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from bench_common import (
    CURRENCY,
    ERROR_SAMPLES_MAX,
    PLATFORM,
    Schemas,
    fmt,
    load_1m,
    open_ledger,
    percentile,
    render_rows,
)
from psycopg import sql

from adapters.bootstrap import read_model
from adapters.settings import Settings
from adapters.verify import verify
from ledger import commands as c
from ledger.application import Ledger
from ledger.splits import SplitPart
from projections import queries
from projections.projections import PROJECTIONS
from projections.runner import PROJECTION_BATCH_SIZE, REBUILD_PAGE_EVENTS, Projector

HISTORY_START = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday, UTC midnight: day 0 of the history
HISTORY_SELLERS = 200
HISTORY_BATCH = 500  # commands per execute_batch while writing the history
HISTORY_EVENTS = 1_000_000
HISTORY_EVENTS_QUICK = 5_000  # --quick stays under 2 minutes with every suite
DESTINATION_SHARE = 0.88  # of payments; the rest are separate charges split over 2-3 sellers
APPLICATION_FEE_BPS = 1_000  # the platform's fee on destination charges (10%)
SPLIT_SELLERS_BPS = 9_000  # separate charges: the sellers share 90%, the platform keeps the rest
REFUND_SHARE = 0.03  # of payments, refunded 1-10 days later; some of them partially
PARTIAL_REFUND_SHARE = 0.3
PAYOUT_EVERY_DAYS = 7  # each seller is paid out weekly, on its own weekday
SETTLEMENT_DAYS = 2  # available_on: UTC midnight two days after the charge, as Stripe reports it
RAW_READ_PAGE = 1_000
VERIFY_AUTO_EVENTS_MAX = 1_000_000  # `--verify auto` runs adapters.verify.verify up to this size
QUERY_WARMUP_CALLS = 50
PROFILE_TOP = 15


def add_arguments(parser: argparse.ArgumentParser) -> None:
    projections = parser.add_argument_group("projections suite")
    projections.add_argument(
        "--events",
        type=int,
        default=None,
        help=f"events in the history (default {HISTORY_EVENTS:,}; "
        f"{HISTORY_EVENTS_QUICK:,} with --quick)",
    )
    projections.add_argument(
        "--history-sellers",
        type=int,
        default=HISTORY_SELLERS,
        help=f"connected sellers in the history (default {HISTORY_SELLERS})",
    )
    projections.add_argument(
        "--history-batch",
        type=int,
        default=HISTORY_BATCH,
        help=f"commands per execute_batch while writing the history (default {HISTORY_BATCH})",
    )
    projections.add_argument(
        "--latency-samples",
        type=int,
        default=2_000,
        help="random accounts queried per latency measurement (default 2000)",
    )
    projections.add_argument(
        "--verify",
        choices=("auto", "always", "never"),
        default="auto",
        help="also run `sluice audit verify` (adapters.verify.verify; one more rebuild of all "
        f"four): auto = up to {VERIFY_AUTO_EVENTS_MAX:,} events (default auto)",
    )
    projections.add_argument(
        "--shared-read",
        action="store_true",
        help="also time a bench-only rebuild of all four that reads and decodes the log once "
        "and applies each page to every projection (Projector.apply)",
    )
    projections.add_argument(
        "--profile",
        default="",
        metavar="NAMES",
        help="comma-separated projections to rebuild once more under cProfile, reporting where "
        "the time goes (e.g. balances)",
    )


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A bad value ends the run through ``parser.error``."""
    if args.events is None and args.quick:
        args.events = HISTORY_EVENTS_QUICK
    if args.events is not None and args.events < 1_000:
        parser.error("--events must be at least 1000")
    if args.history_sellers < 3:
        parser.error("--history-sellers must be at least 3 (splits go to 2-3 sellers)")
    if not 1 <= args.history_batch <= 1_000:
        parser.error("--history-batch is 1 to 1000")
    if args.latency_samples < 1:
        parser.error("--latency-samples must be at least 1")
    args.profile_names = [n.strip() for n in args.profile.split(",") if n.strip()]
    unknown = [n for n in args.profile_names if n not in PROJECTIONS]
    if unknown:
        parser.error(f"--profile: unknown projection(s) {unknown}; known: {list(PROJECTIONS)}")


def describe_run(args: argparse.Namespace) -> str:
    return (
        f"projections: history of {history_events(args):,} events, "
        f"{args.history_sellers} sellers, batches of {args.history_batch}, projector batch "
        f"{PROJECTION_BATCH_SIZE}, {args.latency_samples:,} latency samples, "
        f"verify={args.verify}"
    )


class SimClock:
    """The Ledger's clock while the history is written: the batch's newest effective instant."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class HistoryTally:
    commands: int = 0
    batches: int = 0
    payments: int = 0
    destination: int = 0
    separate: int = 0
    refunds: int = 0
    partial_refunds: int = 0
    releases: int = 0  # ReleaseFunds commands accepted
    released: int = 0  # ... that moved funds (a Released event)
    payouts: int = 0
    payouts_in_transit: int = 0
    payouts_paid: int = 0
    application_fees_minor: int = 0
    days: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    rejection_samples: list[str] = field(default_factory=list)


class HistoryWriter:
    """Writes simulated days of a marketplace until the log head reaches ``target`` events.

    A day: at 00:05 every account with pending funds due by that midnight is released; at 00:10
    yesterday's payouts go in transit, the day before's are paid, and the sellers whose weekday
    it is are paid out their whole available balance; then the day's payments and the refunds
    due that day follow at random instants. Commands go in batches, in time order.
    """

    def __init__(
        self,
        ledger: Ledger,
        clock: SimClock,
        sellers: Sequence[str],
        *,
        target: int,
        batch_size: int,
        payments_per_day: int,
        seed: int,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self.sellers = list(sellers)
        self.target = target
        self.batch_size = batch_size
        self.payments_per_day = payments_per_day
        self.rng = random.Random(seed)
        # Some sellers sell much more than others (a gentle power law).
        self.cum_weights = list(
            itertools.accumulate(1 / (n + 1) ** 0.7 for n in range(len(self.sellers)))
        )
        self.tally = HistoryTally()
        self.head = 0
        self.day = 0
        self.seq = 0
        self.pending: list[c.Command] = []
        self.due: dict[datetime, set[str]] = {}  # available_on -> accounts with pending funds
        self.refunds_due: dict[int, list[tuple[str, str, int]]] = {}
        self.in_transit_due: dict[int, list[str]] = {}
        self.paid_due: dict[int, list[str]] = {}

    @property
    def done(self) -> bool:
        return self.head >= self.target

    def key(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}-{self.seq}"

    def add(self, cmd: c.Command) -> None:
        self.pending.append(cmd)
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        cmds, self.pending = self.pending, []
        self.clock.now = max(cmd.effective_at for cmd in cmds)
        results = self.ledger.execute_batch(cmds)
        self.tally.batches += 1
        for cmd, result in zip(cmds, results, strict=True):
            self.tally.commands += 1
            if not result.ok or result.replayed:
                kind = type(cmd).__name__
                self.tally.rejected[kind] = self.tally.rejected.get(kind, 0) + 1
                if len(self.tally.rejection_samples) < ERROR_SAMPLES_MAX:
                    self.tally.rejection_samples.append(f"{kind}: {result.error or 'replayed'}")
                continue
            if result.position is not None:
                self.head = max(self.head, result.position)
            self.accepted(cmd, result.ids)

    def accepted(self, cmd: c.Command, ids: dict[str, str]) -> None:
        t = self.tally
        if isinstance(cmd, c.RecordPayment):
            t.payments += 1
            t.application_fees_minor += cmd.application_fee_minor
            if cmd.charge_type == "destination":
                t.destination += 1
                accounts = {PLATFORM, str(cmd.account_id)}
            else:
                t.separate += 1
                accounts = {PLATFORM, *(part.account_id for part in cmd.split)}
            assert cmd.available_on is not None
            self.due.setdefault(cmd.available_on, set()).update(accounts)
            if self.rng.random() < REFUND_SHARE:
                day = self.day + self.rng.randint(1, 10)
                self.refunds_due.setdefault(day, []).append(
                    (ids["payment"], cmd.charge_type, cmd.amount_minor)
                )
        elif isinstance(cmd, c.RefundPayment):
            t.refunds += 1
            t.partial_refunds += cmd.amount_minor is not None
        elif isinstance(cmd, c.ReleaseFunds):
            t.releases += 1
            t.released += "entry" in ids
        elif isinstance(cmd, c.RequestPayout):
            t.payouts += 1
            self.in_transit_due.setdefault(self.day + 1, []).append(ids["payout"])
        elif isinstance(cmd, c.MarkPayoutInTransit):
            t.payouts_in_transit += 1
            self.paid_due.setdefault(self.day + 1, []).append(cmd.payout_id)
        elif isinstance(cmd, c.MarkPayoutPaid):
            t.payouts_paid += 1

    def write_day(self) -> None:
        self.tally.days += 1
        midnight = HISTORY_START + timedelta(days=self.day)
        at = midnight + timedelta(minutes=5)
        accounts: set[str] = set()
        for instant in [instant for instant in self.due if instant <= midnight]:
            accounts |= self.due.pop(instant)
        for account in sorted(accounts):
            self.add(
                c.ReleaseFunds(
                    idempotency_key=self.key("release"),
                    effective_at=at,
                    account_id=account,
                    currency=CURRENCY,
                    until=midnight,
                )
            )
        self.flush()  # the payouts below are sized on the released balances
        if self.done:
            return
        at = midnight + timedelta(minutes=10)
        for payout_id in self.paid_due.pop(self.day, []):
            self.add(
                c.MarkPayoutPaid(
                    idempotency_key=self.key("paid"), effective_at=at, payout_id=payout_id
                )
            )
        for payout_id in self.in_transit_due.pop(self.day, []):
            self.add(
                c.MarkPayoutInTransit(
                    idempotency_key=self.key("transit"), effective_at=at, payout_id=payout_id
                )
            )
        for n, seller in enumerate(self.sellers):
            if n % PAYOUT_EVERY_DAYS != self.day % PAYOUT_EVERY_DAYS:
                continue
            balance = self.ledger.get_balance(seller, CURRENCY)
            if balance is not None and balance.available_minor > 0:
                self.add(
                    c.RequestPayout(
                        idempotency_key=self.key("payout"),
                        effective_at=at,
                        account_id=seller,
                        currency=CURRENCY,
                        amount_minor=balance.available_minor,
                    )
                )
        start = midnight + timedelta(minutes=15)
        span = timedelta(days=1) - timedelta(minutes=16)
        day: list[tuple[float, tuple[str, str, int] | None]] = [
            (self.rng.random(), None) for _ in range(self.payments_per_day)
        ]
        day += [(self.rng.random(), due) for due in self.refunds_due.pop(self.day, [])]
        day.sort(key=lambda item: item[0])
        for fraction, due in day:
            at = start + span * fraction
            self.add(self.payment(at) if due is None else self.refund(at, *due))
            if self.done:
                return
        self.flush()

    def payment(self, at: datetime) -> c.RecordPayment:
        amount = min(500_000, max(100, round(self.rng.lognormvariate(8.0, 0.9))))
        day = at.replace(hour=0, minute=0, second=0, microsecond=0)
        common: dict[str, Any] = {
            "idempotency_key": self.key("pay"),
            "effective_at": at,
            "currency": CURRENCY,
            "amount_minor": amount,
            "stripe_fee_minor": 30 + (amount * 29 + 500) // 1000,
            "available_on": day + timedelta(days=SETTLEMENT_DAYS),
        }
        if self.rng.random() < DESTINATION_SHARE:
            (seller,) = self.rng.choices(self.sellers, cum_weights=self.cum_weights)
            return c.RecordPayment(
                charge_type="destination",
                account_id=seller,
                application_fee_minor=amount * APPLICATION_FEE_BPS // 10_000,
                **common,
            )
        parts = self.rng.sample(self.sellers, self.rng.choice((2, 3)))
        share = SPLIT_SELLERS_BPS // len(parts)
        return c.RecordPayment(
            charge_type="separate",
            split=tuple(SplitPart(seller, share_bps=share) for seller in parts),
            **common,
        )

    def refund(
        self, at: datetime, payment_id: str, charge_type: str, amount: int
    ) -> c.RefundPayment:
        partial = self.rng.random() < PARTIAL_REFUND_SHARE
        destination = charge_type == "destination"
        return c.RefundPayment(
            idempotency_key=self.key("refund"),
            effective_at=at,
            payment_id=payment_id,
            amount_minor=amount // 2 if partial else None,
            # A destination charge's refund takes the funds back from the seller, fee included;
            # a separate charge's refund is the platform's (its transfers stand).
            reverse_transfer=destination,
            refund_application_fee=destination,
        )


def history_events(args: argparse.Namespace) -> int:
    return args.events if args.events is not None else HISTORY_EVENTS


def write_history(
    args: argparse.Namespace, schema: str
) -> tuple[Ledger, Settings, list[str], dict[str, Any]]:
    target = history_events(args)
    sellers = [f"acct_seller_{n:04d}" for n in range(args.history_sellers)]
    clock = SimClock(HISTORY_START)
    ledger = open_ledger(args.conninfo, schema, sellers, clock)
    settings = Settings(database_url=f"{args.conninfo}?schema={schema}")
    read_model(settings, create_tables=True)  # as `sluice db init` does
    head_before = ledger.recorder.max_notification_id() or 0
    payments_per_day = min(5_000, max(1_000, target // 400))
    writer = HistoryWriter(
        ledger,
        clock,
        sellers,
        target=target,
        batch_size=args.history_batch,
        payments_per_day=payments_per_day,
        seed=args.seed,
    )
    began = time.perf_counter()
    last_report = began
    while not writer.done:
        writer.write_day()
        writer.day += 1
        now = time.perf_counter()
        if now - last_report >= 30:
            print(
                f"      ... day {writer.day}: {writer.head:,} events, "
                f"{(writer.head - head_before) / (now - began):,.0f} events/s",
                flush=True,
            )
            last_report = now
    writer.pending.clear()
    seconds = time.perf_counter() - began
    head = ledger.recorder.max_notification_id() or 0
    t = writer.tally
    written = head - head_before
    result = {
        "target_events": target,
        "head": head,
        "setup_events": head_before,
        "events_written": written,
        "seconds": seconds,
        "events_per_s": written / seconds,
        "commands_per_s": t.commands / seconds,
        "payments_per_s": t.payments / seconds,
        "payments_per_day": payments_per_day,
        "sellers": len(sellers),
        "batch_size": args.history_batch,
        **{k: v for k, v in vars(t).items() if k not in ("rejection_samples",)},
        "rejection_samples": t.rejection_samples,
        "rejected_total": sum(t.rejected.values()),
        "load_1m": load_1m(),
        "first_day": HISTORY_START.date().isoformat(),
        "last_day": (HISTORY_START + timedelta(days=t.days - 1)).date().isoformat(),
    }
    return ledger, settings, [PLATFORM, *sellers], result


def table_size(conninfo: str, schema: str, table: str) -> int:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_total_relation_size(%s::regclass)",
            (sql.Identifier(schema, table).as_string(conn),),
        ).fetchone()
    return int(row[0]) if row else 0


def vacuum(conninfo: str, schema: str, table: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(schema, table)))


def measure_raw_read(conninfo: str, schema: str) -> dict[str, Any]:
    """Pages through the events table with plain psycopg: the floor under any reader."""
    query = sql.SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state FROM {}"
        " WHERE notification_id > %s ORDER BY notification_id LIMIT {}"
    ).format(sql.Identifier(schema, "ledger_events"), sql.Literal(RAW_READ_PAGE))
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        position, rows, state_bytes = 0, 0, 0
        began = time.perf_counter()
        while True:
            page = conn.execute(query, (position,), prepare=True).fetchall()
            if not page:
                break
            rows += len(page)
            state_bytes += sum(len(row[4]) for row in page)
            position = page[-1][0]
        seconds = time.perf_counter() - began
    return {
        "label": f"raw SELECT, psycopg (page {RAW_READ_PAGE})",
        "events": rows,
        "seconds": seconds,
        "per_s": rows / seconds,
        "state_bytes": state_bytes,
        "load_1m": load_1m(),
    }


def measure_decoded_read(ledger: Ledger, page_size: int) -> dict[str, Any]:
    """select_notifications + mapper.to_domain_event, as Projector.catch_up reads the log."""
    position, rows = 0, 0
    select_s = decode_s = 0.0
    began = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        page = ledger.recorder.select_notifications(
            start=position, limit=page_size, inclusive_of_start=False
        )
        t1 = time.perf_counter()
        if not page:
            break
        for notification in page:
            ledger.mapper.to_domain_event(notification)
        decode_s += time.perf_counter() - t1
        select_s += t1 - t0
        rows += len(page)
        position = page[-1].id
    seconds = time.perf_counter() - began
    return {
        "label": f"select_notifications + to_domain_event (page {page_size})",
        "events": rows,
        "seconds": seconds,
        "per_s": rows / seconds,
        "select_notifications_s": select_s,
        "to_domain_event_s": decode_s,
        "select_only_per_s": rows / select_s if select_s else math.nan,
        "load_1m": load_1m(),
    }


def projection_rows(view: Any, name: str) -> int:
    total = 0
    with view.read() as tx:
        for table in PROJECTIONS[name].tables:
            tx.execute(f"SELECT count(*) AS n FROM {table}")
            row = tx.one()
            total += int(row["n"]) if row else 0
    return total


def reset_projection(projector: Projector, name: str) -> None:
    """The first half of Projector.rebuild: rows, tracking position and meta dropped together."""
    with projector.view.write(None) as tx:
        projector.projections[name].clear(tx)
        projector.view.reset_tracking(tx, projector.tracking_name(name))
        tx.execute("DELETE FROM rm_projection_meta WHERE name = %s", (name,))


def measure_rebuilds(
    ledger: Ledger,
    view: Any,
    raw: dict[str, Any],
    shared_read: bool,
    each: bool = True,
) -> list[dict[str, Any]]:
    raw_per_s = raw["per_s"]
    rows: list[dict[str, Any]] = []

    def record(label: str, events: int, seconds: float, **extra: Any) -> None:
        per_s = events / seconds
        rows.append(
            {
                "label": label,
                "events": events,
                "seconds": seconds,
                "per_s": per_s,
                "x_raw_read": per_s / raw_per_s,
                "load_1m": load_1m(),
                **extra,
            }
        )
        print(f"      {label}: {events:,} events in {seconds:.1f} s, {per_s:,.0f} events/s")

    for name in PROJECTIONS if each else ():  # --quick: only all of them together
        began = time.perf_counter()
        applied = Projector(ledger, view, [name]).rebuild(name)
        seconds = time.perf_counter() - began
        record(f"rebuild {name}", applied, seconds, rows=projection_rows(view, name))

    if shared_read:
        # Bench-only experiment: read and decode the log once, apply each page to all four
        # (Projector.apply, one transaction per projection per page, as catch_up does).
        projector = Projector(ledger, view)
        began = time.perf_counter()
        for name in projector.projections:
            reset_projection(projector, name)
        position, applied = 0, 0
        while True:
            page = ledger.recorder.select_notifications(
                start=position, limit=projector.batch_size, inclusive_of_start=False
            )
            if not page:
                break
            events = [(n.id, ledger.mapper.to_domain_event(n)) for n in page]
            for projection in projector.projections.values():
                projector.apply(projection, events)
            position, applied = page[-1].id, applied + len(page)
        record("all 4, one shared read (bench-only)", applied, time.perf_counter() - began)

    # Last, so that the read models checked and queried below are the library's own rebuild.
    projector = Projector(ledger, view)
    began = time.perf_counter()
    decoded = projector.rebuild_all()
    # Its rate is of the log's events brought up to date in every read model (the raw read's
    # count: the whole log), though the server leaves out those no read model handles and only
    # ``decoded`` of them were fetched and decoded.
    record(
        f"rebuild all {len(projector.projections)} (Projector.rebuild_all: one read of the log,"
        f" {decoded:,} of its events fetched)",
        raw["events"],
        time.perf_counter() - began,
        events_fetched=decoded,
    )
    return rows


def timed_calls(call: Callable[[str], Any], accounts: Sequence[str]) -> list[float]:
    for account in accounts[:QUERY_WARMUP_CALLS]:
        call(account)
    out = []
    for account in accounts:
        began = time.perf_counter()
        call(account)
        out.append(time.perf_counter() - began)
    return out


def latency_row(label: str, seconds: list[float], raw: dict[str, Any] | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "label": label,
        "calls": len(seconds),
        "p50_ms": percentile(seconds, 0.50) * 1e3,
        "p99_ms": percentile(seconds, 0.99) * 1e3,
        "mean_ms": sum(seconds) / len(seconds) * 1e3 if seconds else math.nan,
        "max_ms": max(seconds) * 1e3 if seconds else math.nan,
    }
    if raw is not None:
        row["x_raw_p50"] = row["p50_ms"] / raw["p50_ms"]
        row["x_raw_p99"] = row["p99_ms"] / raw["p99_ms"]
    return row


def measure_queries(
    args: argparse.Namespace, schema: str, view: Any, accounts: Sequence[str]
) -> list[dict[str, Any]]:
    rng = random.Random(args.seed + 7)
    sample = [rng.choice(accounts) for _ in range(args.latency_samples)]
    balances = sql.SQL(
        "SELECT currency, pending, available, reserved FROM {}"
        " WHERE account_id = %s AND currency = %s"
    ).format(sql.Identifier(schema, "rm_balances"))
    # The statement queries.list_balance_transactions(account=…, limit=100) sends.
    listing = sql.SQL(
        "SELECT * FROM {} WHERE account_id = %s ORDER BY position DESC, id DESC LIMIT %s"
    ).format(sql.Identifier(schema, "rm_balance_transactions"))
    with psycopg.connect(args.conninfo, autocommit=True, connect_timeout=10) as conn:
        # Rebuilds deleted and re-inserted every row: give the planner the statistics that
        # autovacuum would have gathered by the time anyone queries in steady state.
        for table in ("rm_balances", "rm_balance_transactions"):
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, table)))
        raw_balance = timed_calls(
            lambda a: conn.execute(balances, (a, CURRENCY), prepare=True).fetchall(), sample
        )
        raw_list = timed_calls(
            lambda a: conn.execute(listing, (a, 101), prepare=True).fetchall(), sample
        )
    balance = timed_calls(lambda a: queries.balance(view, a), sample)
    listed = timed_calls(
        lambda a: queries.list_balance_transactions(view, account=a, limit=100), sample
    )
    raw_b = latency_row("raw SELECT rm_balances by primary key", raw_balance, None)
    raw_l = latency_row("raw SELECT of the list's SQL (limit 101)", raw_list, None)
    rows = [
        raw_b,
        latency_row("queries.balance", balance, raw_b),
        raw_l,
        latency_row("queries.list_balance_transactions(limit=100)", listed, raw_l),
    ]
    for who, pick in (("sellers", lambda a: a != PLATFORM), ("platform", lambda a: a == PLATFORM)):
        part = [s for a, s in zip(sample, listed, strict=True) if pick(a)]
        raw_part = [s for a, s in zip(sample, raw_list, strict=True) if pick(a)]
        if part:
            raw_row = latency_row("", raw_part, None)
            rows.append(latency_row(f"  list, {who} only", part, raw_row))
    return rows


def check_projections(
    ledger: Ledger,
    view: Any,
    settings: Settings,
    accounts: Sequence[str],
    history: dict[str, Any],
    run_verify: bool,
) -> dict[str, Any]:
    """rm_balances equals the Balance aggregates, account by account; the other read models
    hold what the history put there; and, when asked, `sluice audit verify` finds nothing."""
    began = time.perf_counter()
    with view.read() as tx:
        tx.execute("SELECT account_id, currency, pending, available, reserved FROM rm_balances")
        projected = {
            (r["account_id"], r["currency"]): (r["pending"], r["available"], r["reserved"])
            for r in tx.all()
        }
        tx.execute(
            "SELECT COALESCE(SUM(fees_collected), 0) AS fees, COALESCE(SUM(count), 0) AS n"
            " FROM rm_revenue"
        )
        revenue = tx.one() or {"fees": 0, "n": 0}
        tx.execute("SELECT status, count(*) AS n FROM rm_payouts GROUP BY status")
        payouts = {r["status"]: int(r["n"]) for r in tx.all()}
    mismatches = []
    for account in accounts:
        balance = ledger.get_balance(account, CURRENCY)
        want = (
            (balance.pending_minor, balance.available_minor, balance.reserved_minor)
            if balance is not None
            else (0, 0, 0)
        )
        got = projected.pop((account, CURRENCY), (0, 0, 0))
        if tuple(int(x) for x in got) != want:
            mismatches.append(f"{account}: rm_balances {got}, Balance aggregate {want}")
    mismatches += [f"{key}: in rm_balances, not a known account" for key in projected]
    others = []
    if int(revenue["fees"]) != history["application_fees_minor"]:
        others.append(
            f"rm_revenue fees {revenue['fees']}, history {history['application_fees_minor']}"
        )
    if int(revenue["n"]) != history["destination"]:
        others.append(
            f"rm_revenue count {revenue['n']}, destination payments {history['destination']}"
        )
    if (
        sum(payouts.values()) != history["payouts"]
        or payouts.get("paid", 0) != history["payouts_paid"]
    ):
        others.append(f"rm_payouts {payouts}, history {history['payouts']} payouts")
    result: dict[str, Any] = {
        "accounts_compared": len(accounts),
        "balance_mismatches": mismatches[:10],
        "balance_mismatch_count": len(mismatches),
        "other_mismatches": others,
        "verify_ran": run_verify,
    }
    result["aggregates_seconds"] = time.perf_counter() - began
    if run_verify:
        began = time.perf_counter()
        _, differences = verify(ledger, view, settings)
        result["verify_seconds"] = time.perf_counter() - began
        result["verify_differences"] = len(differences)
        result["verify_samples"] = [d.describe() for d in differences[:5]]
    result["ok"] = not mismatches and not others and not result.get("verify_differences")
    return result


def profile_rebuild(ledger: Ledger, view: Any, name: str) -> dict[str, Any]:
    """One more rebuild of ``name`` under cProfile: where its time goes, by layer."""
    profiler = cProfile.Profile()
    projector = Projector(ledger, view, [name])
    began = time.perf_counter()
    profiler.enable()
    applied = projector.rebuild(name)
    profiler.disable()
    wall = time.perf_counter() - began
    stats = pstats.Stats(profiler)
    entries: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]

    def cumulative(path_end: str, func: str) -> float:
        return sum(
            v[3] for (path, _, fn), v in entries.items() if path.endswith(path_end) and fn == func
        )

    total = cumulative("projections/runner.py", "catch_up")
    select = cumulative("eventsourcing/postgres.py", "select_notifications")
    decode = cumulative("eventsourcing/persistence.py", "to_domain_event")
    json_decode = cumulative("eventsourcing/persistence.py", "decode")
    apply = cumulative("projections/runner.py", "apply")
    sql_exec = cumulative("adapters/sql_store.py", "execute")
    process = cumulative("projections/projections.py", "process_event")
    layers = {
        "read events: select_notifications (SQL + Notification objects)": select,
        "decode: mapper.to_domain_event": decode,
        "  of which transcoder.decode (JSON + object hooks)": json_decode,
        "projection SQL: _Tx.execute (psycopg, incl. server round trips)": sql_exec,
        "projection Python: process_event minus its SQL": max(0.0, process - sql_exec),
        "batch overhead: tracking insert, meta upsert, commit, dispatch": max(0.0, apply - process),
        "other in catch_up": max(0.0, total - select - decode - apply),
    }
    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(PROFILE_TOP)
    return {
        "projection": name,
        "events": applied,
        "wall_seconds": wall,
        "profiled_seconds": total,
        "layers_seconds": layers,
        "execute_calls": sum(
            v[1]
            for (path, _, fn), v in entries.items()
            if path.endswith("adapters/sql_store.py") and fn == "execute"
        ),
        "top_tottime": buffer.getvalue(),
    }


def run_projections(args: argparse.Namespace, schemas: Schemas) -> dict[str, Any]:
    target = history_events(args)
    run_verify = args.verify == "always" or (
        args.verify == "auto" and target <= VERIFY_AUTO_EVENTS_MAX
    )
    schema = schemas.name("hist")
    print(
        f"[1/5] history: {target:,} events, {args.history_sellers} sellers, batches of "
        f"{args.history_batch} commands",
        flush=True,
    )
    ledger, settings, accounts, history = write_history(args, schema)
    try:
        print(
            f"      {history['events_written']:,} events in {history['seconds']:.1f} s: "
            f"{history['events_per_s']:,.0f} events/s, {history['commands_per_s']:,.0f} "
            f"commands/s, {history['payments_per_s']:,.0f} payments/s",
            flush=True,
        )
        sizes = {
            t: table_size(args.conninfo, schema, t) for t in ("ledger_events", "ledger_snapshots")
        }
        print("[2/5] reading the log", flush=True)
        # The log at rest, as a rebuild finds it in production: vacuumed (hint bits set, the
        # visibility map written). Else autovacuum's first pass over the freshly written log
        # runs during the measurements below, on the same two cores.
        vacuum(args.conninfo, schema, "ledger_events")
        measure_raw_read(args.conninfo, schema)  # warms the caches; the second pass counts
        raw = measure_raw_read(args.conninfo, schema)
        print(f"      raw: {raw['events']:,} rows in {raw['seconds']:.1f} s", flush=True)
        decoded = measure_decoded_read(ledger, PROJECTION_BATCH_SIZE)
        decoded["x_raw_read"] = decoded["per_s"] / raw["per_s"]
        raw["x_raw_read"] = 1.0
        print(
            f"      decoded: {decoded['events']:,} events in {decoded['seconds']:.1f} s",
            flush=True,
        )
        print("[3/5] rebuilding the read models", flush=True)
        view = read_model(settings)
        rebuilds = measure_rebuilds(ledger, view, raw, args.shared_read, each=not args.quick)
        for t in ("rm_balances", "rm_balance_transactions", "rm_payouts", "rm_revenue"):
            sizes[t] = table_size(args.conninfo, schema, t)
        print(
            f"[4/5] query latency: {args.latency_samples:,} random accounts (after ANALYZE)",
            flush=True,
        )
        latency = measure_queries(args, schema, view, accounts)
        print(
            f"[5/5] checking the read models against the ledger"
            f"{' (and sluice audit verify)' if run_verify else ''}",
            flush=True,
        )
        validation = check_projections(ledger, view, settings, accounts, history, run_verify)
        profiles = [profile_rebuild(ledger, view, name) for name in args.profile_names]
    finally:
        ledger.close()
    return {
        "schema": schema,
        "history": history,
        "table_bytes": sizes,
        "reads": [raw, decoded],
        "rebuilds": rebuilds,
        "projection_batch_size": PROJECTION_BATCH_SIZE,
        "latency": latency,
        "validation": validation,
        "profiles": profiles,
    }


def report_projections(result: dict[str, Any]) -> None:
    report_history(result)
    print()
    report_reads_and_rebuilds(result)
    print()
    report_latency(result["latency"])
    print()
    report_validation(result["validation"])
    for profile in result["profiles"]:
        print()
        report_profile(profile)


def report_history(result: dict[str, Any]) -> None:
    h = result["history"]
    print()
    print(
        f"history: {h['events_written']:,} events ({h['head']:,} in the log) over {h['days']} "
        f"simulated days from {h['first_day']}, written in {h['seconds']:.1f} s: "
        f"{h['events_per_s']:,.0f} events/s, {h['commands_per_s']:,.0f} commands/s, "
        f"{h['payments_per_s']:,.0f} payments/s (execute_batch, {h['batch_size']} commands; "
        f"load 1m at the end {fmt(h.get('load_1m'), 2)})"
    )
    print(
        f"  {h['payments']:,} payments ({h['destination']:,} destination with application "
        f"fees, {h['separate']:,} separate split over 2-3 sellers), {h['refunds']:,} refunds "
        f"({h['partial_refunds']:,} partial), {h['releases']:,} releases ({h['released']:,} "
        f"moved funds), {h['payouts']:,} payouts ({h['payouts_paid']:,} paid); "
        f"{h['rejected_total']:,} rejected"
    )
    for sample in h["rejection_samples"]:
        print(f"  rejected: {sample}")
    sizes = result["table_bytes"]
    raw = result["reads"][0]
    print(
        "  sizes: "
        + ", ".join(f"{t} {b / 2**20:,.0f} MiB" for t, b in sizes.items())
        + f"; mean stored state {raw['state_bytes'] / raw['events']:,.0f} B/event"
    )


def report_reads_and_rebuilds(result: dict[str, Any]) -> None:
    lines: list[Sequence[str]] = [
        (
            r["label"],
            f"{r['events']:,}",
            fmt(r["seconds"], 1),
            fmt(r["per_s"]),
            fmt(r["x_raw_read"], 3),
            fmt(r.get("load_1m"), 2),
        )
        for r in [*result["reads"], *result["rebuilds"]]
    ]
    header = ("read / rebuild", "events", "seconds", "events/s", "x raw read", "load 1m")
    print(render_rows(header, lines))
    decoded = result["reads"][1]
    print(
        f"  decoded read split: select_notifications {decoded['select_notifications_s']:.1f} s "
        f"({fmt(decoded['select_only_per_s'])} events/s alone), to_domain_event "
        f"{decoded['to_domain_event_s']:.1f} s. One read model's rebuild applies "
        f"{result['projection_batch_size']} events per transaction; 'all' writes pages of "
        f"{REBUILD_PAGE_EVENTS} set-based, and its rate is log events per second brought up to "
        "date in every read model. load 1m: the machine's "
        "1 minute load average when the measurement ended (nproc "
        f"{os.cpu_count()}); other work inflates the seconds."
    )


def report_latency(latency: list[dict[str, Any]]) -> None:
    lines: list[Sequence[str]] = [
        (
            r["label"],
            f"{r['calls']:,}",
            fmt(r["p50_ms"], 3),
            fmt(r["p99_ms"], 3),
            fmt(r["mean_ms"], 3),
            fmt(r.get("x_raw_p50"), 1),
            fmt(r.get("x_raw_p99"), 1),
        )
        for r in latency
    ]
    header = (
        "query (random accounts)",
        "calls",
        "p50 ms",
        "p99 ms",
        "mean ms",
        "x raw p50",
        "x raw p99",
    )
    print(render_rows(header, lines))


def report_validation(v: dict[str, Any]) -> None:
    print(
        f"rm_balances vs Balance aggregates: {v['accounts_compared']} accounts, "
        f"{v['balance_mismatch_count']} mismatches ({v['aggregates_seconds']:.1f} s)"
    )
    for problem in v["balance_mismatches"] + v["other_mismatches"]:
        print(f"  {problem}")
    if v["verify_ran"]:
        print(
            f"sluice audit verify (adapters.verify.verify): {v['verify_differences']} "
            f"differences ({v['verify_seconds']:.1f} s)"
        )
        for sample in v["verify_samples"]:
            print(f"  {sample}")
    else:
        print(
            "sluice audit verify: skipped at this size (--verify always runs it; it rebuilds "
            "all four again in a scratch schema)"
        )
    print(f"projections equal the ledger: {'yes' if v['ok'] else 'NO'}")


def report_profile(p: dict[str, Any]) -> None:
    print(
        f"profile: rebuild {p['projection']}, {p['events']:,} events, "
        f"{p['wall_seconds']:.1f} s under cProfile ({p['execute_calls']:,} _Tx.execute calls)"
    )
    for layer, seconds in p["layers_seconds"].items():
        share = seconds / p["profiled_seconds"] if p["profiled_seconds"] else math.nan
        print(f"  {layer:<66} {seconds:7.2f} s  {share:6.1%}")
    print(p["top_tottime"].rstrip())
