"""The composition root: builds the production object graph with overridable parts."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.locks import LockSession, StoreLock
from adapters.persistence import (
    PostgresWriterLock,
    ensure_postgres_schema,
    guard_postgres,
    ledger_env,
    postgres_absence_probe,
    postgres_page_reader,
    postgres_version_probe,
    take_turns,
)
from adapters.settings import Settings
from adapters.sql_store import open_read_model
from adapters.stripe.gateway import StripeClientGateway
from ledger.application import Clock, Ledger
from projections.runner import Projector
from projections.store import ReadModel

log = logging.getLogger("sluice")

FOLLOW_STEP_BATCHES = 20  # one step of a following projector: at most 20 batches per model
FOLLOW_RETRY_S = 1.0  # pause after a failed step (the store restarting or stalled)


def system_clock() -> datetime:
    return datetime.now(UTC)


def bootstrap(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    create_tables: bool = False,
    role: str = "admin",
) -> Ledger:
    """The Ledger on the configured store. Only ``sluice db init`` passes ``create_tables``.
    ``role`` picks the connections' timeouts (api, worker, projector, admin: see Settings)."""
    settings = settings or Settings()
    if create_tables and settings.database_url.startswith(("postgres://", "postgresql://")):
        ensure_postgres_schema(settings.database_url)
    ledger = Ledger(
        env=ledger_env(settings, create_tables=create_tables, role=role),
        clock=clock or system_clock,
        platform_account_id=settings.platform_account_id,
    )
    guard_postgres(getattr(ledger.recorder, "datastore", None), settings, role)
    if hasattr(ledger.recorder, "events_table_name") and hasattr(
        getattr(ledger.recorder, "datastore", None), "schema"
    ):
        ledger.absence_probe = postgres_absence_probe(ledger.recorder)
        ledger.version_probe = postgres_version_probe(ledger.recorder)
        ledger.page_reader = postgres_page_reader(ledger.recorder)
        ledger.writer_lock = PostgresWriterLock(
            settings.database_url.split("?", 1)[0],
            ledger.recorder.datastore.schema,
            settings,
            role,
        )
        take_turns(ledger.recorder, ledger.writer_lock)
        ledger.head_checks = True
    return ledger


def read_model(
    settings: Settings | None = None, *, create_tables: bool = False, role: str = "admin"
) -> ReadModel:
    """The projections' store, beside the events (same schema or SQLite file). Its tables come
    from the migrations: ``create_tables`` applies the pending ones first (``init_database``)."""
    settings = settings or Settings()
    if create_tables:
        init_database(settings)
    view = open_read_model(ledger_env(settings, create_tables=False, role=role), ())
    guard_postgres(getattr(view, "datastore", None), settings, role)
    return view


def projector(
    ledger: Ledger,
    settings: Settings | None = None,
    names: list[str] | None = None,
    *,
    role: str = "projector",
) -> Projector:
    return Projector(ledger, read_model(settings, role=role), names)


def stripe_gateway(settings: Settings | None = None) -> StripeClientGateway:
    settings = settings or Settings()
    return StripeClientGateway(
        settings.stripe_api_key,
        api_base=settings.stripe_api_base,
        timeout_s=settings.stripe_timeout_s,
        max_network_retries=settings.stripe_max_network_retries,
    )


def init_database(
    settings: Settings | None = None, *, extra_migrations: Sequence[Path] = ()
) -> list[str]:
    """Creates eventsourcing's tables and applies the pending migrations of Sluice's own
    (``migrations/``), under the store's migration lock; idempotent. Returns the ids applied.
    Everything it opens it closes (each PostgreSQL pool holds connections until closed)."""
    from adapters import schema

    settings = settings or Settings()
    if settings.database_url.startswith("memory://"):
        bootstrap(settings, create_tables=True).close()
        return []
    if settings.database_url.startswith(("postgres://", "postgresql://")):
        ensure_postgres_schema(settings.database_url)
    with schema.migration_lock(settings):
        bootstrap(settings, create_tables=True).close()
        # The read models' tracking table is eventsourcing's: its recorder creates it.
        tracking = open_read_model(ledger_env(settings, create_tables=True), ())
        tracking.datastore.close()  # type: ignore[attr-defined]
        return schema.apply_pending(settings, extra_migrations)


def message_broker(url: str | None = None) -> Any:
    """The dramatiq broker at ``url`` (default ``SLUICE_BROKER_URL``, else RabbitMQ on
    localhost): ``amqp://`` → RabbitMQ with publisher confirms, ``redis://`` → Redis,
    ``stub://`` → the in-memory StubBroker (tests, embedded mode)."""
    url = url or Settings().broker_url
    if url.startswith(("amqp://", "amqps://")):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=url, confirm_delivery=True)
    if url.startswith(("redis://", "rediss://")):
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=url)
    if url.startswith("stub://"):
        from dramatiq.brokers.stub import StubBroker

        return StubBroker()
    raise ValueError(f"unsupported broker URL {url!r}: use amqp://, redis:// or stub://")


def projector_locks(settings: Settings, names: Sequence[str]) -> dict[str, StoreLock]:
    """One store lock per read model (``projector:<name>``), not yet taken; on PostgreSQL they
    share one session (one connection per projector, however many read models)."""
    session = LockSession(settings, "projector")
    return {
        name: StoreLock(settings, f"projector:{name}", role="projector", session=session)
        for name in names
    }


def _held(locks: Mapping[str, StoreLock]) -> list[str]:
    """The read models whose lock this process holds, re-taking any whose session was lost."""
    names = []
    for name, lock in locks.items():
        if not lock.alive():
            lock.close()
            if not lock.try_acquire():
                continue
            log.info("projector holds the %s lock", name)
        names.append(name)
    return names


def follow_log(
    projector: Projector,
    stop: threading.Event,
    step_s: float,
    after_step: Any = None,
    *,
    locks: Mapping[str, StoreLock] | None = None,
) -> None:
    """Runs ``projector`` until ``stop``, in steps of a few batches per read model, each under a
    deadline of ``step_s``; a failed step (the store restarting, stalled or away) is retried
    after a pause. Each batch commits with its position, so a failed step loses nothing.
    ``after_step`` (a callable, e.g. ``adapters.audit_schedule.ScheduledCheckpoints``) runs
    after each step under the same deadline, off the write path.
    With ``locks`` (``projector_locks``), only the read models whose lock this process holds
    are projected; a lock lost with its session (PostgreSQL restarted) is taken again before
    its read model moves, so two projectors never write one read model. It closes ``locks``
    when it returns."""
    try:
        while not stop.is_set():
            names = list(projector.projections) if locks is None else _held(locks)
            if not names:
                stop.wait(FOLLOW_RETRY_S)  # another projector has them all: standby
                continue
            _follow_step(projector, names, stop, step_s, after_step)
    finally:
        for lock in (locks or {}).values():
            lock.close_session()  # its session ends: a standby projector takes over


def _follow_step(
    projector: Projector, names: list[str], stop: threading.Event, step_s: float, after_step: Any
) -> None:
    from adapters import deadlines
    from projections.runner import POLL_INTERVAL_S

    try:
        applied = 0
        for name in names:
            with deadlines.within(step_s):
                applied += projector.catch_up(name, max_batches=FOLLOW_STEP_BATCHES)
        if after_step is not None:
            with deadlines.within(step_s):
                after_step()
        if not applied:
            stop.wait(POLL_INTERVAL_S)
    except Exception as error:  # any store failure: the loop is the retry
        log.warning("projector step failed (%s); retrying in %.0f s", error, FOLLOW_RETRY_S)
        stop.wait(FOLLOW_RETRY_S)
