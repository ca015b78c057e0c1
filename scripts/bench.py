"""Sluice benchmarks: routed payments per second, and the read side at a realistic log size.

A routed payment is one ``RecordPayment``: a destination charge with an application fee, fully
booked (payment, fee, implicit transfer, both balances, idempotency record). It is measured at
each client thread count, unbatched (``Ledger.execute``) and in batches (``execute_batch``), next
to a baseline measured in the same run: one-row INSERT transactions per second through psycopg,
one connection per client thread. Ratios to that baseline are the transferable figures; absolute
numbers say as much about the machine as about Sluice.

Every measurement runs in a fresh PostgreSQL schema (dropped at the end), with one Ledger shared
by its client threads as one process would. After each ledger run the journal is checked: it
must balance, and every book must hold exactly what the accepted payments put there.

The projections suite writes one history of routed payments (destination charges with fees,
separate charges split between sellers, refunds, daily releases, weekly payouts) until the log
holds ``--events`` events, then measures in the same schema: the raw read rate of the events
table (psycopg) and through the library (decoded), the rebuild rate of each projection beside
it, and the latency of balance queries beside a raw primary-key SELECT. The read models must
then equal the Balance aggregates, account by account.

    scripts/bench --quick                # both suites, smoke-sized
    scripts/bench --suite payments --seconds 30 --threads 1,4,16
    scripts/bench --suite projections --events 1000000
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import json
import math
import os
import platform
import pstats
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import psycopg
from psycopg import sql

from adapters.bootstrap import bootstrap, read_model
from adapters.persistence import describe
from adapters.settings import Settings
from adapters.verify import verify
from ledger import commands as c
from ledger.application import Ledger
from ledger.ids import WORLD
from ledger.journal import CUSTOMER_FUNDS, PENDING, STRIPE_FEES
from ledger.splits import SplitPart
from projections import queries
from projections.projections import PROJECTIONS
from projections.runner import PROJECTION_BATCH_SIZE, Projector

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
PLATFORM = "acct_platform"
CURRENCY = "usd"
CALLS_PER_THREAD_MAX = 5_000_000  # the loop ends at the deadline; this only bounds it
WARMUP_CALLS = 3  # per ledger measurement, single-threaded, before the clock starts
ERROR_SAMPLES_MAX = 5


# Set-up ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="payments: routed payments per second (destination charge with an "
        "application fee) at several client thread counts, unbatched and batched, beside a raw "
        "psycopg one-row INSERT baseline measured in the same run. projections: on a history of "
        "--events events, the rebuild rate of every read model beside the raw read rate of the "
        "events table, and balance query latency beside a raw primary-key SELECT.",
    )
    parser.add_argument(
        "--suite",
        choices=("payments", "projections", "all"),
        default="all",
        help="which benchmark to run (default all)",
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="duration of each measurement (default 10)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: 2 s per payments measurement, a {HISTORY_EVENTS_QUICK:,}-event history",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("SLUICE_BENCH_DATABASE_URL", DEFAULT_URL),
        help="PostgreSQL server and database; schemas are created and dropped in it "
        "(default $SLUICE_BENCH_DATABASE_URL or %(default)s)",
    )
    parser.add_argument(
        "--threads", default="1,16", help="comma-separated client thread counts (default 1,16)"
    )
    parser.add_argument("--batch-size", type=int, default=100, help="commands per batch (100)")
    parser.add_argument("--sellers", type=int, default=50, help="connected sellers (50)")
    parser.add_argument(
        "--available-on",
        choices=("day", "derived"),
        default="day",
        help="day: each payment's available_on is a UTC midnight two days out, as Stripe "
        "reports it (default); derived: leave it to the ledger (effective_at + delay_days, a "
        "distinct instant, hence a new pending lot, per payment)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed for amounts/sellers")
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
    parser.add_argument(
        "--out", default=str(ROOT / "var" / "bench"), help="directory of the JSON results"
    )
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 2.0 if args.quick else 10.0
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    try:
        args.thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        parser.error(f"--threads takes integers like 1,16, not {args.threads!r}")
    if not args.thread_counts or min(args.thread_counts) < 1:
        parser.error("--threads needs at least one count >= 1")
    if not 1 <= args.batch_size <= 1_000:
        parser.error("--batch-size is 1 to 1000")
    if args.sellers < 1:
        parser.error("--sellers must be at least 1")
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
    parsed = urlparse(args.database_url)
    if parsed.scheme not in ("postgres", "postgresql"):
        parser.error("--database-url must be a postgresql:// URL")
    # Our own schemas are created per measurement; drop any ?schema= the URL carries.
    args.conninfo = urlunparse(parsed._replace(query="", fragment=""))
    return args


def machine_facts(conninfo: str) -> dict[str, Any]:
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:

        def show(name: str) -> str:
            row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            return str(row[0]) if row else "?"

        facts = {
            "nproc": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else None,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "eventsourcing": metadata.version("eventsourcing"),
            "psycopg": metadata.version("psycopg"),
            "postgres_version": show("server_version"),
            "synchronous_commit": show("synchronous_commit"),
            "fsync": show("fsync"),
            "wal_sync_method": show("wal_sync_method"),
            "shared_buffers": show("shared_buffers"),
            "postgres_host": urlparse(conninfo).hostname,
            "loadavg_at_start": load_average(),
            **code_version(),
        }
    return facts


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: other work on the machine skews every figure."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def load_1m() -> float | None:
    """The 1 minute load average now, recorded beside each projections measurement."""
    load = load_average()
    return load[0] if load else None


def code_version() -> dict[str, Any]:
    """The commit measured, and whether the code under test differed from it."""

    def git(*cmd: str) -> str:
        try:
            done = subprocess.run(
                ["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "ledger", "adapters", "pyproject.toml")
    return {"commit": git("rev-parse", "--short", "HEAD") or None, "code_dirty": bool(dirty)}


class Schemas:
    """Creates uniquely named schemas and drops every one of them at the end."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        self.prefix = f"sluice_bench_{stamp}_{os.getpid()}"
        self.created: list[str] = []

    def name(self, label: str) -> str:
        name = f"{self.prefix}_{label}"
        self.created.append(name)
        return name

    def drop_all(self) -> None:
        if not self.created:
            return
        with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10) as conn:
            for name in self.created:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
                )
        self.created.clear()


