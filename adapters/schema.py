"""Versioned migrations of Sluice's own tables (``migrations/``), applied with yoyo-migrations.

yoyo runs PostgreSQL through psycopg 3 (its ``postgresql+psycopg`` backend) and SQLite through
the standard library, each migration in its own transaction, and records applied ids in
``_yoyo_migration`` beside the tables (the same PostgreSQL schema, or the same SQLite file).

Two migrators never race: ``sluice db migrate`` holds the store's ``migrate`` lock
(``adapters.locks``) around eventsourcing's tables and the migrations; yoyo's own lock table is
not used, since a crashed migrator would leave its row behind until someone broke it by hand.

eventsourcing creates its own tables (events, snapshots, tracking); ``status`` says which exist.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlparse

import migrations
from adapters import locks
from adapters.settings import Settings

MIGRATION_TABLE = "_yoyo_migration"  # yoyo's default; named here for status queries
MIGRATE_WAIT_S = 60.0  # a migrator waits this long for another one (DDL takes seconds)
CONNECT_TIMEOUT_S = 10
# eventsourcing's tables, by dialect (the Ledger application and the read models' tracking).
EVENTSOURCING_TABLES = {
    "postgresql": ("ledger_events", "ledger_snapshots", "readmodel_tracking"),
    "sqlite": ("stored_events", "stored_snapshots", "tracking"),
}


class SchemaError(RuntimeError):
    """The store cannot be migrated as asked (one line, for the CLI)."""


@dataclass(frozen=True)
class MigrationState:
    id: str
    applied_at: str | None  # UTC, as yoyo recorded it; None while pending


@dataclass(frozen=True)
class SchemaStatus:
    dialect: str
    migrations: list[MigrationState]
    eventsourcing_tables: dict[str, bool]

    @property
    def pending(self) -> list[str]:
        return [m.id for m in self.migrations if m.applied_at is None]


def dialect(settings: Settings) -> str:
    if locks.is_postgres(settings.database_url):
        return "postgresql"
    if settings.database_url.startswith("sqlite:///"):
        return "sqlite"
    raise SchemaError("migrations need PostgreSQL or SQLite (memory:// has no tables)")


def sources(settings: Settings, extra: Sequence[Path] = ()) -> list[str]:
    """The migration directories: the dialect's own, then ``extra`` (tests add one)."""
    return [str(migrations.directory(dialect(settings))), *map(str, extra)]


def _yoyo_uri(settings: Settings) -> Any:
    from yoyo.connections import DatabaseURI

    url = settings.database_url
    if dialect(settings) == "sqlite":
        path = locks.sqlite_path(url)
        if path is None:
            raise SchemaError("an in-memory SQLite store has nothing to migrate")
        return DatabaseURI("sqlite", None, None, None, None, path, {})
    parsed = urlparse(url)
    args = dict(parse_qsl(parsed.query))  # libpq options pass through; yoyo pops ``schema``
    args.setdefault("schema", "public")
    args.setdefault("connect_timeout", str(CONNECT_TIMEOUT_S))
    args["application_name"] = "sluice-migrate"
    return DatabaseURI(
        "postgresql+psycopg",
        unquote(parsed.username) if parsed.username else None,
        unquote(parsed.password) if parsed.password else None,
        parsed.hostname,
        parsed.port,
        unquote(parsed.path.lstrip("/")),
        args,
    )


@contextmanager
def _backend(settings: Settings, *, initialise: bool) -> Iterator[Any]:
    """yoyo's backend on the store. ``initialise`` lets yoyo create its tables (it writes)."""
    from yoyo.backends import get_backend_class
    from yoyo.migrations import default_migration_table

    uri = _yoyo_uri(settings)
    backend = get_backend_class(uri.scheme)(uri, default_migration_table)
    try:
        if initialise:
            backend.init_database()
        yield backend
    finally:
        backend.connection.close()


def apply_pending(settings: Settings, extra: Sequence[Path] = ()) -> list[str]:
    """Applies the pending migrations in order; returns their ids. The caller holds the lock."""
    from yoyo import read_migrations

    with _backend(settings, initialise=True) as backend:
        pending = backend.to_apply(read_migrations(*sources(settings, extra)))
        backend.apply_migrations(pending)
        return [m.id for m in pending]


@contextmanager
def migration_lock(settings: Settings, wait_s: float = MIGRATE_WAIT_S) -> Iterator[None]:
    """Held around a migration: a second migrator waits ``wait_s``, then fails saying who."""
    try:
        with locks.held(settings, "migrate", wait_s, what="migration", record=False):
            yield
    except locks.LockBusy as error:
        raise SchemaError(str(error)) from None


def status(settings: Settings, extra: Sequence[Path] = ()) -> SchemaStatus:
    """Applied and pending migrations and eventsourcing's tables; reads only."""
    from yoyo import read_migrations

    name = dialect(settings)
    known = [m.id for m in read_migrations(*sources(settings, extra))]
    with _backend(settings, initialise=False) as backend:
        tables = set(_tables(backend, settings))
        applied: dict[str, str] = {}
        if MIGRATION_TABLE in tables:
            # As text: SQLite's driver would parse the declared TIMESTAMP with its own converter.
            rows = backend.execute(
                f"SELECT migration_id, CAST(applied_at_utc AS TEXT) FROM {MIGRATION_TABLE}"
            ).fetchall()
            applied = {str(r[0]): str(r[1]) for r in rows}
    states = [MigrationState(m, applied.get(m)) for m in known]
    states += [MigrationState(m, at) for m, at in applied.items() if m not in known]
    present = {t: t in tables for t in EVENTSOURCING_TABLES[name]}
    return SchemaStatus(name, states, present)


def _tables(backend: Any, settings: Settings) -> list[str]:
    if dialect(settings) == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
        return [str(r[0]) for r in backend.execute(sql).fetchall()]
    rows = backend.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = :schema",
        {"schema": locks.postgres_schema(settings.database_url)},
    ).fetchall()
    return [str(r[0]) for r in rows]
