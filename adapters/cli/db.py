"""`sluice db`: database maintenance, for whoever deploys Sluice: apply the versioned migrations
(``migrations/``) and show where a store stands."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.table import Table

from adapters.cli.common import DatabaseUrl, _settings, console
from adapters.persistence import describe
from adapters.settings import Settings

db_app = typer.Typer(no_args_is_help=True, help="Database maintenance: migrate, status")


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _migrate(settings: Settings) -> None:
    import psycopg

    from adapters import schema
    from adapters.bootstrap import init_database

    try:
        applied = init_database(settings)
    except schema.SchemaError as error:
        _fail(str(error))
    except psycopg.OperationalError as error:
        _fail(f"cannot reach {describe(settings.database_url)}: {_first_line(error)}")
    where = describe(settings.database_url)
    if applied:
        console.print(f"applied {', '.join(applied)} at {where}", soft_wrap=True)
    else:
        console.print(f"nothing to apply at {where}: the schema is current", soft_wrap=True)


@db_app.command("migrate")
def db_migrate(database_url: DatabaseUrl = None) -> None:
    """Create eventsourcing's tables and apply pending migrations (safe to run again; a second
    migrator waits for the first)."""
    _migrate(_settings(database_url))


@db_app.command("init")
def db_init(database_url: DatabaseUrl = None) -> None:
    """Same as `db migrate` (kept for scripts written before migrations)."""
    _migrate(_settings(database_url))


@db_app.command("status")
def db_status(database_url: DatabaseUrl = None) -> None:
    """The store's dialect, each migration applied or pending, and eventsourcing's tables.
    Exits 1 while migrations are pending (for scripts and probes)."""
    import psycopg

    from adapters import schema

    settings = _settings(database_url)
    try:
        found = schema.status(settings)
    except schema.SchemaError as error:
        _fail(str(error))
    except psycopg.OperationalError as error:
        _fail(f"cannot reach {describe(settings.database_url)}: {_first_line(error)}")
    console.print(f"{describe(settings.database_url)} ({found.dialect})", soft_wrap=True)
    table = Table(title="Migrations")
    table.add_column("migration")
    table.add_column("state")
    table.add_column("applied (UTC)")
    for state in found.migrations:
        table.add_row(
            state.id, "pending" if state.applied_at is None else "applied", state.applied_at or ""
        )
    console.print(table)
    tables = ", ".join(
        f"{t} {'present' if ok else 'missing'}" for t, ok in found.eventsourcing_tables.items()
    )
    console.print(f"eventsourcing tables: {tables}", soft_wrap=True)
    if found.pending:
        console.print(f"{len(found.pending)} pending: run `sluice db migrate`")
        raise typer.Exit(1)
    console.print("schema current")