# Timed runs ------------------------------------------------------------------------------------


@dataclass
class Calls:
    """One client thread's calls: (end, latency, ok) in perf_counter seconds."""

    samples: list[tuple[float, float, int]] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, text: str, count: int = 1) -> None:
        self.errors += count
        if len(self.error_samples) < ERROR_SAMPLES_MAX:
            self.error_samples.append(text)


@dataclass
class Timed:
    seconds: float
    calls: list[Calls]
    start: float
    deadline: float

    def window(self) -> list[tuple[float, float, int]]:
        """Calls that completed inside the measured window."""
        return [s for calls in self.calls for s in calls.samples if s[0] <= self.deadline]

    def ok_total(self) -> int:
        """Everything accepted, the calls still running at the deadline included."""
        return sum(s[2] for calls in self.calls for s in calls.samples)


def run_timed(
    threads: int, seconds: float, body: Callable[[int, Callable[[], float], Calls], None]
) -> Timed:
    """Runs ``body(index, start, calls)`` in ``threads`` clients. A body prepares (connects),
    then calls ``start()``, which waits for every client and returns the shared deadline; it
    starts no call after that. A failure outside a call is re-raised here."""
    box: dict[str, float] = {}

    def release() -> None:  # run once, by the last client to arrive, before any is released
        box["start"] = time.perf_counter()
        box["deadline"] = box["start"] + seconds

    barrier = threading.Barrier(threads, action=release)
    calls = [Calls() for _ in range(threads)]
    failures: list[BaseException] = []

    def start() -> float:
        barrier.wait(timeout=120)
        return box["deadline"]

    def client(index: int) -> None:
        try:
            body(index, start, calls[index])
        except threading.BrokenBarrierError as exc:
            failures.append(exc)
        except BaseException as exc:  # re-raised by the main thread
            failures.insert(0, exc)
            barrier.abort()

    workers = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if failures:
        raise failures[0]
    return Timed(seconds, calls, box["start"], box["deadline"])


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summarise(timed: Timed) -> dict[str, Any]:
    window = timed.window()
    latencies = [s[1] for s in window]
    return {
        "seconds": timed.seconds,
        "calls": len(window),
        "ok": sum(s[2] for s in window),
        "calls_per_s": len(window) / timed.seconds,
        "per_s": sum(s[2] for s in window) / timed.seconds,
        "p50_ms": percentile(latencies, 0.50) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "errors": sum(calls.errors for calls in timed.calls),
        "error_samples": [e for calls in timed.calls for e in calls.error_samples][
            :ERROR_SAMPLES_MAX
        ],
    }


