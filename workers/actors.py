"""Sluice's dramatiq actors: folding the webhook inbox, releasing due funds, paying out by
schedule, submitting payouts to Stripe exactly once, and a sweeper as the safety net.

Delivery is at least once (a message may run several times, concurrently even); every effect
is idempotent: ledger commands carry deterministic idempotency keys, Stripe calls carry the
payout id as ``Idempotency-Key``, and a PostgreSQL advisory lock serialises duplicates of one
payout across the Stripe call and its ledger record.

Actors are declared by ``setup(broker)`` (no broker exists at import time); ``workers.main``
calls it for the dramatiq CLI. Business refusals (``SluiceError``) are not retried: they go to
dramatiq's dead-letter queue. Transient failures (a retryable Stripe error, a lost write race)
are re-raised as ``TransientError`` and retried within explicit bounds.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import dramatiq

from adapters import deadlines
from adapters.stripe import inbox
from adapters.stripe.folding import SLUICE_PAYOUT_METADATA_KEY, Folder
from adapters.stripe.gateway import GatewayError
from adapters.stripe.routing import Router
from ledger import payout_policy
from ledger.errors import (
    ConcurrencyError,
    IdempotencyConflictError,
    InsufficientFundsError,
    InvalidParameterError,
    InvalidTransitionError,
    PayoutNotFoundError,
    PayoutsDisabledError,
    SluiceError,
)
from ledger.payouts import PENDING_STATUS
from projections import queries
from workers.context import Context, get_context

log = logging.getLogger("sluice.workers")

# Test hook, documented: with SLUICE_TEST_CRASH_AFTER_STRIPE=1 a worker process dies
# (os._exit(9), like SIGKILL) right after Stripe created a payout and before the ledger records
# it. Never set it in production.
CRASH_AFTER_STRIPE_ENV = "SLUICE_TEST_CRASH_AFTER_STRIPE"
MESSAGE_ID_NAMESPACE = uuid5(NAMESPACE_URL, "https://sluice.dev/workers/messages/v1")

PAYOUTS_QUEUE = "payouts"
LEDGER_QUEUE = "ledger"
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
# Stripe keeps idempotency keys for 24 hours: a payout older than this is first looked up at
# Stripe by its metadata before anything is created again.
STRIPE_KEY_SAFE_AGE = timedelta(hours=20)
SWEEP_PENDING_AFTER = timedelta(minutes=2)
SWEEP_BATCH_MAX = 500


class TransientError(Exception):
    """May succeed if tried again (not a SluiceError, so the Retries middleware retries it)."""


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
}


# Schedules: when a payout is due is the ledger's policy (``ledger.payout_policy``).
payout_due = payout_policy.payout_due
payout_id_for = payout_policy.payout_id_for


def message_id(*parts: str) -> str:
    """A deterministic message id: a replay publishes the same id."""
    return str(uuid5(MESSAGE_ID_NAMESPACE, "|".join(parts)))


# Actor bodies (plain functions: callable in-process, testable without a broker) ---------------


def _transient(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except GatewayError as error:
        if error.retryable:
            raise TransientError(f"Stripe: {error}") from error
        raise
    except ConcurrencyError as error:
        raise TransientError(str(error)) from error


def process_inbox_body(ctx: Context) -> dict[str, int]:
    """One bounded ``Folder.process`` pass; skipped if another pass holds the inbox lock."""
    with ctx.advisory_lock("sluice:inbox", wait=False) as held:
        if not held:
            return {"skipped": 1}
        # Routing plans the fold records are carried out by route_payment (the relay sends it).
        folder = Folder(ctx.ledger, ctx.gateway, ctx.settings, route_inline=False)
        report = folder.process(ctx.view)
    return {"processed": report.processed, "parked": report.parked, "failed": report.failed}


def release_due_body(ctx: Context, account_id: str, currency: str, until_iso: str) -> str | None:
    until = datetime.fromisoformat(until_iso)
    if until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    result = _transient(
        lambda: ctx.ledger.release_funds(
            idempotency_key=f"release:{account_id}:{currency}:{until_iso}",
            account_id=account_id,
            currency=currency,
            until=until,
        )
    )
    return result.ids.get("entry")


def evaluate_payout_body(ctx: Context, account_id: str, currency: str, slot: str) -> str | None:
    """Load → decide → request: the slot's payout if the ledger's policy calls for one; returns
    its id (None: nothing due). The relay publishes its submission (the outbox), once recorded."""
    with ctx.advisory_lock(f"sluice:slot:{account_id}:{currency}:{slot}"):
        if ctx.ledger.get_payout(payout_id_for(account_id, currency, slot)) is not None:
            return payout_id_for(account_id, currency, slot)  # the slot was paid already
        decision = payout_policy.decide_payout(
            ctx.ledger.get_account(account_id),
            ctx.ledger.get_balance(account_id, currency),
            currency,
            date.fromisoformat(slot),
        )
        if not decision.pay:
            if decision.reason == payout_policy.PAUSED:
                log.info("payouts paused on %s", account_id)
            return None
        try:
            _transient(
                lambda: ctx.ledger.request_payout(
                    idempotency_key=f"payout:{account_id}:{currency}:{slot}",
                    account_id=account_id,
                    currency=currency,
                    amount_minor=decision.amount_minor,
                    payout_id=decision.payout_id,
                )
            )
        except (PayoutsDisabledError, InsufficientFundsError) as why:
            log.info("no payout for %s %s %s: %s", account_id, currency, slot, why)
            return None
        except (IdempotencyConflictError, InvalidParameterError):
            # Another evaluation of the same slot won (it saw another amount): that stands.
            if ctx.ledger.get_payout(decision.payout_id) is None:
                raise
    return decision.payout_id


def route_payment_body(ctx: Context, payment_id: str) -> list[str]:
    """Carries out a payment's recorded routing plan at Stripe (``adapters.stripe.routing``):
    duplicates wait on the payment's lock; a retry finds what Stripe already made."""
    folder = Folder(ctx.ledger, ctx.gateway, ctx.settings, route_inline=False)
    with ctx.advisory_lock(f"sluice:route:{payment_id}"):
        made: list[str] = _transient(
            lambda: Router(ctx.ledger, ctx.gateway, folder).route(payment_id)
        )
    return made


