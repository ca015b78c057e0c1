"""What every `sluice` command shares: the console, the --database-url option, opening the
configured store, parsing instants and periods, and the money tables."""

from __future__ import annotations

import re
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


# Columns never cut (instants); every other text column folds onto a second line rather than
# ending in "…", so an id stays whole and copyable at 100 columns.
UNBROKEN_COLUMNS = {"created", "requested", "day", "updated", "currency"}


def _money_table(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title)
    for column in columns:
        if column in MONEY_COLUMNS:
            table.add_column(column, justify="right", no_wrap=True)
        elif column in UNBROKEN_COLUMNS:
            table.add_column(column, no_wrap=True)
        else:
            table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def _day_text(text: str | None, param: str) -> str | None:
    """A day for day-based queries: ISO 8601 (a date or a datetime) or unix seconds, as the
    UTC day ``YYYY-MM-DD``; anything else is refused with one line."""
    instant = _instant(text, param)
    return None if instant is None else instant.astimezone(UTC).date().isoformat()


def _require_account(ledger: Any, account: str | None, param: str = "account") -> None:
    """Unknown accounts are an error (exit 2, one line), never an empty table."""
    from ledger.errors import AccountNotFoundError

    if account is not None and ledger.get_account(account) is None:
        raise AccountNotFoundError(f"no such account: {account}", param=param)


# Operational errors: what went wrong, and the fix, in one line (adapters.cli.main prints it).
_NO_SCHEMA = ("no such table", "does not exist", "undefinedtable", "no such column")
_NO_DATABASE = (
    "couldn't get a connection",
    "connection refused",
    "connection failed",
    "unable to open database file",
    "could not connect",
    "could not translate host name",
)


def operational_problem(error: BaseException) -> str | None:
    """One line naming an operational failure (no database, no schema, no broker) and its fix;
    None for anything else (a bug: its traceback is worth seeing)."""
    settings_hint = "SLUICE_DATABASE_URL or --database-url"
    chain, seen = [], error
    for _ in range(8):  # the exception and its causes, a few deep
        chain.append(seen)
        if seen.__cause__ is None and seen.__context__ is None:
            break
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    text = " | ".join(f"{type(e).__module__}.{type(e).__name__}: {e}" for e in chain).lower()
    # The broker first: its errors say "connection refused" too.
    if any(name in text for name in ("pika.exceptions", "redis.exceptions", "dramatiq.errors")):
        return (
            "cannot reach the message broker: start RabbitMQ or Redis (docker compose up -d) or"
            " check SLUICE_BROKER_URL"
        )
    if re.search(r'database "[^"]*" does not exist', text):
        return f"the database does not exist: create it (createdb) or check {settings_hint}"
    if any(word in text for word in _NO_SCHEMA) and ("sqlite" in text or "psycopg" in text):
        return "the database has no Sluice schema (or an older one): run `sluice db migrate`"
    if any(word in text for word in _NO_DATABASE):
        return (
            f"cannot reach the database: start it (docker compose up -d) or check {settings_hint}"
        )
    return None