# Baseline: raw psycopg -------------------------------------------------------------------------


def measure_baseline(conninfo: str, schema: str, threads: int, seconds: float) -> dict[str, Any]:
    table = sql.Identifier(schema, "bench_baseline")
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, v int NOT NULL)").format(table)
        )
    insert = sql.SQL("INSERT INTO {} (v) VALUES (%s)").format(table)

    def body(index: int, start: Callable[[], float], calls: Calls) -> None:
        # One connection per client; each INSERT is its own transaction (BEGIN, INSERT, COMMIT).
        with psycopg.connect(conninfo, connect_timeout=10) as conn:
            deadline = start()
            for i in range(CALLS_PER_THREAD_MAX):
                began = time.perf_counter()
                if began >= deadline:
                    break
                conn.execute(insert, (i,), prepare=True)
                conn.commit()
                ended = time.perf_counter()
                calls.samples.append((ended, ended - began, 1))

    timed = run_timed(threads, seconds, body)
    result = summarise(timed)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    rows = int(row[0]) if row else 0
    if rows != timed.ok_total():
        raise SystemExit(f"baseline: {rows} rows for {timed.ok_total()} commits")
    result["events_per_s"] = None
    return result


# Ledger -----------------------------------------------------------------------------------------


@dataclass
class Expected:
    """What the accepted payments must have put in the books."""

    payments: int = 0
    amount: int = 0
    stripe_fee: int = 0
    application_fee: int = 0
    seller_pending: dict[str, int] = field(default_factory=dict)

    def add(self, cmd: c.RecordPayment) -> None:
        self.payments += 1
        self.amount += cmd.amount_minor
        self.stripe_fee += cmd.stripe_fee_minor
        self.application_fee += cmd.application_fee_minor
        seller = str(cmd.account_id)
        net = cmd.amount_minor - cmd.application_fee_minor
        self.seller_pending[seller] = self.seller_pending.get(seller, 0) + net

    def merge(self, other: Expected) -> None:
        self.payments += other.payments
        self.amount += other.amount
        self.stripe_fee += other.stripe_fee
        self.application_fee += other.application_fee
        for seller, net in other.seller_pending.items():
            self.seller_pending[seller] = self.seller_pending.get(seller, 0) + net

    def books(self) -> dict[tuple[str, str, str], int]:
        """Non-zero totals per (owner, book, currency)."""
        books = {
            (WORLD, CUSTOMER_FUNDS, CURRENCY): -self.amount,
            (WORLD, STRIPE_FEES, CURRENCY): self.stripe_fee,
            (PLATFORM, PENDING, CURRENCY): self.application_fee - self.stripe_fee,
        }
        books |= {(s, PENDING, CURRENCY): net for s, net in self.seller_pending.items()}
        return {k: v for k, v in books.items() if v}


class PaymentMaker:
    """Random routed payments: $5 to $500, Stripe's 2.9% + 30c, a 10% application fee."""

    def __init__(self, seed: int, sellers: Sequence[str], available_on: str) -> None:
        self.rng = random.Random(seed)
        self.sellers = list(sellers)
        self.available_on = available_on

    def __call__(self, seller: str | None = None) -> c.RecordPayment:
        amount = self.rng.randint(500, 50_000)
        now = datetime.now(UTC)
        available_on = None
        if self.available_on == "day":
            midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
            available_on = midnight + timedelta(days=2)
        return c.RecordPayment(
            idempotency_key=str(uuid.uuid4()),
            effective_at=now,
            charge_type="destination",
            currency=CURRENCY,
            amount_minor=amount,
            stripe_fee_minor=30 + (amount * 29 + 500) // 1000,
            application_fee_minor=amount // 10,
            account_id=seller or self.rng.choice(self.sellers),
            available_on=available_on,
        )


