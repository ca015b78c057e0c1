"""The composition root: builds the production object graph with overridable parts."""

from __future__ import annotations

from datetime import UTC, datetime

from adapters.persistence import ensure_postgres_schema, ledger_env, postgres_absence_probe
from adapters.settings import Settings
from ledger.application import Clock, Ledger


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


def init_database(settings: Settings | None = None) -> None:
    """Creates the event store's tables (idempotent)."""
    bootstrap(settings, create_tables=True).close()
