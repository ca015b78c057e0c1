"""Sluice's dramatiq actors: each runs one of the jobs in ``adapters.jobs`` (folding the
webhook inbox, releasing due funds, evaluating a payout slot, submitting a payout to Stripe
exactly once, carrying out a routing plan, the sweep) from a message.

Delivery is at least once (a message may run several times, concurrently even); the jobs make
every effect idempotent. Actors are declared by ``setup(broker)`` (no broker exists at import
time); ``workers.main`` calls it for the dramatiq CLI. Business refusals (``SluiceError``) are
not retried: they go to dramatiq's dead-letter queue. Transient failures (``TransientError``:
a retryable Stripe error, a lost write race) are retried within each actor's explicit bounds.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import dramatiq
import structlog

from adapters import deadlines

# The actors run the jobs (adapters.jobs); ``__all__`` re-exports some for tests and tools.
from adapters.jobs import (
    CRASH_AFTER_STRIPE_ENV,
    TransientError,
    evaluate_payout_body,
    payout_due,
    payout_id_for,
    process_inbox_body,
    reconcile_body,
    release_due_body,
    route_payment_body,
    submit_payout_body,
    sweep_body,
    sync_accounts_body,
)
from ledger.errors import SluiceError
from workers.context import get_context

log = logging.getLogger("sluice.workers")

MESSAGE_ID_NAMESPACE = uuid5(NAMESPACE_URL, "https://sluice.dev/workers/messages/v1")

PAYOUTS_QUEUE = "payouts"
LEDGER_QUEUE = "ledger"
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS


# Bounds per actor. RabbitMQ's consumer_timeout is 30 min: time_limit and max_backoff stay
# below it; max_age < 24 h keeps every retry inside Stripe's idempotency window.
ACTOR_OPTIONS: dict[str, dict[str, Any]] = {
    "process_inbox": {
        "queue_name": LEDGER_QUEUE,
        "max_retries": 3,
        "min_backoff": 1_000,
        "max_backoff": MINUTE_MS,
        "max_age": HOUR_MS,
        "time_limit": 10 * MINUTE_MS,
    },
    "release_due": {
        "queue_name": LEDGER_QUEUE,
        "max_retries": 5,
        "min_backoff": 1_000,
        "max_backoff": 5 * MINUTE_MS,
        "max_age": 6 * HOUR_MS,
        "time_limit": MINUTE_MS,
    },
    "evaluate_payout": {
        "queue_name": PAYOUTS_QUEUE,
        "max_retries": 5,
        "min_backoff": 1_000,
        "max_backoff": 5 * MINUTE_MS,
        "max_age": 6 * HOUR_MS,
        "time_limit": 2 * MINUTE_MS,
    },
    "submit_payout": {
        "queue_name": PAYOUTS_QUEUE,
        "max_retries": 8,
        "min_backoff": 2_000,
        "max_backoff": 10 * MINUTE_MS,
        "max_age": 12 * HOUR_MS,
        "time_limit": 5 * MINUTE_MS,
    },
    "route_payment": {
        "queue_name": PAYOUTS_QUEUE,
        "max_retries": 8,
        "min_backoff": 2_000,
        "max_backoff": 10 * MINUTE_MS,
        "max_age": 12 * HOUR_MS,
        "time_limit": 5 * MINUTE_MS,
    },
    "sweep": {
        "queue_name": LEDGER_QUEUE,
        "max_retries": 2,
        "min_backoff": 1_000,
        "max_backoff": MINUTE_MS,
        "max_age": 30 * MINUTE_MS,
        "time_limit": 2 * MINUTE_MS,
    },
    # Both list every account at Stripe: a pass is long, and the next one comes an interval
    # later anyway, so a failed pass is retried only briefly.
    "reconcile": {
        "queue_name": LEDGER_QUEUE,
        "max_retries": 2,
        "min_backoff": 5_000,
        "max_backoff": MINUTE_MS,
        "max_age": HOUR_MS,
        "time_limit": 20 * MINUTE_MS,
    },
    "sync_accounts": {
        "queue_name": LEDGER_QUEUE,
        "max_retries": 2,
        "min_backoff": 5_000,
        "max_backoff": MINUTE_MS,
        "max_age": HOUR_MS,
        "time_limit": 10 * MINUTE_MS,
    },
}


def message_id(*parts: str) -> str:
    """A deterministic message id: a replay publishes the same id."""
    return str(uuid5(MESSAGE_ID_NAMESPACE, "|".join(parts)))


# Deadlines ------------------------------------------------------------------------------------


class StepDeadlines(dramatiq.Middleware):
    """Every message runs under a deadline: its actor's ``time_limit``. dramatiq's own time limit
    interrupts Python code but not a thread blocked in a database call; under this deadline the
    watchdog closes such a connection (``adapters.deadlines``), so the step ends and is retried
    by the Retries middleware like any transient failure."""

    def __init__(self) -> None:
        self._local = threading.local()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        limit_ms = message.options.get("time_limit")
        if limit_ms is None:
            try:
                limit_ms = broker.get_actor(message.actor_name).options.get("time_limit")
            except Exception:  # an unknown actor: dramatiq itself refuses the message
                limit_ms = None
        self._local.token = deadlines.enter((limit_ms or 10 * MINUTE_MS) / 1000)

    def _reset(self) -> None:
        token: contextvars.Token[float | None] | None = getattr(self._local, "token", None)
        if token is not None:
            deadlines.leave(token)
            self._local.token = None

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._reset()

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._reset()


class LogContext(dramatiq.Middleware):
    """Every line a message's run logs names it: the actor, the message id and its arguments
    (account, currency, payout and payment ids: never a secret), as ``adapters.logs`` context."""

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        structlog.contextvars.bind_contextvars(
            actor=message.actor_name, message_id=message.message_id, args=list(message.args)
        )

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        structlog.contextvars.unbind_contextvars("actor", "message_id", "args")

    after_skip_message = after_process_message


# Declaration ----------------------------------------------------------------------------------

ACTORS: dict[str, dramatiq.Actor[Any, Any]] = {}


def actor(name: str) -> dramatiq.Actor[Any, Any]:
    try:
        return ACTORS[name]
    except KeyError:
        raise RuntimeError("workers.actors.setup(broker) was not called") from None


def send(name: str, *args: Any, msg_id: str | None = None) -> Any:
    """Enqueues ``name(*args)``; with ``msg_id`` the message id is deterministic."""
    target = actor(name)
    message = target.message(*args)
    if msg_id is not None:
        message = message.copy(message_id=msg_id)
    return target.broker.enqueue(message)


def setup(broker: dramatiq.Broker, queue_prefix: str = "") -> dict[str, dramatiq.Actor[Any, Any]]:
    """Makes ``broker`` the global broker and declares Sluice's actors on it (again: a second
    call replaces the actors, e.g. with another queue prefix)."""
    dramatiq.set_broker(broker)
    if not any(isinstance(m, StepDeadlines) for m in broker.middleware):
        broker.add_middleware(StepDeadlines())
    if not any(isinstance(m, LogContext) for m in broker.middleware):
        broker.add_middleware(LogContext())
    for name in ACTOR_OPTIONS:
        broker.actors.pop(name, None)

    # Actors return nothing: their effects are in the ledger and at Stripe, not in results.
    def process_inbox() -> None:
        process_inbox_body(get_context())

    def release_due(account_id: str, currency: str, until_iso: str) -> None:
        release_due_body(get_context(), account_id, currency, until_iso)

    def evaluate_payout(account_id: str, currency: str, slot: str) -> None:
        evaluate_payout_body(get_context(), account_id, currency, slot)

    def route_payment(payment_id: str) -> None:
        route_payment_body(get_context(), payment_id)

    def submit_payout(payout_id: str) -> None:
        submit_payout_body(get_context(), payout_id)

    def sweep() -> None:
        sweep_body(
            get_context(),
            lambda pid: send("submit_payout", pid),
            lambda: send("process_inbox"),
            enqueue_route=lambda pid: send("route_payment", pid),
        )

    def reconcile() -> None:
        reconcile_body(get_context())

    def sync_accounts() -> None:
        sync_accounts_body(get_context())

    declared: dict[str, dramatiq.Actor[Any, Any]] = {}
    actors = (process_inbox, release_due, evaluate_payout, submit_payout, route_payment, sweep)
    for fn in (*actors, reconcile, sync_accounts):
        options = dict(ACTOR_OPTIONS[fn.__name__])
        options["queue_name"] = queue_prefix + options["queue_name"]
        declared[fn.__name__] = dramatiq.actor(
            fn, actor_name=fn.__name__, broker=broker, throws=(SluiceError,), **options
        )
    ACTORS.clear()
    ACTORS.update(declared)
    return declared


def queue_names(queue_prefix: str = "") -> list[str]:
    return sorted({queue_prefix + o["queue_name"] for o in ACTOR_OPTIONS.values()})


__all__ = [
    "ACTORS",
    "CRASH_AFTER_STRIPE_ENV",
    "TransientError",
    "evaluate_payout_body",
    "message_id",
    "payout_due",
    "payout_id_for",
    "queue_names",
    "send",
    "setup",
]
