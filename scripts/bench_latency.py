"""The latency suite: command latency on a seller with a long history beside ten-event sellers.

In a fresh schema one seller ("long") is given a history of --long-history events on the
aggregates a command on it loads, its account and its balance (routed payments, in batches), and
a pool of other sellers ("short") about ten events each. Then single routed payments (one
``RecordPayment`` through ``Ledger.execute``, the payments suite's unbatched command) go
alternately to the long seller and to a short one, twice over:

- cached: on the Ledger that wrote the history, its aggregate cache warm as in a running process;
- uncached: on a second Ledger with no aggregate cache, so every command loads the seller's
  account and balance from the store (the latest snapshot and the events after it), as the first
  command after a restart or a cache eviction does.

Every payment also books to the platform's account and balance, whose history is as long for
both sellers; what differs is the seller's own history. Each short seller takes a few of the
timed payments only, so it stays near ten events. The figures are the ratios long/short of p50
and of p99 (target: both at most 1.5).
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import psycopg
from bench_common import CURRENCY, Schemas, open_ledger, percentile
from bench_payments import PaymentMaker
from psycopg import sql

from adapters.bootstrap import bootstrap
from adapters.settings import Settings
from ledger.application import Ledger
from ledger.balances import Balance
from ledger.ids import account_aggregate_id, balance_aggregate_id

LONG_HISTORY = 100_000  # events on the long seller's account and balance (issue 13: 100k)
LONG_HISTORY_QUICK = 10_000  # --quick: the whole run stays under 2 minutes
# Timed payments per seller kind and cache state: whole snapshot intervals of a Balance (200), so
# the long seller's uncached loads replay each count of events after its snapshot (0 to 199)
# equally often, wherever the history ended.
SAMPLES = 600
SAMPLES_QUICK = 200
SHORT_HISTORY = 10  # events on each short seller before it is timed (issue 13: 10)
SHORT_TIMED_MAX = 5  # timed payments per short seller and cache state: it stays near ten events
HISTORY_BATCH = 500  # payments per execute_batch while writing the history
HISTORY_ROUNDS_MAX = 5  # top-ups to reach the history size; one is expected (an event a payment)
WARMUP_CALLS = 3  # per Ledger and seller kind, off the clock: pools and code paths warm
LONG = "acct_long_history"
PHASES = ("cached", "uncached")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    latency = parser.add_argument_group("latency suite")
    latency.add_argument(
        "--long-history",
        type=int,
        default=None,
        help=f"events on the long-history seller (default {LONG_HISTORY:,}; "
        f"{LONG_HISTORY_QUICK:,} with --quick)",
    )
    latency.add_argument(
        "--command-samples",
        type=int,
        default=None,
        help=f"payments timed per seller kind and cache state (default {SAMPLES}; "
        f"{SAMPLES_QUICK} with --quick)",
    )


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A bad value ends the run through ``parser.error``."""
    if args.long_history is None:
        args.long_history = LONG_HISTORY_QUICK if args.quick else LONG_HISTORY
    if args.command_samples is None:
        args.command_samples = SAMPLES_QUICK if args.quick else SAMPLES
    if args.long_history < 10 * SHORT_HISTORY:
        parser.error(f"--long-history must be at least {10 * SHORT_HISTORY}")
    if args.command_samples < 10:
        parser.error("--command-samples must be at least 10")


def describe_run(args: argparse.Namespace) -> str:
    return (
        f"latency: a seller with {args.long_history:,} events vs sellers with "
        f"{SHORT_HISTORY}, {args.command_samples} payments timed per seller kind, cached and "
        "uncached"
    )


def seller_events(conninfo: str, schema: str, sellers: list[str]) -> dict[str, int]:
    """Events on each seller's account and balance: what a command on the seller loads."""
    ids = {account_aggregate_id(s): s for s in sellers}
    ids |= {balance_aggregate_id(s, CURRENCY): s for s in sellers}
    query = sql.SQL(
        "SELECT originator_id, count(*) FROM {} WHERE originator_id = ANY(%s) "
        "GROUP BY originator_id"
    ).format(sql.Identifier(schema, "ledger_events"))
    counts = dict.fromkeys(sellers, 0)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for originator_id, n in conn.execute(query, (list(ids),)):
            counts[ids[originator_id]] += int(n)
    return counts


