"""Sluice's jobs: folding the webhook inbox, releasing due funds, paying out by schedule,
submitting payouts to Stripe exactly once, carrying out routing plans, and the sweep.

Plain functions on a ``Context`` (the Ledger, the read models, the Stripe gateway, a lock). The
dramatiq actors (``workers.actors``) run them from messages; the demo runs them in-process,
synchronously (``pay_out_by_schedule``). Every effect is idempotent: ledger commands carry
deterministic idempotency keys, Stripe calls carry the payout id as ``Idempotency-Key``, and a
PostgreSQL advisory lock serialises duplicates of one payout across the Stripe call and its
ledger record. Transient failures (a retryable Stripe error, a lost write race) are raised as
``TransientError``: the actors retry those, within their bounds, and never a ``SluiceError``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from adapters import deadlines
from adapters.persistence import connect_options, guarded_psycopg
from adapters.settings import Settings
from adapters.stripe import inbox
from adapters.stripe.folding import SLUICE_PAYOUT_METADATA_KEY, Folder
from adapters.stripe.gateway import GatewayError, StripeGateway
from adapters.stripe.routing import Router
from ledger import payout_policy
from ledger.application import Ledger
from ledger.balances import Balance
from ledger.errors import (
    ConcurrencyError,
    IdempotencyConflictError,
    InsufficientFundsError,
    InvalidParameterError,
    InvalidTransitionError,
    PayoutNotFoundError,
    PayoutsDisabledError,
)
from ledger.ids import is_sluice_id, unbranded
from ledger.payouts import HELD, PENDING_STATUS
from projections import queries
from projections.store import ReadModel

log = logging.getLogger("sluice.workers")

# Test hook, documented: with SLUICE_TEST_CRASH_AFTER_STRIPE=1 a worker process dies
# (os._exit(9), like SIGKILL) right after Stripe created a payout and before the ledger records
# it. Never set it in production.
CRASH_AFTER_STRIPE_ENV = "SLUICE_TEST_CRASH_AFTER_STRIPE"

# Stripe keeps idempotency keys for 24 hours: a payout older than this is first looked up at
# Stripe by its metadata before anything is created again.
STRIPE_KEY_SAFE_AGE = timedelta(hours=20)
SWEEP_PENDING_AFTER = timedelta(minutes=2)
SWEEP_BATCH_MAX = 500
# A held payout or routing waits on a person (a key, a permission): retried after 1, 2, 4, …
# minutes, then hourly. The cap bounds the attempts (each is recorded: at most 24 a day each)
# and how long a fixed problem keeps anything waiting.
HOLD_RETRY_BASE = timedelta(minutes=1)
HOLD_RETRY_MAX = timedelta(hours=1)
HOLD_RETRY_DOUBLINGS_MAX = 16  # 2**16 minutes is far past the cap: no overflow, no huge ints


class TransientError(Exception):
    """May succeed if tried again (not a SluiceError, so the Retries middleware retries it)."""


LOCK_CONNECT_TIMEOUT_S = 10


def is_postgres(database_url: str) -> bool:
    return database_url.startswith(("postgres://", "postgresql://"))


def conninfo(database_url: str) -> str:
    """libpq's URL without Sluice's ``?schema=`` parameter."""
    return database_url.split("?", 1)[0]


# Connections kept for advisory locks, per process: one per worker thread holding a payout's
# lock across its Stripe call. A new connection for each lock cost 6.3 ms (the server forks a
# backend) against 0.17 ms on a kept one, and on a 2-core machine that is CPU the workers,
# the database and Stripe share. Past the bound, a lock waits for a connection, bounded too.
LOCK_POOL_SIZE_MAX = 16
LOCK_POOL_IDLE_S = 300  # a kept connection unused this long is closed


@dataclass
class Context:
    settings: Settings
    ledger: Ledger
    view: ReadModel
    gateway: StripeGateway
    _local_locks: dict[str, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)
    _lock_pool: Any = None

    def _lock_connections(self) -> Any:
        """The process's pool of lock connections (autocommit, the worker role's timeouts),
        made on first use. Each is checked when taken (a connection the server dropped, as
        on a restart, is replaced, not handed out) and discarded if the deadline watchdog
        closed it."""
        with self._guard:
            if self._lock_pool is None:
                from psycopg_pool import ConnectionPool

                options = connect_options(self.settings, "worker")
                options["connect_timeout"] = LOCK_CONNECT_TIMEOUT_S
                self._lock_pool = ConnectionPool(
                    conninfo(self.settings.database_url),
                    kwargs={**options, "autocommit": True},
                    min_size=0,
                    max_size=LOCK_POOL_SIZE_MAX,
                    max_idle=LOCK_POOL_IDLE_S,
                    timeout=LOCK_CONNECT_TIMEOUT_S,
                    check=ConnectionPool.check_connection,
                    name="sluice-locks",
                    open=True,
                )
            return self._lock_pool

    @contextmanager
    def advisory_lock(self, key: str, *, wait: bool = True) -> Iterator[bool]:
        """Mutual exclusion on ``key`` across processes: ``pg_advisory_xact_lock`` in a
        transaction on its own connection, held for the ``with`` block. On SQLite (the
        embedded store, one process) a per-key in-process lock stands in. Yields whether the
        lock is held (always True when ``wait``)."""
        if is_postgres(self.settings.database_url):
            from psycopg import ClientCursor

            with (
                self._lock_connections().connection() as conn,
                guarded_psycopg(conn, "advisory-lock"),
            ):
                # BEGIN, the session's idle limit and the lock in one round trip (one simple
                # query, the key quoted client side), where ``conn.transaction()`` and two
                # statements took three. The transaction ends below (committed, or rolled back
                # on an error); a broken connection is discarded by the pool.
                take = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
                sql = f"BEGIN; SELECT {take}(hashtextextended(%s, 0))"
                params: tuple[str, ...] = (key,)
                left = deadlines.remaining()
                if left is not None:
                    # The lock is held, idle in its transaction, across the Stripe call: the
                    # server may end the session only once the step's own deadline has passed.
                    idle_ms = str(int((max(left, 0) + 5) * 1000))
                    sql = (
                        "BEGIN; SELECT set_config('idle_in_transaction_session_timeout', %s,"
                        f" true), {take}(hashtextextended(%s, 0))"
                    )
                    params = (idle_ms, key)
                try:
                    cursor = ClientCursor(conn).execute(sql, params)
                    cursor.nextset()  # past BEGIN's result, to the SELECT's row
                    row = cursor.fetchone()
                    # pg_advisory_xact_lock returns void (None): it returned, so it is held.
                    yield True if wait else bool(row and row[-1])
                except BaseException:
                    if not conn.broken:
                        conn.rollback()
                    raise
                conn.commit()
            return
        with self._guard:
            lock = self._local_locks.setdefault(key, threading.Lock())
        acquired = lock.acquire(blocking=wait)
        try:
            yield acquired
        finally:
            if acquired:
                lock.release()

    def close(self) -> None:
        if self._lock_pool is not None:
            self._lock_pool.close()
        self.ledger.close()
        datastore: Any = getattr(self.view, "datastore", None)
        if datastore is not None:
            datastore.close()


def build_context(settings: Settings | None = None) -> Context:
    from adapters.bootstrap import bootstrap, read_model, stripe_gateway

    settings = settings or Settings()
    return Context(
        settings,
        bootstrap(settings, role="worker"),
        read_model(settings, role="worker"),
        stripe_gateway(settings),
    )


# Schedules: when a payout is due is the ledger's policy (``ledger.payout_policy``).
payout_due = payout_policy.payout_due
payout_id_for = payout_policy.payout_id_for


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
            unreconciled_minor=_unreconciled(ctx, account_id, currency),
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


def _unreconciled(ctx: Context, account_id: str, currency: str) -> int:
    """What open breaks credited to this balance from its clearing book (the clearing book is
    negative by that much): held back from payouts until reconcile resolves them."""
    from projections.reconciliation import clearing_books

    return max(0, -clearing_books(ctx.view, account_id).get((account_id, currency), 0))


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


def _at_stripe(ctx: Context, payout: Any) -> str:
    """The payout's ``po_`` id: found at Stripe when its key may have expired, else created
    (same Idempotency-Key: a retry gets the first one back). Raises TransientError (retry
    class) or GatewayError (hold or refuse)."""
    requested = _requested_at(payout)
    if requested is not None and ctx.ledger.clock() - requested > STRIPE_KEY_SAFE_AGE:
        found: str | None = _transient(lambda: _find_at_stripe(ctx, payout))
        if found is not None:
            return found
    created = _transient(
        lambda: ctx.gateway.create_payout(
            account=payout.account_id,
            amount=payout.amount_minor,
            currency=payout.currency,
            idempotency_key=payout.payout_id,
            metadata={SLUICE_PAYOUT_METADATA_KEY: payout.payout_id},
        )
    )
    return str(created.id)


def _not_taken(ctx: Context, payout: Any, error: GatewayError) -> None:
    """Stripe did not take the payout, and retrying now cannot help (TransientError covers the
    retry class). A hold (a key or permission an operator must fix) records why and keeps the
    funds in transit, to be submitted again by the sweeper; a refusal fails the payout, and its
    funds go back to available instead of staying in transit forever."""
    payout_id = payout.payout_id
    if error.held:
        _transient(
            lambda: ctx.ledger.hold_payout(
                idempotency_key=f"held:{payout_id}:{payout.hold_count + 1}",
                payout_id=payout_id,
                reason_code=error.reason_code,
                message=error.reason_message,
            )
        )
        log.error("Stripe did not take payout %s (held, fix and it resumes): %s", payout_id, error)
        return
    ctx.ledger.fail_payout(
        idempotency_key=f"refused:{payout_id}",
        payout_id=payout_id,
        failure_code=_failure_code(error),
    )
    log.warning("Stripe refused payout %s: %s", payout_id, error)


def _stripe_initiated(ctx: Context, payout_id: str) -> bool:
    """Whether the fold recorded this payout as one Stripe made on its own (an automatic
    payout: its command is keyed by Stripe's ``po_`` id). A ``sl_`` id is Sluice's own, which
    Stripe never mints, so no such command can exist: the ledger read (10% of a submission's
    CPU in the workers bench) is skipped for it."""
    if is_sluice_id(payout_id):
        return False
    return ctx.ledger.has_command(f"stripe:payout:{payout_id}")


def submit_payout_body(ctx: Context, payout_id: str) -> str | None:
    """Creates the payout at Stripe and records its ``po_`` id, exactly once: duplicates wait on
    the payout's advisory lock; a crash between the two steps is repaired by the retry, which
    gets the same payout back from Stripe (same Idempotency-Key) and records it."""
    # One lock per payout whichever form of its id the message names (a payout requested before
    # the sl_ brand is found by both): Stripe's key is the stored id (``_at_stripe``).
    with ctx.advisory_lock(f"sluice:payout:{unbranded(payout_id)}"):
        payout = ctx.ledger.get_payout(payout_id)
        if payout is None:
            raise PayoutNotFoundError(f"payout {payout_id} not found", param="payout_id")
        if payout.stripe_payout_id is not None:
            return str(payout.stripe_payout_id)
        if payout.status not in (PENDING_STATUS, HELD):
            return None  # canceled or failed before it was submitted: nothing to send
        if _stripe_initiated(ctx, payout_id):
            return None  # Stripe initiated it (automatic payout): folded, never re-created
        try:
            stripe_id = _at_stripe(ctx, payout)
        except GatewayError as refused:
            _not_taken(ctx, payout, refused)
            return None
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
    held_retried: list[str] = field(default_factory=list)  # held payouts submitted again
    routings_retried: list[str] = field(default_factory=list)  # payments of held routings


def hold_retry_after(holds: int) -> timedelta:
    """How long after its latest held attempt a held payout or routing is tried again."""
    doublings = min(max(holds - 1, 0), HOLD_RETRY_DOUBLINGS_MAX)
    return min(HOLD_RETRY_BASE * (1 << doublings), HOLD_RETRY_MAX)


def sweep_body(
    ctx: Context,
    enqueue_submit: Callable[[str], None],
    enqueue_inbox: Callable[[], None],
    older_than: timedelta = SWEEP_PENDING_AFTER,
    enqueue_route: Callable[[str], None] | None = None,
) -> SweepReport:
    """The safety net for lost, expired or dead-lettered messages: pending payouts never
    submitted to Stripe are submitted again; held payouts and held routings are tried again
    once their backoff passed (``hold_retry_after``); due webhook events get a fold pass."""
    now = ctx.ledger.clock()
    candidates = queries.pending_payouts_before(ctx.view, now - older_than, SWEEP_BATCH_MAX)
    resubmitted = []
    for payout_id in candidates:
        payout = ctx.ledger.get_payout(payout_id)
        if payout is None or payout.status != PENDING_STATUS or payout.stripe_payout_id:
            continue
        if _stripe_initiated(ctx, payout_id):
            continue
        enqueue_submit(payout_id)
        resubmitted.append(payout_id)
    report = SweepReport(resubmitted, bool(inbox.due(ctx.view, 1)))
    report.held_retried = _retry_held_payouts(ctx, now, enqueue_submit)
    if enqueue_route is not None:
        report.routings_retried = _retry_held_routings(ctx, now, enqueue_route)
    if report.inbox_due:
        enqueue_inbox()
    return report


def _retry_held_payouts(
    ctx: Context, now: datetime, enqueue_submit: Callable[[str], None]
) -> list[str]:
    retried = []
    for payout_id in queries.held_payouts(ctx.view, SWEEP_BATCH_MAX):
        payout = ctx.ledger.get_payout(payout_id)
        if payout is None or payout.status != HELD or payout.stripe_payout_id:
            continue  # the read model lags the ledger: the payout moved on already
        held_at = payout.held_at
        if held_at is None or now >= held_at + hold_retry_after(payout.hold_count):
            enqueue_submit(payout_id)
            retried.append(payout_id)
    return retried


def _retry_held_routings(
    ctx: Context, now: datetime, enqueue_route: Callable[[str], None]
) -> list[str]:
    retried = []
    for row in queries.held_routings(ctx.view, SWEEP_BATCH_MAX):
        payment = ctx.ledger.get_payment(row["payment"])
        hold = payment.routing_held if payment is not None else None
        if hold is None:
            continue  # resumed since the read model saw it
        if now >= hold["held_at"] + hold_retry_after(int(hold["holds"])):
            enqueue_route(row["payment"])
            retried.append(row["payment"])
    return retried


def pay_out_by_schedule(ctx: Context, now: datetime) -> list[str]:
    """Today's payout slot for every connected balance, in-process (what the scheduler, the
    evaluate and submit actors and the relay do through the broker): each account's schedule,
    minimum and bank status decide; Stripe gets each payout once. Returns the payout ids."""
    slot = now.astimezone(UTC).date().isoformat()
    paid = []
    # From the ledger, not the read models: the demo catches those up only at its end.
    opened = (e for _, e in ctx.ledger.iter_events() if isinstance(e, Balance.Opened))
    for account_id, currency in sorted({(e.account_id, e.currency) for e in opened}):
        if account_id == ctx.settings.platform_account_id:
            continue
        payout_id = evaluate_payout_body(ctx, account_id, currency, slot)
        if payout_id is not None:
            submit_payout_body(ctx, payout_id)
            paid.append(payout_id)
    return paid


def sync_accounts_body(ctx: Context) -> list[str]:
    """Opens the connected accounts Stripe lists and the ledger does not know yet (created at
    Stripe after the import, with no event Sluice folded): the scheduler calls it now and then.
    One pass over ``GET /v1/accounts`` (bounded by the gateway); returns the ids opened."""
    from adapters.stripe.importer import sync_accounts

    opened: list[str] = _transient(lambda: sync_accounts(ctx.ledger, ctx.gateway, ctx.settings))
    if opened:
        log.info("opened %d connected account(s) found at Stripe: %s", len(opened), opened)
    return opened


def reconcile_body(ctx: Context) -> dict[str, int]:
    """One reconciliation pass (``adapters.reconcile``): Stripe's balance transactions since
    each account's cursor beside the ledger, lost webhooks repaired through the fold, every
    difference recorded as a named break. Skipped while another pass holds the lock."""
    from adapters.reconcile import Reconciler

    with ctx.advisory_lock("sluice:reconcile", wait=False) as held:
        if not held:
            return {"skipped": 1}
        # Routing plans a refetched charge records are carried out by route_payment (the relay).
        folder = Folder(ctx.ledger, ctx.gateway, ctx.settings, route_inline=False)
        report = _transient(
            lambda: Reconciler(ctx.ledger, ctx.view, ctx.gateway, ctx.settings, folder=folder).run()
        )
    return {
        "checked": report.checked,
        "found": sum(report.found.values()),
        "repaired": report.repaired,
        "resolved": report.resolved,
        "open": sum(report.open.values()),
    }
