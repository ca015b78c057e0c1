"""Payouts per second end to end through RabbitMQ with publisher confirms on.

One run, on a fresh PostgreSQL schema and the in-process Stripe sandbox: N payouts are requested
in the ledger; the relay (``workers.relay.Relay``, in this process) follows the log and publishes
one ``submit_payout`` message per ``Payout.Requested`` (confirmed); a real worker process (the
dramatiq CLI on ``workers.main``) creates each payout at the sandbox and records Stripe's id. The
baseline, measured in the same run on the same broker, is the confirmed publish rate alone; the
ratio is the transferable figure. Exactly once: every payout has a Stripe id, no two share one,
and the seller's payouts at the sandbox are exactly those.

    scripts/bench workers [--payouts 200] [--threads 4]   this file, standalone
    scripts/bench --suite workers                          the same, in issue 13's table
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eventsourcing.utils import get_topic  # noqa: E402

from ledger.ids import object_id  # noqa: E402
from ledger.payouts import Payout  # noqa: E402
from stripe_sandbox import Sandbox  # noqa: E402
from tests.integration.stripe_support import (  # noqa: E402
    BANK_OK,
    Target,
    fold_all,
    fresh_store,
    sandbox_events,
    sandbox_gateway,
    sandbox_settings,
    store_events,
)
from tests.support import delete_queues  # noqa: E402
from workers.actors import ACTOR_OPTIONS, send, setup  # noqa: E402
from workers.broker import make_broker  # noqa: E402
from workers.relay import Relay  # noqa: E402

BROKER_URL = os.environ.get("SLUICE_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
DATABASE_URL = os.environ.get(
    "SLUICE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
PAYOUTS = 200
PAYOUTS_QUICK = 50  # scripts/bench --quick: the whole run stays under 2 minutes
THREADS = 4
PROCESSES = 2  # as `sluice worker` deploys it (its --processes default)
BROKER_CONNECT_S = 5  # RabbitMQ's TCP connect and AMQP handshake, when checking it is there
WORKER_BOOT_MAX_S = 60  # the worker process imports and starts consuming (a loaded machine)
DEADLINE_S = 600  # every payout back in the ledger; past it the run is reported incomplete
DEADLINE_QUICK_S = 60
RELAY_PASSES_MAX = 100  # each pass publishes up to 10,000 events' messages
STRIPE_PAGES_MAX = 1_000  # of 100 payouts: the listing at the sandbox ends
POLL_S = 0.05  # between looks at the ledger while the worker runs
LOG_PAGE_SIZE = 1_000  # notifications a query, when following the log
LOG_PAGES_MAX = 1_000  # pages a poll: far more than one poll's new events
SUBMITTED_TOPIC = get_topic(Payout.Submitted)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payouts", type=int, default=PAYOUTS)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--processes", type=int, default=PROCESSES)
    args = parser.parse_args()
    if args.payouts < 1 or args.threads < 1 or args.processes < 1:
        parser.error("--payouts, --threads and --processes are at least 1")
    return args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """scripts/bench's options for --suite workers (standalone: ``parse_args``)."""
    workers = parser.add_argument_group("workers suite (RabbitMQ at $SLUICE_BROKER_URL)")
    workers.add_argument(
        "--payouts",
        type=int,
        default=None,
        help=f"payouts through the worker (default {PAYOUTS}; {PAYOUTS_QUICK} with --quick)",
    )
    workers.add_argument(
        "--worker-threads",
        type=int,
        default=THREADS,
        help=f"threads of each worker process (default {THREADS})",
    )
    workers.add_argument(
        "--worker-processes",
        type=int,
        default=PROCESSES,
        help=f"worker processes (default {PROCESSES}, as `sluice worker` runs)",
    )


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A bad value ends the run through ``parser.error``."""
    if args.payouts is None:
        args.payouts = PAYOUTS_QUICK if args.quick else PAYOUTS
    if args.payouts < 1 or args.worker_threads < 1 or args.worker_processes < 1:
        parser.error("--payouts, --worker-threads and --worker-processes are at least 1")


def main() -> None:
    args = parse_args()
    print(
        f"Sluice workers bench: {args.payouts} payouts, {args.processes} worker process(es) x "
        f"{args.threads} threads, RabbitMQ {BROKER_URL.split('@')[-1]} with confirms, "
        f"load {os.getloadavg()}"
    )
    result = measure_workers(DATABASE_URL, args.payouts, args.threads, DEADLINE_S, args.processes)
    if "not_run" in result:
        raise SystemExit(f"not run: {result['not_run']}")
    print(report(result))
    if not result["exactly_once"]:
        raise SystemExit(1)


def report(result: dict[str, Any]) -> str:
    """The measurement in three lines (the standalone script's output)."""
    rate, baseline, n = result["per_s"], result["baseline_per_s"], result["payouts"]
    return "\n".join(
        (
            f"confirmed publish (baseline)     {baseline:8.1f} msg/s   x1.000",
            f"payouts end to end (submitted)   {rate:8.1f} /s      x{rate / baseline:.3f}",
            f"exactly once: {result['distinct_submitted']} distinct Stripe payouts for {n} "
            f"requests, {result['at_stripe']} at Stripe "
            f"({'yes' if result['exactly_once'] else 'NO'})"
            + ("" if result["complete"] else f"; INCOMPLETE after {result['seconds']:.0f} s"),
        )
    )


def broker_unreachable(url: str) -> str | None:
    """Why RabbitMQ cannot be used (None: it can). Checked first, so a missing broker makes the
    row NOT RUN with the reason instead of failing the run."""
    if urlparse(url).scheme not in ("amqp", "amqps"):
        return f"SLUICE_BROKER_URL is not RabbitMQ ({urlparse(url).scheme}://)"
    import pika

    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = BROKER_CONNECT_S
    params.stack_timeout = BROKER_CONNECT_S
    try:
        pika.BlockingConnection(params).close()
    except Exception as exc:  # any failure to connect means: not run here
        where = url.rsplit("@", maxsplit=1)[-1]
        return f"RabbitMQ unreachable at {where}: {exc!r}"[:200]  # pika's str() may be empty
    return None


def measure_workers(
    database_url: str, payouts: int, threads: int, deadline_s: float, processes: int = PROCESSES
) -> dict[str, Any]:
    """Payouts end to end beside confirmed publishes; ``{"not_run": why}`` without RabbitMQ.
    The schema (``fresh_store``) and this run's queues are removed at the end."""
    reason = broker_unreachable(BROKER_URL)
    if reason is not None:
        return {"not_run": reason}
    prefix = f"bench{uuid.uuid4().hex[:6]}_"
    base_prefix = f"{prefix}base_"  # the baseline's queues: no worker reads them
    broker = make_broker(BROKER_URL)
    try:
        with (
            Sandbox(seed=3, webhook_delivery="manual") as sb,
            fresh_store(database_url, **sandbox_settings(sb)) as store,
        ):
            gateway = sandbox_gateway(sb)
            account, ids = request_payouts(sb, store, gateway, payouts, prefix)
            env = worker_env(store.settings, prefix)
            # Baseline: confirmed publishes alone. Queues of their own, so the worker started
            # below does not then run these messages beside the payouts it is timed on.
            setup(broker, base_prefix)
            t0 = time.monotonic()
            for _ in range(payouts):
                send("sweep")
            baseline = payouts / (time.monotonic() - t0)
            setup(broker, prefix)
            relay = Relay(store.ledger, store.view, store.settings, name="bench")
            timed = submit_through_worker(
                store, relay, ids, env, (processes, threads), prefix, deadline_s
            )
            submitted = [stripe_id(store, p) for p in ids]
            distinct = {s for s in submitted if s}
            at_stripe = stripe_payout_ids(sb, account)
            once = len(submitted) == len(distinct) == payouts and distinct == at_stripe
            return {
                "payouts": payouts,
                "threads": threads,
                "processes": processes,
                "per_s": timed["per_s"],
                "baseline_per_s": baseline,
                "ratio": timed["per_s"] / baseline,
                "seconds": timed["seconds"],
                "complete": timed["complete"],
                "published_by_relay": relay.published,
                "distinct_submitted": len(distinct),
                "at_stripe": len(at_stripe),
                "exactly_once": once,
            }
    finally:
        broker.close()
        for used in (prefix, base_prefix):
            delete_queues(BROKER_URL, used)


def request_payouts(
    sb: Sandbox, store: Any, gateway: Any, n: int, prefix: str
) -> tuple[str, list[str]]:
    """A seller with funds at the sandbox and in the ledger, and ``n`` payouts requested of it."""
    target = Target("sandbox", sb.client(), gateway, sb)
    account = target.account(BANK_OK)
    target.pay(n * 100, "pm_card_bypassPending", transfer_data={"destination": account})
    store_events(store.view, sandbox_events(sb, [None, account]))
    fold_all(store.folder(gateway), store.view)
    ids = []
    for i in range(n):
        payout_id = object_id("po", "bench", prefix, str(i))
        store.ledger.request_payout(
            idempotency_key=f"bench:{prefix}:{i}",
            account_id=account,
            currency="usd",
            amount_minor=100,
            payout_id=payout_id,
        )
        ids.append(payout_id)
    return account, ids


def worker_env(settings: Any, prefix: str) -> dict[str, str]:
    """The worker process's environment: this store, this sandbox, this run's queues only."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")} | {
        "SLUICE_DATABASE_URL": settings.database_url,
        "SLUICE_STRIPE_API_KEY": settings.stripe_api_key,
        "SLUICE_STRIPE_API_BASE": str(settings.stripe_api_base),
        "SLUICE_STRIPE_PLATFORM_ACCOUNT_ID": str(settings.stripe_platform_account_id),
        "SLUICE_BROKER_URL": BROKER_URL,
        "SLUICE_QUEUE_PREFIX": prefix,
    }


def submit_through_worker(
    store: Any,
    relay: Relay,
    ids: list[str],
    env: dict[str, str],
    shape: tuple[int, int],
    prefix: str,
    deadline_s: float,
) -> dict[str, Any]:
    """Starts a real worker (``shape``: processes, threads each) and, once every process
    consumes, times the relay publishing every requested payout's message until Stripe's
    payout ids are all back in the ledger."""
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dramatiq",
            "workers.main",
            "--processes",
            str(shape[0]),
            "--threads",
            str(shape[1]),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        queue = prefix + ACTOR_OPTIONS["submit_payout"]["queue_name"]
        wait_for_consumer(worker, queue, shape[0])
        t0 = time.monotonic()
        for _ in range(RELAY_PASSES_MAX):
            if relay.run_once() == 0:  # caught up with the log: every message is published
                break
        # Until every payout's submission is in the log: one indexed query a poll for the new
        # Payout.Submitted events (as the relay follows the log). Loading each payout instead,
        # as it came back, took 14% of the CPU the worker and the sandbox are measured on.
        log = SubmittedLog(store)
        while log.follow() < len(ids) and time.monotonic() - t0 <= deadline_s:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker process exited ({worker.returncode})")
            time.sleep(POLL_S)
        seconds = time.monotonic() - t0
        # Untimed: each payout read from the ledger itself (measure_workers checks them again).
        done = sum(1 for p in ids if stripe_id(store, p))
        return {"per_s": done / seconds, "seconds": seconds, "complete": done == len(ids)}
    finally:
        worker.terminate()
        worker.wait(30)


class SubmittedLog:
    """Follows the notification log after a position, as the relay does, counting the payouts
    whose submission (Stripe's id) the worker recorded."""

    def __init__(self, store: Any) -> None:
        self.recorder = store.ledger.recorder
        self.position = 0
        self.submitted: set[Any] = set()

    def follow(self) -> int:
        """Reads what was recorded since the last call; returns the payouts submitted so far."""
        for _ in range(LOG_PAGES_MAX):
            page = self.recorder.select_notifications(
                start=self.position,
                limit=LOG_PAGE_SIZE,
                topics=[SUBMITTED_TOPIC],
                inclusive_of_start=False,
            )
            if not page:
                break
            self.submitted.update(n.originator_id for n in page)
            self.position = page[-1].id
        return len(self.submitted)


def stripe_id(store: Any, payout_id: str) -> str | None:
    """Stripe's id of the payout, once the worker recorded it in the ledger."""
    payout = store.ledger.get_payout(payout_id)
    return payout.stripe_payout_id if payout is not None else None


def wait_for_consumer(worker: subprocess.Popen[bytes], queue: str, consumers: int = 1) -> None:
    """Until the worker consumes ``queue`` (it declares it on start-up), so its boot is not
    timed; bounded by WORKER_BOOT_MAX_S."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    try:
        deadline = time.monotonic() + WORKER_BOOT_MAX_S
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker process exited ({worker.returncode}) on start")
            channel = connection.channel()
            try:
                declared = channel.queue_declare(queue=queue, passive=True)
                if declared.method.consumer_count >= consumers:  # one per worker process
                    return
                channel.close()
            except pika.exceptions.ChannelClosedByBroker:  # not declared yet: closes the channel
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the worker did not consume {queue} within {WORKER_BOOT_MAX_S} s")
    finally:
        connection.close()


def stripe_payout_ids(sb: Sandbox, account: str) -> set[str]:
    """Every payout of ``account`` at the sandbox, page by page."""
    ids: set[str] = set()
    after = None
    for _ in range(STRIPE_PAGES_MAX):
        query = "limit=100" + (f"&starting_after={after}" if after else "")
        request = urllib.request.Request(
            f"{sb.base_url}/v1/payouts?{query}",
            headers={"Authorization": f"Bearer {sb.secret_key}", "Stripe-Account": account},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            page = json.loads(response.read())
        ids.update(p["id"] for p in page["data"])
        if not page["has_more"] or not page["data"]:
            break
        after = page["data"][-1]["id"]
    return ids


if __name__ == "__main__":
    main()