def open_ledger(
    conninfo: str,
    schema: str,
    sellers: Sequence[str],
    clock: Callable[[], datetime] | None = None,
) -> Ledger:
    """A Ledger in ``schema`` with the platform and ``sellers`` open, at ``clock``'s time."""
    now_of = clock or (lambda: datetime.now(UTC))
    app = bootstrap(
        Settings(database_url=f"{conninfo}?schema={schema}"), clock=clock, create_tables=True
    )
    setup: list[c.Command] = [
        c.OpenAccount(
            idempotency_key="setup-platform",
            effective_at=now_of(),
            account_id=PLATFORM,
            kind="platform",
        )
    ]
    for seller in sellers:
        now = now_of()
        setup.append(
            c.OpenAccount(idempotency_key=f"open-{seller}", effective_at=now, account_id=seller)
        )
        setup.append(
            c.UpdateAccount(
                idempotency_key=f"enable-{seller}",
                effective_at=now,
                account_id=seller,
                charges_enabled=True,
                payouts_enabled=True,
            )
        )
    for start in range(0, len(setup), 500):
        for result in app.execute_batch(setup[start : start + 500]):
            if not result.ok:
                raise SystemExit(f"set-up failed: {result.command}: {result.error}")
    return app


def count_rows(conninfo: str, schema: str, where: str = "") -> int:
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "ledger_events"))
    if where:
        query = sql.SQL("{} WHERE topic LIKE {}").format(query, sql.Literal(where))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def measure_ledger(
    args: argparse.Namespace, schema: str, batched: bool, threads: int, seed: int
) -> dict[str, Any]:
    sellers = [f"acct_seller_{n:04d}" for n in range(args.sellers)]
    app = open_ledger(args.conninfo, schema, sellers)
    try:
        per_call = args.batch_size if batched else 1
        expected = Expected()
        warm = PaymentMaker(seed, sellers, args.available_on)
        # Warm-up, off the clock: one payment per seller opens every Balance (each opening is
        # one extra event) and fills the aggregate cache; then a few calls of the measured kind.
        warmup = [
            [warm(seller) for seller in sellers[n : n + 100]] for n in range(0, len(sellers), 100)
        ]
        warmup += [[warm() for _ in range(per_call)] for _ in range(WARMUP_CALLS)]
        for cmds in warmup:
            results = app.execute_batch(cmds) if len(cmds) > 1 else [app.execute(cmds[0])]
            for cmd, result in zip(cmds, results, strict=True):
                if not result.ok:
                    raise SystemExit(f"warm-up payment rejected: {result.error}")
                expected.add(cmd)
        rows_before = count_rows(args.conninfo, schema)
        tallies = [Expected() for _ in range(threads)]

        def body(index: int, start: Callable[[], float], calls: Calls) -> None:
            make = PaymentMaker(seed * 1000 + index + 1, sellers, args.available_on)
            tally = tallies[index]
            deadline = start()
            for _ in range(CALLS_PER_THREAD_MAX):
                if time.perf_counter() >= deadline:
                    break
                cmds = [make() for _ in range(per_call)]
                began = time.perf_counter()
                try:
                    results = app.execute_batch(cmds) if batched else [app.execute(cmds[0])]
                except Exception as exc:  # counted, shown, and the run goes on
                    calls.error(f"{type(exc).__name__}: {exc}")
                    continue
                ended = time.perf_counter()
                ok = 0
                for cmd, result in zip(cmds, results, strict=True):
                    if result.ok and not result.replayed:
                        tally.add(cmd)
                        ok += 1
                    else:
                        calls.error(f"{result.command}: {result.error or 'replayed'}")
                calls.samples.append((ended, ended - began, ok))

        timed = run_timed(threads, args.seconds, body)
        result = summarise(timed)
        rows_after = count_rows(args.conninfo, schema)
        timed_ok = timed.ok_total()
        events_per_payment = (rows_after - rows_before) / timed_ok if timed_ok else math.nan
        result["events_per_payment"] = events_per_payment
        result["events_per_s"] = result["per_s"] * events_per_payment
        for tally in tallies:
            expected.merge(tally)
        result["validation"] = validate(app, args.conninfo, schema, expected)
        return result
    finally:
        app.close()


