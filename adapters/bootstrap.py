"""The composition root: builds the production object graph with overridable parts."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from adapters.audit_log import AUDIT_DDL
from adapters.keys import KEYS_DDL
from adapters.persistence import (
    ensure_postgres_schema,
    guard_postgres,
    ledger_env,
    postgres_absence_probe,
)
from adapters.settings import Settings
from adapters.sql_store import open_read_model
from adapters.stripe.gateway import StripeClientGateway
from adapters.stripe.inbox import INBOX_DDL
from ledger.application import Clock, Ledger
from projections.projections import ALL_DDL
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
    return ledger


def read_model(
    settings: Settings | None = None, *, create_tables: bool = False, role: str = "admin"
) -> ReadModel:
    """The projections' store, beside the events (same schema or SQLite file)."""
    settings = settings or Settings()
    view = open_read_model(
        ledger_env(settings, create_tables=create_tables, role=role),
        (*ALL_DDL, *KEYS_DDL, *INBOX_DDL, *AUDIT_DDL),
    )
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


def init_database(settings: Settings | None = None) -> None:
    """Creates the event store's and the read models' tables (idempotent)."""
    settings = settings or Settings()
    bootstrap(settings, create_tables=True).close()
    if not settings.database_url.startswith("memory://"):
        read_model(settings, create_tables=True)


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


def follow_log(projector: Projector, stop: threading.Event, step_s: float) -> None:
    """Runs ``projector`` until ``stop``, in steps of a few batches per read model, each under a
    deadline of ``step_s``; a failed step (the store restarting, stalled or away) is retried
    after a pause. Each batch commits with its position, so a failed step loses nothing."""
    from adapters import deadlines
    from projections.runner import POLL_INTERVAL_S

    while not stop.is_set():
        try:
            applied = 0
            for name in projector.projections:
                with deadlines.within(step_s):
                    applied += projector.catch_up(name, max_batches=FOLLOW_STEP_BATCHES)
            if not applied:
                stop.wait(POLL_INTERVAL_S)
        except Exception as error:  # any store failure: the loop is the retry
            log.warning("projector step failed (%s); retrying in %.0f s", error, FOLLOW_RETRY_S)
            stop.wait(FOLLOW_RETRY_S)
