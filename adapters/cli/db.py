"""`sluice db`: database maintenance, for whoever deploys Sluice."""

from __future__ import annotations

import typer

from adapters.bootstrap import init_database
from adapters.cli.common import DatabaseUrl, _settings, console
from adapters.persistence import describe

db_app = typer.Typer(no_args_is_help=True, help="Database maintenance")


@db_app.command("init")
def db_init(database_url: DatabaseUrl = None) -> None:
    """Create the event store's tables (safe to run again)."""
    settings = _settings(database_url)
    init_database(settings)
    console.print(f"event store ready at {describe(settings.database_url)}")