def validate(app: Ledger, conninfo: str, schema: str, expected: Expected) -> dict[str, Any]:
    """The journal balances, every book holds what the payments put there, and the Balance
    aggregates agree with the journal."""
    began = time.perf_counter()
    per_currency, per_book = app.journal_totals()
    balanced = all(total == 0 for total in per_currency.values())
    books = {k: v for k, v in per_book.items() if v}
    want = expected.books()
    book_mismatches = sorted(
        f"{k}: journal {books.get(k, 0)}, expected {want.get(k, 0)}"
        for k in set(books) | set(want)
        if books.get(k, 0) != want.get(k, 0)
    )
    balance_mismatches = []
    for owner in [PLATFORM, *expected.seller_pending]:
        balance = app.get_balance(owner, CURRENCY)
        pending = balance.pending_minor if balance else 0
        if pending != books.get((owner, PENDING, CURRENCY), 0):
            balance_mismatches.append(f"{owner}: Balance {pending}, journal differs")
    recorded = count_rows(conninfo, schema, "%Payment.Captured")
    return {
        "balanced": balanced,
        "journal_totals": per_currency,
        "payments_accepted": expected.payments,
        "payments_recorded": recorded,
        "book_mismatches": book_mismatches[:10],
        "balance_mismatches": balance_mismatches[:10],
        "ok": balanced
        and not book_mismatches
        and not balance_mismatches
        and recorded == expected.payments,
        "seconds": time.perf_counter() - began,
    }


# Projections suite ------------------------------------------------------------------------------
#
# One history of routed payments is written with execute_batch, then the events table is read
# raw (psycopg) and through the library, every projection is rebuilt from it, the finance queries
# are timed on the result, and the read models are checked against the Balance aggregates.

HISTORY_START = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday, UTC midnight: day 0 of the history
HISTORY_SELLERS = 200
HISTORY_BATCH = 500  # commands per execute_batch while writing the history
HISTORY_EVENTS = 1_000_000
HISTORY_EVENTS_QUICK = 50_000
DESTINATION_SHARE = 0.88  # of payments; the rest are separate charges split over 2-3 sellers
APPLICATION_FEE_BPS = 1_000  # the platform's fee on destination charges (10%)
SPLIT_SELLERS_BPS = 9_000  # separate charges: the sellers share 90%, the platform keeps the rest
REFUND_SHARE = 0.03  # of payments, refunded 1-10 days later; some of them partially
PARTIAL_REFUND_SHARE = 0.3
PAYOUT_EVERY_DAYS = 7  # each seller is paid out weekly, on its own weekday
SETTLEMENT_DAYS = 2  # available_on: UTC midnight two days after the charge, as Stripe reports it
RAW_READ_PAGE = 1_000
VERIFY_AUTO_EVENTS_MAX = 200_000  # `--verify auto` runs adapters.verify.verify up to this size
QUERY_WARMUP_CALLS = 50
PROFILE_TOP = 15


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
    ledger: Ledger, view: Any, raw_per_s: float, shared_read: bool
) -> list[dict[str, Any]]:
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

    for name in PROJECTIONS:
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
    counts = [projector.rebuild(name) for name in projector.projections]
    record(
        "rebuild all 4 (one after another)",
        max(counts),
        time.perf_counter() - began,
        events_applied=sum(counts),
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
    sql_exec = cumulative("projections/store.py", "execute")
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
            if path.endswith("projections/store.py") and fn == "execute"
        ),
        "top_tottime": buffer.getvalue(),
    }