def latest_snapshot(conninfo: str, schema: str, seller: str) -> int | None:
    """The version of the seller balance's latest snapshot (None: none taken)."""
    query = sql.SQL("SELECT max(originator_version) FROM {} WHERE originator_id = %s").format(
        sql.Identifier(schema, "ledger_snapshots")
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(query, (balance_aggregate_id(seller, CURRENCY),)).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def write_payments(app: Ledger, make: PaymentMaker, sellers: list[str], per_seller: int) -> None:
    """``per_seller`` routed payments to each seller, in batches, every one accepted."""
    cmds = [make(seller) for _ in range(per_seller) for seller in sellers]
    for start in range(0, len(cmds), HISTORY_BATCH):
        for result in app.execute_batch(cmds[start : start + HISTORY_BATCH]):
            if not result.ok:
                raise SystemExit(f"history payment rejected: {result.error}")


def write_history(
    args: argparse.Namespace, app: Ledger, schema: str, short: list[str]
) -> dict[str, Any]:
    """The long seller's history, then the short sellers' (last, so they are as freshly cached
    as the long seller, which every history batch touches)."""
    make = PaymentMaker(args.seed, [LONG], args.available_on)
    began = time.perf_counter()
    for _ in range(HISTORY_ROUNDS_MAX):
        missing = args.long_history - seller_events(args.conninfo, schema, [LONG])[LONG]
        if missing <= 0:
            break
        write_payments(app, make, [LONG], missing)
    write_payments(app, make, short, 1)
    now = seller_events(args.conninfo, schema, short[:1])[short[0]]
    write_payments(app, make, short, max(0, SHORT_HISTORY - now))
    counts = seller_events(args.conninfo, schema, [LONG, *short])
    return {
        "long_events": counts[LONG],
        "short_events": min(counts[s] for s in short),
        "short_sellers": len(short),
        "seconds": time.perf_counter() - began,
        "long_balance_snapshot": latest_snapshot(args.conninfo, schema, LONG),
    }


def time_payments(
    app: Ledger, make: PaymentMaker, short: list[str], samples: int
) -> dict[str, Any]:
    """``samples`` single payments to the long seller and as many to short ones, alternately
    (which goes first alternates too), after a few untimed ones."""
    for _ in range(WARMUP_CALLS):
        app.execute(make(LONG))
        app.execute(make(short[0]))
    seconds: dict[str, list[float]] = {"long": [], "short": []}
    for i in range(samples):
        pair = [("long", LONG), ("short", short[i % len(short)])]
        for kind, seller in pair if i % 2 == 0 else reversed(pair):
            cmd = make(seller)
            began = time.perf_counter()
            result = app.execute(cmd)  # raises if refused
            seconds[kind].append(time.perf_counter() - began)
            if not result.ok or result.replayed:
                raise SystemExit(f"timed payment not recorded: {result.error or 'replayed'}")
    out: dict[str, Any] = {
        kind: {
            "samples": len(values),
            "p50_ms": percentile(values, 0.50) * 1e3,
            "p99_ms": percentile(values, 0.99) * 1e3,
            "mean_ms": sum(values) / len(values) * 1e3,
        }
        for kind, values in seconds.items()
    }
    for pct in ("p50", "p99"):
        out[f"{pct}_ratio"] = out["long"][f"{pct}_ms"] / out["short"][f"{pct}_ms"]
    return out


def run_latency(args: argparse.Namespace, schemas: Schemas) -> dict[str, Any]:
    schema = schemas.name("latency")
    # Enough short sellers that each takes at most SHORT_TIMED_MAX timed payments per state.
    short = [
        f"acct_short_{n:04d}" for n in range(math.ceil(args.command_samples / SHORT_TIMED_MAX))
    ]
    app = open_ledger(args.conninfo, schema, [LONG, *short])
    uncached: Ledger | None = None
    try:
        print(
            f"[1/3] history: {args.long_history:,} events on one seller, {SHORT_HISTORY} on "
            f"each of {len(short)} others (routed payments, batches of {HISTORY_BATCH})",
            flush=True,
        )
        history = write_history(args, app, schema, short)
        print(
            f"      {history['long_events']:,} and {history['short_events']} events in "
            f"{history['seconds']:.1f} s; long seller's balance snapshot at version "
            f"{history['long_balance_snapshot']} (every {Ledger.snapshotting_intervals[Balance]})",
            flush=True,
        )
        result: dict[str, Any] = {"history": history, "samples": args.command_samples}
        make = PaymentMaker(args.seed + 1, [LONG], args.available_on)
        uncached = bootstrap(
            Settings(database_url=f"{args.conninfo}?schema={schema}", aggregate_cache_maxsize=0)
        )
        steps = (("cached", app, "aggregate cache warm"), ("uncached", uncached, "no cache"))
        for step, (phase, ledger, label) in enumerate(steps, start=2):
            print(
                f"[{step}/3] {phase} ({label}): {args.command_samples} payments to each kind",
                end=" ",
                flush=True,
            )
            result[phase] = timed = time_payments(ledger, make, short, args.command_samples)
            print(
                f"long p50 {timed['long']['p50_ms']:.2f} ms p99 {timed['long']['p99_ms']:.2f} ms, "
                f"short p50 {timed['short']['p50_ms']:.2f} ms p99 "
                f"{timed['short']['p99_ms']:.2f} ms: x{timed['p50_ratio']:.2f} p50, "
                f"x{timed['p99_ratio']:.2f} p99",
                flush=True,
            )
        result["short_events_after"] = max(seller_events(args.conninfo, schema, short).values())
        return result
    finally:
        if uncached is not None:
            uncached.close()
        app.close()
