"""Sluice benchmarks: every row of issue 13's table, each beside a baseline of the same run.

Every measurement runs in a fresh PostgreSQL schema, dropped at the end. Ratios to a baseline
measured in the same run are the transferable figures; absolute numbers say as much about the
machine as about Sluice.

    bench.py              the entry point (``scripts/bench``): options, header, results file
    bench_payments.py     --suite payments: routed payments per second beside raw INSERTs
    bench_projections.py  --suite projections: rebuild rates and query latency beside raw reads
    bench_serve.py        --suite serve: several `sluice serve` processes on a hot account, and
                          webhook ingest beside an empty route
    bench_latency.py      --suite latency: command latency on a seller with a long history
                          beside sellers with ten events
    bench_workers.py      --suite workers (and ``scripts/bench workers``): payouts end to end
                          through the relay, RabbitMQ and a worker, beside confirmed publishes
    bench_targets.py      issue 13's table: figure, baseline, ratio, target, PASS/SHORT
    bench_common.py       machine facts, schemas, a Ledger with accounts open, tables, JSON

    scripts/bench --quick                # every suite, smoke-sized (under 2 minutes)
    scripts/bench --suite payments --seconds 30 --threads 1,4,16
    scripts/bench --suite projections --events 1000000
    scripts/bench --suite latency --long-history 100000
    scripts/bench --suite workers --payouts 200
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import bench_hordak
import bench_latency
import bench_payments
import bench_projections
import bench_serve
import bench_targets
import bench_workers
import psycopg
from bench_common import (
    DEFAULT_URL,
    ROOT,
    Schemas,
    load_average,
    machine_facts,
    write_results,
)

from adapters.persistence import describe
from adapters.settings import Settings


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    bench_payments.check_args(parser, args)
    bench_projections.check_args(parser, args)
    bench_latency.check_args(parser, args)
    bench_workers.check_args(parser, args)
    parsed = urlparse(args.database_url)
    if parsed.scheme not in ("postgres", "postgresql"):
        parser.error("--database-url must be a postgresql:// URL")
    # Our own schemas are created per measurement; drop any ?schema= the URL carries.
    args.conninfo = urlunparse(parsed._replace(query="", fragment=""))
    return args


def build_parser() -> argparse.ArgumentParser:
    """--help lists the options in the order they are added here: the payments suite's options
    sit among the shared ones at the top, the projections suite's in a group of their own."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="payments: routed payments per second (destination charge with an "
        "application fee) at several client thread counts, unbatched and batched, beside a raw "
        "psycopg one-row INSERT baseline measured in the same run. projections: on a history of "
        "--events events, the rebuild rate of every read model beside the raw read rate of the "
        "events table, and balance query latency beside a raw primary-key SELECT. serve, latency, "
        "workers: see scripts/bench_serve.py, bench_latency.py, bench_workers.py.",
    )
    parser.add_argument(
        "--suite",
        choices=("payments", "projections", "serve", "latency", "workers", "all"),
        default="all",
        help="which benchmark to run (default all)",
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="duration of each measurement (default 10)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 s per payments measurement, a "
        f"{bench_projections.HISTORY_EVENTS_QUICK:,}-event history, a "
        f"{bench_latency.LONG_HISTORY_QUICK:,}-event seller, {bench_workers.PAYOUTS_QUICK} payouts",
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
    bench_projections.add_arguments(parser)
    parser.add_argument(
        "--no-hordak",
        dest="hordak",
        action="store_false",
        help="skip django-hordak (installed from PyPI into var/bench/hordak-venv on first use)",
    )
    bench_latency.add_arguments(parser)
    bench_workers.add_arguments(parser)
    serve = parser.add_argument_group("serve suite")
    serve.add_argument(
        "--processes", type=int, default=4, help="sluice serve processes on the hot account (4)"
    )
    serve.add_argument("--clients", type=int, default=64, help="concurrent HTTP clients (64)")
    serve.add_argument(
        "--serve-seconds", type=float, default=None, help="per serve measurement (10; quick 3)"
    )
    parser.add_argument(
        "--out", default=str(ROOT / "var" / "bench"), help="directory of the JSON results"
    )
    return parser


def print_header(args: argparse.Namespace, facts: dict[str, Any], started: datetime) -> None:
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
    if args.suite in ("payments", "all"):
        print(bench_payments.describe_run(args))
    if args.suite in ("projections", "all"):
        print(bench_projections.describe_run(args))
    if args.suite in ("latency", "all"):
        print(bench_latency.describe_run(args))
    if args.suite in ("workers", "all"):
        print(
            f"workers: {args.payouts} payouts, {args.worker_processes} worker process(es) x "
            f"{args.worker_threads} threads, "
            f"RabbitMQ {bench_workers.BROKER_URL.split('@')[-1]}"
        )
    print(
        "note: the ratios to the baseline (same machine, same run, same client threads) are the "
        "transferable figures; the absolute numbers mostly describe this machine."
    )
    print()


def run_suites(args: argparse.Namespace, suites: set[str]) -> dict[str, Any]:
    """Runs the suites asked for, each in schemas of its own, all of them dropped at the end.
    Returns each suite's results (None: not run)."""
    schemas = Schemas(args.conninfo)
    out: dict[str, Any] = {
        "rows": [],
        "projections": None,
        "serve": None,
        "latency": None,
        "workers": None,
        "hordak": {"error": "not asked for"},
    }
    try:
        if "payments" in suites:
            print("== payments ==")
            out["rows"] = bench_payments.run_payments(args, schemas)
            if args.hordak:
                print("[hordak] django-hordak transfer_to at the same thread counts", flush=True)
                out["hordak"] = hordak = bench_hordak.measure_hordak(
                    args.conninfo, schemas, args.thread_counts, args.seconds
                )
                for r in hordak.get("rows", []):
                    print(
                        f"      threads={r['threads']}: {r['transfers_per_s']:,.0f} transfers/s",
                        flush=True,
                    )
                if "error" in hordak:
                    print(f"      {hordak['error']}", flush=True)
        if "projections" in suites:
            print()
            print("== projections ==")
            out["projections"] = bench_projections.run_projections(args, schemas)
        if "serve" in suites:
            print()
            print("== serve ==")
            out["serve"] = run_serve(args, schemas)
        if "latency" in suites:
            print()
            print("== latency ==")
            out["latency"] = bench_latency.run_latency(args, schemas)
        if "workers" in suites:
            print()
            print("== workers ==")
            out["workers"] = run_workers(args)
    finally:
        schemas.drop_all()
    return out


def run_workers(args: argparse.Namespace) -> dict[str, Any]:
    """Payouts end to end (bench_workers); a failure is the row's (SHORT), not the run's."""
    print(
        f"[1/1] {args.payouts} payouts: relay -> RabbitMQ -> worker -> Stripe sandbox -> ledger",
        flush=True,
    )
    deadline = bench_workers.DEADLINE_QUICK_S if args.quick else bench_workers.DEADLINE_S
    try:
        result = bench_workers.measure_workers(
            args.conninfo, args.payouts, args.worker_threads, deadline, args.worker_processes
        )
    except Exception as exc:  # reported in the table and the results file
        result = {"failed": f"{type(exc).__name__}: {exc}"[:200]}
    if "not_run" in result or "failed" in result:
        print(f"      {result.get('not_run') or result['failed']}", flush=True)
    else:
        for line in bench_workers.report(result).splitlines():
            print(f"      {line}", flush=True)
    return result


def run_serve(args: argparse.Namespace, schemas: Schemas) -> dict[str, Any]:
    seconds = args.serve_seconds or (3.0 if args.quick else 10.0)
    print(
        f"[1/2] hot account: 1 then {args.processes} serve processes, {args.clients} clients, "
        f"{seconds:g} s each",
        flush=True,
    )
    hot = bench_serve.measure_hot_account(
        args.conninfo, schemas, args.processes, args.clients, seconds
    )
    for label, r in (("1 process", hot["one_process"]), ("several", hot["several"])):
        print(
            f"      {label}: {r['per_s']:,.0f} payments/s, statuses {r['statuses']}, "
            f"p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, ledger "
            f"{'ok' if r['ledger']['ok'] else 'WRONG'}",
            flush=True,
        )
    print(f"[2/2] webhook ingest vs GET /healthz, 1 process, {args.clients} clients", flush=True)
    hooks = bench_serve.measure_webhooks(args.conninfo, schemas, 1, args.clients, seconds)
    for name in ("webhook", "empty"):
        print(f"      {name}: {hooks[name]['per_s']:,.0f} requests/s", flush=True)
    return {"hot": hot, "webhooks": hooks, "seconds": seconds}


def print_load(facts: dict[str, Any]) -> None:
    start_load, end_load = (
        " ".join(f"{x:.2f}" for x in load) if load else "?"
        for load in (facts["loadavg_at_start"], facts["loadavg_at_end"])
    )
    print()
    print(
        f"load average (1/5/15 min): {start_load} at start, {end_load} at end, "
        f"nproc={facts['nproc']} (load from other work skews every figure)"
    )


def run_settings(args: argparse.Namespace, projections: bool) -> dict[str, Any]:
    """The options of this run, as the results file records them."""
    return {
        "seconds": args.seconds,
        "threads": args.thread_counts,
        "batch_size": args.batch_size,
        "sellers": args.sellers,
        "available_on": args.available_on,
        "seed": args.seed,
        "events": bench_projections.history_events(args) if projections else None,
        "history_sellers": args.history_sellers,
        "history_batch": args.history_batch,
        "latency_samples": args.latency_samples,
        "verify": args.verify,
        "shared_read": args.shared_read,
        "profile": args.profile_names,
        "long_history": args.long_history,
        "command_samples": args.command_samples,
        "payouts": args.payouts,
        "worker_threads": args.worker_threads,
        "worker_processes": args.worker_processes,
        "ledger": Settings(database_url=args.conninfo).model_dump(exclude={"database_url"}),
    }


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
    suites = (
        {"payments", "projections", "serve", "latency", "workers"}
        if args.suite == "all"
        else {args.suite}
    )
    print_header(args, facts, started)
    out = run_suites(args, suites)
    rows, projected, served, hordak = out["rows"], out["projections"], out["serve"], out["hordak"]
    workers = out["workers"]

    balanced = all_ok = True
    if "payments" in suites:
        balanced, all_ok = bench_payments.report_payments(args, rows)
    if projected is not None:
        bench_projections.report_projections(projected)
        all_ok = all_ok and projected["validation"]["ok"]
    if served is not None:
        hot = served["hot"]
        all_ok = all_ok and hot["one_process"]["ledger"]["ok"] and hot["several"]["ledger"]["ok"]
    if workers is not None and "not_run" not in workers:
        all_ok = all_ok and workers.get("exactly_once", False)
    targets = (
        (bench_targets.payment_rows(rows, hordak) if "payments" in suites else [])
        + bench_targets.serve_rows(served)
        + bench_targets.projection_rows(projected)
        + bench_targets.latency_rows(out["latency"], args.quick)
        + bench_targets.workers_rows(workers)
    )
    print()
    print("== issue 13 targets (ratios to baselines measured in this run) ==")
    print(bench_targets.render(targets))
    facts["loadavg_at_end"] = load_average()
    print_load(facts)

    document = {
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "suite": args.suite,
        "facts": facts,
        "settings": run_settings(args, "projections" in suites),
        "results": rows,
        "projections": projected,
        "serve": served,
        "hordak": hordak,
        "latency": out["latency"],
        "workers": workers,
        "targets": targets,
        "ledger_balanced": balanced,
        "validation_ok": all_ok,
    }
    path = write_results(Path(args.out), started, document)
    print(f"results: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