def render_rows(header: Sequence[str], lines: list[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = []
    for n, line in enumerate([header, *lines]):
        cells = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(line)
        ]
        out.append("  ".join(cells))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


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
        rebuilds = measure_rebuilds(ledger, view, raw["per_s"], args.shared_read)
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
    print()
    lines = [
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
        f"{decoded['to_domain_event_s']:.1f} s. Rebuilds apply pages of "
        f"{result['projection_batch_size']} events per transaction; 'all 4' rates are log "
        "events per second brought up to date in all four read models. load 1m: the machine's "
        "1 minute load average when the measurement ended (nproc "
        f"{os.cpu_count()}); other work inflates the seconds."
    )
    print()
    lines = [
        (
            r["label"],
            f"{r['calls']:,}",
            fmt(r["p50_ms"], 3),
            fmt(r["p99_ms"], 3),
            fmt(r["mean_ms"], 3),
            fmt(r.get("x_raw_p50"), 1),
            fmt(r.get("x_raw_p99"), 1),
        )
        for r in result["latency"]
    ]
    print(
        render_rows(
            (
                "query (random accounts)",
                "calls",
                "p50 ms",
                "p99 ms",
                "mean ms",
                "x raw p50",
                "x raw p99",
            ),
            lines,
        )
    )
    v = result["validation"]
    print()
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
    for p in result["profiles"]:
        print()
        print(
            f"profile: rebuild {p['projection']}, {p['events']:,} events, "
            f"{p['wall_seconds']:.1f} s under cProfile ({p['execute_calls']:,} _Tx.execute calls)"
        )
        for layer, seconds in p["layers_seconds"].items():
            share = seconds / p["profiled_seconds"] if p["profiled_seconds"] else math.nan
            print(f"  {layer:<66} {seconds:7.2f} s  {share:6.1%}")
        print(p["top_tottime"].rstrip())


# Report -----------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def render_table(rows: list[dict[str, Any]]) -> str:
    header = (
        "mode",
        "threads",
        "payments/s",
        "events/s",
        "ev/pay",
        "x baseline",
        "p50 ms",
        "p99 ms",
        "calls",
        "errors",
    )
    lines = []
    for r in rows:
        lines.append(
            (
                r["mode"],
                str(r["threads"]),
                fmt(r["per_s"]),
                fmt(r.get("events_per_s")),
                fmt(r.get("events_per_payment"), 2),
                fmt(r["ratio"], 4),
                fmt(r["p50_ms"], 2),
                fmt(r["p99_ms"], 2),
                f"{r['calls']:,}",
                str(r["errors"]),
            )
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = []
    for n, line in enumerate([header, *lines]):
        cells = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(line)
        ]
        out.append("  ".join(cells))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def jsonable(value: Any) -> Any:
    """Plain JSON: NaN becomes null, tuple keys become strings, the rest str()."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def run_payments(args: argparse.Namespace, schemas: Schemas) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    modes = ["baseline", "unbatched", f"batch{args.batch_size}"]
    total = len(modes) * len(args.thread_counts)
    for threads in args.thread_counts:
        baseline_rate = math.nan
        for mode in modes:
            step = len(rows) + 1
            print(f"[{step}/{total}] {mode:<10} threads={threads:<3} ", end="", flush=True)
            schema = schemas.name(f"{mode}_t{threads}")
            if mode == "baseline":
                result = measure_baseline(args.conninfo, schema, threads, args.seconds)
                baseline_rate = result["per_s"]
            else:
                result = measure_ledger(
                    args, schema, mode != "unbatched", threads, args.seed + step
                )
            result |= {
                "mode": mode,
                "threads": threads,
                "ratio": result["per_s"] / baseline_rate if baseline_rate else math.nan,
            }
            rows.append(result)
            unit = "tx/s" if mode == "baseline" else "payments/s"
            line = f"{result['per_s']:,.0f} {unit}"
            check = result.get("validation")
            if check:
                line += (
                    f"; checked {check['payments_recorded']:,} payments "
                    f"in {check['seconds']:.1f} s: {'ok' if check['ok'] else 'FAILED'}"
                )
            print(line, flush=True)
    return rows


def report_payments(args: argparse.Namespace, rows: list[dict[str, Any]]) -> tuple[bool, bool]:
    """Prints the payments table and its checks; returns (balanced, books as expected)."""
    print()
    print(render_table(rows))
    print()
    print(
        "baseline rows: one-row INSERT transactions/s in the payments/s column, one psycopg "
        "connection per thread. x baseline = payments/s / baseline tx/s at the same thread "
        f"count. Latency is per call (one command, or a batch of {args.batch_size})."
    )
    ledger_rows = [r for r in rows if "validation" in r]
    all_ok = all(r["validation"]["ok"] for r in ledger_rows)
    balanced = all(r["validation"]["balanced"] for r in ledger_rows)
    accepted = sum(r["validation"]["payments_accepted"] for r in ledger_rows)
    recorded = sum(r["validation"]["payments_recorded"] for r in ledger_rows)
    print(f"ledger balanced: {'yes' if balanced else 'NO'}")
    print(
        f"payments recorded: {recorded:,} (accepted {accepted:,}); books as expected: "
        f"{'yes' if all_ok else 'NO'}"
    )
    for r in ledger_rows:
        v = r["validation"]
        for problem in v["book_mismatches"] + v["balance_mismatches"]:
            print(f"  {r['mode']} t={r['threads']}: {problem}")
        for sample in r["error_samples"]:
            print(f"  {r['mode']} t={r['threads']} error: {sample}")
    return balanced, all_ok


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    try:
        facts = machine_facts(args.conninfo)
    except psycopg.OperationalError as exc:
        print(
            f"error: cannot reach PostgreSQL at {describe(args.conninfo)}: {exc}", file=sys.stderr
        )
        return 2
    payments = args.suite in ("payments", "all")
    projections = args.suite in ("projections", "all")

    print(f"Sluice bench  {started:%Y-%m-%d %H:%M:%S} UTC")
    print(
        f"machine: nproc={facts['nproc']}, PostgreSQL {facts['postgres_version']} on "
        f"{facts['postgres_host']}, synchronous_commit={facts['synchronous_commit']}, "
        f"fsync={facts['fsync']}, wal_sync_method={facts['wal_sync_method']}"
    )
    dirty = " (uncommitted changes)" if facts["code_dirty"] else ""
    print(
        f"software: Sluice {facts['commit']}{dirty}, Python {facts['python']}, "
        f"eventsourcing {facts['eventsourcing']}, "
        f"psycopg {facts['psycopg']}, {facts['platform']}"
    )
    start_load = " ".join(f"{x:.2f}" for x in facts["loadavg_at_start"] or []) or "?"
    print(f"load average (1/5/15 min) at start: {start_load}")
    if payments:
        print(
            f"run: {args.seconds:g} s per measurement, threads {args.threads}, batch "
            f"{args.batch_size}, {args.sellers} sellers, available_on={args.available_on}"
        )
    if projections:
        print(
            f"projections: history of {history_events(args):,} events, "
            f"{args.history_sellers} sellers, batches of {args.history_batch}, projector batch "
            f"{PROJECTION_BATCH_SIZE}, {args.latency_samples:,} latency samples, "
            f"verify={args.verify}"
        )
    print(
        "note: the ratios to the baseline (same machine, same run, same client threads) are the "
        "transferable figures; the absolute numbers mostly describe this machine."
    )
    print()

    schemas = Schemas(args.conninfo)
    rows: list[dict[str, Any]] = []
    projected: dict[str, Any] | None = None
    try:
        if payments:
            if projections:
                print("== payments ==")
            rows = run_payments(args, schemas)
        if projections:
            if payments:
                print()
                print("== projections ==")
            projected = run_projections(args, schemas)
    finally:
        schemas.drop_all()

    balanced = all_ok = True
    if payments:
        balanced, all_ok = report_payments(args, rows)
    if projected is not None:
        report_projections(projected)
        all_ok = all_ok and projected["validation"]["ok"]
    facts["loadavg_at_end"] = load_average()
    start_load, end_load = (
        " ".join(f"{x:.2f}" for x in load) if load else "?"
        for load in (facts["loadavg_at_start"], facts["loadavg_at_end"])
    )
    print()
    print(
        f"load average (1/5/15 min): {start_load} at start, {end_load} at end, "
        f"nproc={facts['nproc']} (load from other work skews every figure)"
    )

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{started:%Y%m%dT%H%M%SZ}.json"
    document = {
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "suite": args.suite,
        "facts": facts,
        "settings": {
            "seconds": args.seconds,
            "threads": args.thread_counts,
            "batch_size": args.batch_size,
            "sellers": args.sellers,
            "available_on": args.available_on,
            "seed": args.seed,
            "events": history_events(args) if projections else None,
            "history_sellers": args.history_sellers,
            "history_batch": args.history_batch,
            "latency_samples": args.latency_samples,
            "verify": args.verify,
            "shared_read": args.shared_read,
            "profile": args.profile_names,
            "ledger": Settings(database_url=args.conninfo).model_dump(exclude={"database_url"}),
        },
        "results": rows,
        "projections": projected,
        "ledger_balanced": balanced,
        "validation_ok": all_ok,
    }
    path.write_text(json.dumps(jsonable(document), indent=2, allow_nan=False) + "\n")
    print(f"results: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
