"""The payments suite: routed payments per second beside a raw psycopg baseline.

A routed payment is one ``RecordPayment``: a destination charge with an application fee, fully
booked (payment, fee, implicit transfer, both balances, idempotency record). It is measured at
each client thread count, unbatched (``Ledger.execute``) and in batches (``execute_batch``), next
to a baseline measured in the same run: one-row INSERT transactions per second through psycopg,
one connection per client thread. Ratios to that baseline are the transferable figures; absolute
numbers say as much about the machine as about Sluice.

Every measurement runs in a fresh PostgreSQL schema, with one Ledger shared by its client threads
as one process would. After each ledger run the journal is checked: it must balance, and every
book must hold exactly what the accepted payments put there.
"""

from __future__ import annotations

import argparse
import math
import random
import threading
import time
import uuid
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
    open_ledger,
    percentile,
    render_rows,
)
from psycopg import sql

from ledger import commands as c
from ledger.application import Ledger
from ledger.ids import WORLD
from ledger.journal import CUSTOMER_FUNDS, PENDING, STRIPE_FEES

CALLS_PER_THREAD_MAX = 5_000_000  # the loop ends at the deadline; this only bounds it
WARMUP_CALLS = 3  # per ledger measurement, single-threaded, before the clock starts


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The payments suite's options (declared in bench.py, where --help has always listed them):
    a bad value ends the run through ``parser.error``."""
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


def describe_run(args: argparse.Namespace) -> str:
    return (
        f"run: {args.seconds:g} s per measurement, threads {args.threads}, batch "
        f"{args.batch_size}, {args.sellers} sellers, available_on={args.available_on}"
    )


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
    lines: list[Sequence[str]] = [
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
        for r in rows
    ]
    return render_rows(header, lines)


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
