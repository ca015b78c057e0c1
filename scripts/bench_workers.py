"""Payouts per second end to end through RabbitMQ with publisher confirms on.

One run, on a fresh PostgreSQL schema and the in-process Stripe sandbox: N payouts are requested
in the ledger, one ``submit_payout`` message each is published (confirmed), a real worker
process (the dramatiq CLI on ``workers.main``) creates each payout at the sandbox and records
Stripe's id. The baseline, measured in the same run on the same broker, is the confirmed publish
rate alone; the ratio is the transferable figure.

    scripts/bench workers [--payouts 200] [--threads 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ledger.ids import object_id  # noqa: E402
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
from workers.actors import queue_names, send, setup  # noqa: E402
from workers.broker import make_broker  # noqa: E402

BROKER_URL = os.environ.get("SLUICE_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
DATABASE_URL = os.environ.get(
    "SLUICE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
WORKER_BOOT_S = 4
DEADLINE_S = 600


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payouts", type=int, default=200)
    parser.add_argument("--threads", type=int, default=4)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    n = args.payouts
    prefix = f"bench{uuid.uuid4().hex[:6]}_"
    print(
        f"Sluice workers bench: {n} payouts, 1 worker process x {args.threads} threads, "
        f"RabbitMQ {BROKER_URL.split('@')[-1]} with confirms, load {os.getloadavg()}"
    )
    with (
        Sandbox(seed=3, webhook_delivery="manual") as sb,
        fresh_store(DATABASE_URL, **sandbox_settings(sb)) as store,
    ):
        gateway = sandbox_gateway(sb)
        account, ids = request_payouts(sb, store, gateway, n, prefix)
        env = worker_env(store.settings, prefix)
        broker = make_broker(BROKER_URL)
        setup(broker, prefix)
        # Baseline: confirmed publishes alone, to a queue no worker reads yet.
        t0 = time.monotonic()
        for _ in range(n):
            send("sweep")
        baseline = n / (time.monotonic() - t0)
        rate = submit_through_worker(store, ids, env, args.threads)
        at_stripe = len({p.id for p in gateway.list_payouts(account=account, limit=100)})
        submitted = {store.ledger.get_payout(p).stripe_payout_id for p in ids}
        print(f"confirmed publish (baseline)     {baseline:8.1f} msg/s   x1.000")
        print(f"payouts end to end (submitted)   {rate:8.1f} /s      x{rate / baseline:.3f}")
        print(
            f"exactly once: {len(submitted)} distinct Stripe payouts for {n} requests "
            f"({'yes' if len(submitted) == n else 'NO'}); first page at Stripe: {at_stripe}"
        )
        delete_queues(prefix)


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


def submit_through_worker(store: Any, ids: list[str], env: dict[str, str], threads: int) -> float:
    """Starts a real worker process, sends one submit_payout per payout, and returns the rate at
    which Stripe's payout ids came back into the ledger."""
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dramatiq",
            "workers.main",
            "--processes",
            "1",
            "--threads",
            str(threads),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(WORKER_BOOT_S)
        t0 = time.monotonic()
        for payout_id in ids:
            send("submit_payout", payout_id)
        while sum(1 for p in ids if store.ledger.get_payout(p).stripe_payout_id) < len(ids):
            if time.monotonic() - t0 > DEADLINE_S:
                raise SystemExit("payouts did not all arrive in time")
            time.sleep(0.1)
        return len(ids) / (time.monotonic() - t0)
    finally:
        worker.terminate()
        worker.wait(30)


def delete_queues(prefix: str) -> None:
    """This run's queues, their delay and dead-letter queues included."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    channel = connection.channel()
    for queue in queue_names(prefix):
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            channel.queue_delete(queue=name)
    connection.close()


if __name__ == "__main__":
    main()
