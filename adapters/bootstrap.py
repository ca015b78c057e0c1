"""The composition root: builds the production object graph with overridable parts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from adapters.keys import KEYS_DDL
from adapters.persistence import ensure_postgres_schema, ledger_env, postgres_absence_probe
from adapters.settings import Settings
from adapters.stripe.gateway import StripeClientGateway
from adapters.stripe.inbox import INBOX_DDL
from ledger.application import Clock, Ledger
from projections.projections import ALL_DDL
from projections.runner import Projector
from projections.store import ReadModel, open_read_model


def system_clock() -> datetime:
    return datetime.now(UTC)


def bootstrap(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    create_tables: bool = False,
) -> Ledger:
    """The Ledger on the configured store. Only ``sluice db init`` passes ``create_tables``."""
    settings = settings or Settings()
    if create_tables and settings.database_url.startswith(("postgres://", "postgresql://")):
        ensure_postgres_schema(settings.database_url)
    ledger = Ledger(
        env=ledger_env(settings, create_tables=create_tables),
        clock=clock or system_clock,
        platform_account_id=settings.platform_account_id,
    )
    if hasattr(ledger.recorder, "events_table_name") and hasattr(
        getattr(ledger.recorder, "datastore", None), "schema"
    ):
        ledger.absence_probe = postgres_absence_probe(ledger.recorder)
    return ledger


def read_model(settings: Settings | None = None, *, create_tables: bool = False) -> ReadModel:
    """The projections' store, beside the events (same schema or SQLite file)."""
    settings = settings or Settings()
    return open_read_model(
        ledger_env(settings, create_tables=create_tables), (*ALL_DDL, *KEYS_DDL, *INBOX_DDL)
    )


def projector(
    ledger: Ledger, settings: Settings | None = None, names: list[str] | None = None
) -> Projector:
    return Projector(ledger, read_model(settings), names)


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
    import os

    url = url or os.environ.get("SLUICE_BROKER_URL") or "amqp://guest:guest@127.0.0.1:5672/"
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
