"""What every `sluice` command shares: the console, the --database-url option, opening the
configured store, parsing instants and periods, and the money tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from adapters.bootstrap import bootstrap
from adapters.settings import Settings
from ledger.instants import from_seconds

console = Console()

DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="Overrides SLUICE_DATABASE_URL")
]

MONEY_COLUMNS = {
    "amount",
    "fee",
    "net",
    "pending",
    "available",
    "reserved",
    "collected",
    "refunded",
    "opening",
    "closing",
}


def _settings(database_url: str | None) -> Settings:
    return Settings(database_url=database_url) if database_url else Settings()


def _open(database_url: str | None) -> tuple[Settings, Any, Any]:
    from adapters.bootstrap import read_model

    settings = _settings(database_url)
    return settings, bootstrap(settings), read_model(settings)


def _instant(text: str | None, param: str) -> datetime | None:
    """ISO 8601 (date or datetime, UTC if no offset) or unix seconds."""
    if text is None:
        return None
    try:
        if text.isdigit():
            return from_seconds(int(text))
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{param}: use ISO 8601 or unix seconds, got {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _period(start: str | None, end: str | None) -> tuple[int, int]:
    lo = _instant(start, "--from") or datetime(1970, 1, 1, tzinfo=UTC)
    hi = _instant(end, "--to") or datetime(9999, 1, 1, tzinfo=UTC)
    return int(lo.timestamp()), int(hi.timestamp())


def _day(seconds: int | None) -> str:
    return "" if seconds is None else from_seconds(seconds).strftime("%Y-%m-%d %H:%M")


def _money_table(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column in MONEY_COLUMNS else "left")
    for row in rows:
        table.add_row(*row)
    return table
