"""Embedded mode: the same actors on an in-memory StubBroker with an in-process dramatiq
``Worker`` — no broker server. For the demo and tests only: messages live in memory and are
lost with the process (use RabbitMQ in production; the sweeper repairs lost work).

``broker.emit_after("process_boot")`` starts the TimeLimit watchdog, which only the dramatiq
CLI does otherwise: without it time limits would silently not be enforced.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker

from adapters.settings import Settings
from adapters.stripe.gateway import StripeGateway
from ledger.application import Ledger
from ledger.balances import Balance
from projections.store import ReadModel
from workers.actors import payout_id_for, queue_names, send, setup
from workers.context import Context, set_context
from workers.relay import Relay

WORKER_THREADS = 4
JOIN_ROUNDS = 4  # evaluate → (relay) submit → (fold) → settled: each round drains one hop


@dataclass
class Embedded:
    broker: StubBroker
    worker: Worker
    context: Context
    relay: Relay

    def join(self) -> None:
        """Waits until every queue is drained and the relay has published what the new events
        call for (re-raises a dead-lettered message's error)."""
        for _ in range(JOIN_ROUNDS):  # work leads to events leads to work: settle a few rounds
            self.relay.run_once()
            for queue in queue_names():
                self.broker.join(queue, fail_fast=True)
            self.worker.join()


@contextmanager
def run_embedded(
    settings: Settings,
    *,
    ledger: Ledger | None = None,
    view: ReadModel | None = None,
    gateway: StripeGateway | None = None,
    threads: int = WORKER_THREADS,
) -> Iterator[Embedded]:
    """A StubBroker and an in-process Worker running Sluice's actors on the given objects
    (built from ``settings`` when not given)."""
    from adapters.bootstrap import bootstrap, read_model, stripe_gateway

    broker = StubBroker()
    broker.emit_after("process_boot")
    setup(broker)
    context = Context(
        settings,
        ledger or bootstrap(settings),
        view or read_model(settings),
        gateway or stripe_gateway(settings),
    )
    previous = set_context(context)
    worker = Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    # The embedded outbox: its own position, so it never moves a production relay's.
    relay = Relay(context.ledger, context.view, settings, name="embedded", publish=send)
    try:
        yield Embedded(broker, worker, context, relay)
    finally:
        worker.stop()
        broker.close()
        set_context(previous)
        if ledger is None:
            context.ledger.close()


def balances_of(ledger: Ledger) -> list[tuple[str, str]]:
    """(account, currency) of every balance in the log."""
    opened = (e for _, e in ledger.iter_events() if isinstance(e, Balance.Opened))
    return sorted({(e.account_id, e.currency) for e in opened})


def pay_out_by_schedule(
    ledger: Ledger,
    view: ReadModel,
    gateway: StripeGateway,
    settings: Settings,
    now: datetime,
) -> list[str]:
    """What ``Demo.pay_out()`` does by hand, done by the workers: ``evaluate_payout`` for
    today's slot on every connected balance (each account's schedule decides), which requests
    the payout and has ``submit_payout`` create it at Stripe. Returns the slot's payout ids."""
    slot = now.astimezone(UTC).date().isoformat()
    candidates = [
        (account, currency)
        for account, currency in balances_of(ledger)
        if account != settings.platform_account_id
    ]
    with run_embedded(settings, ledger=ledger, view=view, gateway=gateway) as embedded:
        for account, currency in candidates:
            send("evaluate_payout", account, currency, slot)
        embedded.join()
    return [
        payout_id
        for account, currency in candidates
        if ledger.get_payout(payout_id := payout_id_for(account, currency, slot)) is not None
    ]
