"""The auditor's log: checkpointing throughput, and what scheduled checkpointing costs writers.

Two measurements, each beside a baseline taken in the same run, on fresh PostgreSQL schemas
(dropped at the end):

1. **Checkpointing** a history of ``--events`` events (the projections suite's realistic
   history): the Merkle log appended from an empty tree and signed
   (``adapters.audit_log.bench_checkpointing``), beside the raw read rate of the events table
   (plain psycopg pages, the floor under any reader) and ``select_notifications`` (bare and
   decoded, as the checkpointer and the projections read).
2. **Payments/s with scheduled checkpointing on and off**: unbatched routed payments
   (``bench_payments.measure_ledger``) for ``--seconds`` with ``--threads`` clients, alternately
   without and with a ``ScheduledCheckpoints`` following the same log every ``--interval-s``
   (1 s: sixty times as often as the production default). It runs in a process of its own, as
   ``sluice project run`` runs it with a signing key; ``--follower thread`` runs it in the
   writers' process instead (the worse case: it shares their GIL). Target: on ≥ 0.95 x off.

    scripts/bench audit --quick            # CI-sized: 20,000 events, 3 s per payments round
    scripts/bench audit --events 1000000   # the issue's figure
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import bench_payments
import bench_projections
from bench_common import (
    DEFAULT_URL,
    ROOT,
    Schemas,
    load_average,
    machine_facts,
    open_ledger,
    write_results,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.audit_log import Checkpointer, MerkleStore, bench_checkpointing
from adapters.audit_schedule import ScheduledCheckpoints
from adapters.bootstrap import bootstrap, read_model
from adapters.settings import Settings

EVENTS = 1_000_000
EVENTS_QUICK = 20_000
SECONDS_QUICK = 3.0
FOLLOW_POLL_S = 0.25  # how often the checkpointing thread is called (the projector's poll)
TARGET_RATIO = 0.95
FOLLOW_START_S = 1.0  # a spawned follower imports Sluice and connects before the round starts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench audit", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{EVENTS_QUICK:,} events, {SECONDS_QUICK:g} s rounds"
    )
    parser.add_argument(
        "--events", type=int, default=None, help=f"history size (default {EVENTS:,})"
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="per payments round (default 10)"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="off/on pairs, alternated (default 2)"
    )
    parser.add_argument("--threads", type=int, default=4, help="payment client threads (default 4)")
    parser.add_argument(
        "--interval-s", type=float, default=1.0, help="checkpoint interval while paying (1.0)"
    )
    parser.add_argument(
        "--follower",
        choices=("process", "thread"),
        default="process",
        help="where checkpointing runs while paying: a process of its own, as deployed "
        "(default), or a thread in the writers' process (the worse case)",
    )
    parser.add_argument(
        "--database-url", default=os.environ.get("SLUICE_BENCH_DATABASE_URL", DEFAULT_URL)
    )
    parser.add_argument("--out", default=str(ROOT / "var" / "bench"))
    args = parser.parse_args(argv)
    args.events = args.events or (EVENTS_QUICK if args.quick else EVENTS)
    args.seconds = args.seconds or (SECONDS_QUICK if args.quick else 10.0)
    if args.events < 1 or args.rounds < 1 or args.threads < 1 or args.interval_s <= 0:
        parser.error("--events, --rounds, --threads and --interval-s must be positive")
    args.conninfo = urlunparse(urlparse(args.database_url)._replace(query="", fragment=""))
    # What bench_projections.write_history and bench_payments.measure_ledger read.
    args.history_sellers, args.history_batch, args.seed = 200, 500, 1
    args.sellers, args.batch_size, args.available_on = 50, 1, "day"
    return args


def measure_checkpointing(args: argparse.Namespace, schemas: Schemas) -> dict[str, Any]:
    schema = schemas.name("audit_hist")
    print(f"[1/2] history: {args.events:,} events", flush=True)
    ledger, settings, _, history = bench_projections.write_history(args, schema)
    try:
        print(f"      written in {history['seconds']:.1f} s; reading it raw", flush=True)
        bench_projections.measure_raw_read(args.conninfo, schema)  # warms the caches
        raw = bench_projections.measure_raw_read(args.conninfo, schema)
        print("      checkpointing it (append from an empty tree, then sign)", flush=True)
        result = bench_checkpointing(
            ledger, read_model(settings), max_events=history["head"], reset=True
        )
    finally:
        ledger.close()
    result["psycopg_raw_read_per_s"] = raw["per_s"]
    result["x_psycopg_raw_read"] = raw["per_s"] / result["checkpointing_per_s"]
    return result


def follow(url: str, interval_s: float, stop: Any, results: Any) -> None:
    """Calls a ScheduledCheckpoints every FOLLOW_POLL_S until ``stop`` is set, as follow_log
    would; sends (checkpoints signed, failures) back. A process or a thread runs it."""
    settings = Settings(database_url=url)
    ledger, view = bootstrap(settings, role="projector"), read_model(settings)
    try:
        checkpointer = Checkpointer(ledger, MerkleStore(view), key=Ed25519PrivateKey.generate())
        schedule = ScheduledCheckpoints(checkpointer, interval_s=interval_s, step_events=20_000)
        while not stop.wait(FOLLOW_POLL_S):  # ends when the round ends
            schedule()
        results.put((schedule.signed, schedule.failures))
    finally:
        ledger.close()


class Follower:
    """Scheduled checkpointing beside the writers for one round: in a process of its own, as
    deployed (`sluice project run` is one), or in the writers' process (``--follower thread``,
    the worse case: it shares their GIL)."""

    def __init__(self, url: str, interval_s: float, mode: str) -> None:
        self.mode = mode
        if mode == "process":
            context = multiprocessing.get_context("spawn")
            self.stop: Any = context.Event()
            self.results: Any = context.Queue()
            self.runner: Any = context.Process(
                target=follow, args=(url, interval_s, self.stop, self.results), daemon=True
            )
        else:
            self.stop, self.results = threading.Event(), queue.Queue()
            self.runner = threading.Thread(
                target=follow, args=(url, interval_s, self.stop, self.results), daemon=True
            )
        self.signed = self.failures = 0

    def __enter__(self) -> Follower:
        self.runner.start()
        time.sleep(FOLLOW_START_S if self.mode == "process" else 0)  # imported and connected
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        try:  # bounded: a catch-up step is ~1 s, a checkpoint milliseconds
            self.signed, self.failures = self.results.get(timeout=60)
        finally:
            self.runner.join(10)


def payments_round(args: argparse.Namespace, schemas: Schemas, on: bool, n: int) -> dict[str, Any]:
    schema = schemas.name(f"audit_pay_{'on' if on else 'off'}_{n}")
    sellers = [f"acct_seller_{i:04d}" for i in range(args.sellers)]
    open_ledger(args.conninfo, schema, sellers).close()  # tables and accounts, before following
    url = f"{args.conninfo}?schema={schema}"
    read_model(Settings(database_url=url), create_tables=True).datastore.close()
    if not on:
        result = bench_payments.measure_ledger(args, schema, False, args.threads, args.seed + n)
        return result | {"checkpointing": False, "checkpoints_signed": 0}
    with Follower(url, args.interval_s, args.follower) as follower:
        result = bench_payments.measure_ledger(args, schema, False, args.threads, args.seed + n)
    return result | {
        "checkpointing": True,
        "follower": args.follower,
        "checkpoints_signed": follower.signed,
        "checkpoint_failures": follower.failures,
    }


def measure_payments(args: argparse.Namespace, schemas: Schemas) -> dict[str, Any]:
    rounds = []
    for n in range(args.rounds):
        for on in (False, True):  # alternated, so drift in the machine's load hits both alike
            print(
                f"[2/2] payments, checkpointing {'on ' if on else 'off'} round {n + 1}: ",
                end="",
                flush=True,
            )
            row = payments_round(args, schemas, on, n)
            print(
                f"{row['per_s']:,.0f} payments/s, {row['checkpoints_signed']} checkpoints",
                flush=True,
            )
            rounds.append(row)
    off = statistics.mean(r["per_s"] for r in rounds if not r["checkpointing"])
    on_rate = statistics.mean(r["per_s"] for r in rounds if r["checkpointing"])
    return {
        "rounds": rounds,
        "off_per_s": off,
        "on_per_s": on_rate,
        "ratio": on_rate / off if off else None,
        "follower": args.follower,
        "interval_s": args.interval_s,
    }


def report(cp: dict[str, Any], pay: dict[str, Any]) -> None:
    print()
    print(
        f"checkpointing: {cp['events']:,} events in {cp['checkpointing_s']:.1f} s ="
        f" {cp['checkpointing_per_s']:,.0f} events/s"
    )
    print(
        f"  raw read beside it: psycopg {cp['psycopg_raw_read_per_s']:,.0f} events/s"
        f" ({cp['x_psycopg_raw_read']:.1f} x checkpointing), select_notifications"
        f" {cp['raw_read_per_s']:,.0f}/s, decoded {cp['decoded_read_per_s']:,.0f}/s;"
        f" signing {cp['sign_s'] * 1e3:.1f} ms,"
        f" nothing new {cp['checkpoint_with_nothing_new_s'] * 1e3:.1f} ms"
    )
    ratio = pay["ratio"]
    where = "in a process of its own" if pay["follower"] == "process" else "in the writers' thread"
    verdict = "meets" if ratio is not None and ratio >= TARGET_RATIO else "MISSES"
    print(
        f"payments/s: checkpointing off {pay['off_per_s']:,.0f}, on {pay['on_per_s']:,.0f}"
        f" (every {pay['interval_s']:g} s, {where}):"
        f" {ratio:.3f} x ({verdict} the {TARGET_RATIO} x target)"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    facts = machine_facts(args.conninfo)
    print(
        f"Sluice bench audit  {started:%Y-%m-%d %H:%M:%S} UTC, nproc={facts['nproc']},"
        f" load {facts['loadavg_at_start']}"
    )
    schemas = Schemas(args.conninfo)
    began = time.perf_counter()
    try:
        checkpointing = measure_checkpointing(args, schemas)
        payments = measure_payments(args, schemas)
    finally:
        schemas.drop_all()
    report(checkpointing, payments)
    facts["loadavg_at_end"] = load_average()
    print(f"load average at end: {facts['loadavg_at_end']} ({time.perf_counter() - began:.0f} s)")
    document = {
        "suite": "audit",
        "started_at": started.isoformat(),
        "facts": facts,
        "settings": {k: v for k, v in vars(args).items() if k != "conninfo"},
        "checkpointing": checkpointing,
        "payments": payments,
    }
    path = write_results(Path(args.out), started, document)
    print(f"results: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    valid = (
        all(r["validation"]["ok"] for r in payments["rounds"])
        and checkpointing["same_checkpoint_again"]
    )
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main())