def _requested_at(payout: Any) -> datetime | None:
    try:
        at = payout.history[0][1]
    except (AttributeError, IndexError):
        return None
    return at if isinstance(at, datetime) else None


def _find_at_stripe(ctx: Context, payout: Any) -> str | None:
    for found in ctx.gateway.list_payouts(account=payout.account_id):
        metadata = found.data.get("metadata") or {}
        if metadata.get(SLUICE_PAYOUT_METADATA_KEY) == payout.payout_id:
            return found.id
    return None


def _failure_code(error: GatewayError) -> str:
    code = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in error.code)
    return (code or "stripe_refused")[:64]


def submit_payout_body(ctx: Context, payout_id: str) -> str | None:
    """Creates the payout at Stripe and records its ``po_`` id, exactly once: duplicates wait on
    the payout's advisory lock; a crash between the two steps is repaired by the retry, which
    gets the same payout back from Stripe (same Idempotency-Key) and records it."""
    with ctx.advisory_lock(f"sluice:payout:{payout_id}"):
        payout = ctx.ledger.get_payout(payout_id)
        if payout is None:
            raise PayoutNotFoundError(f"payout {payout_id} not found", param="payout_id")
        if payout.stripe_payout_id is not None:
            return str(payout.stripe_payout_id)
        if payout.status != PENDING_STATUS:
            return None  # canceled or failed before it was submitted: nothing to send
        if ctx.ledger.has_command(f"stripe:payout:{payout_id}"):
            return None  # Stripe initiated it (automatic payout): folded, never re-created
        stripe_id: str | None = None
        requested = _requested_at(payout)
        if requested is not None and ctx.ledger.clock() - requested > STRIPE_KEY_SAFE_AGE:
            stripe_id = _transient(lambda: _find_at_stripe(ctx, payout))
        if stripe_id is None:
            try:
                created = _transient(
                    lambda: ctx.gateway.create_payout(
                        account=payout.account_id,
                        amount=payout.amount_minor,
                        currency=payout.currency,
                        idempotency_key=payout_id,
                        metadata={SLUICE_PAYOUT_METADATA_KEY: payout_id},
                    )
                )
            except GatewayError as refused:
                # Stripe refused it for good (TransientError covers the retryable ones): the
                # payout failed, and its funds go back to available instead of staying in
                # transit forever.
                ctx.ledger.fail_payout(
                    idempotency_key=f"refused:{payout_id}",
                    payout_id=payout_id,
                    failure_code=_failure_code(refused),
                )
                log.warning("Stripe refused payout %s: %s", payout_id, refused)
                return None
            stripe_id = str(created.id)
        if os.environ.get(CRASH_AFTER_STRIPE_ENV) == "1":
            os._exit(9)  # test hook (see CRASH_AFTER_STRIPE_ENV)
        try:
            _transient(
                lambda: ctx.ledger.submit_payout(
                    idempotency_key=f"submit:{payout_id}",
                    payout_id=payout_id,
                    stripe_payout_id=stripe_id,
                )
            )
        except InvalidTransitionError:
            # The webhook folder recorded it first (it does not take this lock).
            again = ctx.ledger.get_payout(payout_id)
            if again is None or again.stripe_payout_id != stripe_id:
                raise
        return stripe_id


@dataclass
class SweepReport:
    resubmitted: list[str]
    inbox_due: bool


def sweep_body(
    ctx: Context,
    enqueue_submit: Callable[[str], None],
    enqueue_inbox: Callable[[], None],
    older_than: timedelta = SWEEP_PENDING_AFTER,
) -> SweepReport:
    """The safety net for lost, expired or dead-lettered messages: pending payouts never
    submitted to Stripe are submitted again; due webhook events get a fold pass."""
    cutoff = ctx.ledger.clock() - older_than
    candidates = queries.pending_payouts_before(ctx.view, cutoff, SWEEP_BATCH_MAX)
    resubmitted = []
    for payout_id in candidates:
        payout = ctx.ledger.get_payout(payout_id)
        if payout is None or payout.status != PENDING_STATUS or payout.stripe_payout_id:
            continue
        if ctx.ledger.has_command(f"stripe:payout:{payout_id}"):
            continue
        enqueue_submit(payout_id)
        resubmitted.append(payout_id)
    due = bool(inbox.due(ctx.view, 1))
    if due:
        enqueue_inbox()
    return SweepReport(resubmitted, due)


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
        )

    declared: dict[str, dramatiq.Actor[Any, Any]] = {}
    for fn in (process_inbox, release_due, evaluate_payout, submit_payout, route_payment, sweep):
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
