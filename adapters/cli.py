"""The `sluice` command line."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from adapters.bootstrap import bootstrap, init_database
from adapters.persistence import DatabaseUrlError, describe
from adapters.settings import Settings
from ledger.errors import SluiceError
from ledger.journal import AVAILABLE, PENDING
from ledger.money import format_minor

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Sluice funds-routing ledger")
db_app = typer.Typer(no_args_is_help=True, help="Database maintenance")
app.add_typer(db_app, name="db")
console = Console()

DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="Overrides SLUICE_DATABASE_URL")
]


def _settings(database_url: str | None) -> Settings:
    return Settings(database_url=database_url) if database_url else Settings()


@db_app.command("init")
def db_init(database_url: DatabaseUrl = None) -> None:
    """Create the event store's tables (safe to run again)."""
    settings = _settings(database_url)
    init_database(settings)
    console.print(f"event store ready at {describe(settings.database_url)}")


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="Makes the scenario deterministic")] = 7,
    database_url: DatabaseUrl = None,
) -> None:
    """Book a small marketplace (payments, refund, dispute, payouts) and print the balances."""
    from adapters.demo import Demo, balance_rows

    settings = _settings(database_url)
    init_database(settings)
    ledger = bootstrap(settings)
    try:
        run = Demo(ledger, seed)
        run.play()
        replayed = sum(r.replayed for r in run.results)
        console.print(
            f"[bold]Sluice demo[/] seed={seed} store={describe(settings.database_url)}: "
            f"{len(run.results)} commands, {len(run.results) - replayed} recorded, "
            f"{replayed} replayed (idempotency keys seen before)"
        )
        table = Table(title="Balances by account and currency")
        for column in ("account", "currency", "pending", "available"):
            table.add_column(
                column, justify="left" if column in ("account", "currency") else "right"
            )
        totals: dict[str, list[int]] = {}
        for owner, currency, pending, available in balance_rows(ledger):
            table.add_row(
                owner, currency, format_minor(pending, currency), format_minor(available, currency)
            )
            total = totals.setdefault(currency, [0, 0])
            total[0] += pending
            total[1] += available
        for currency, (pending, available) in sorted(totals.items()):
            table.add_row(
                "[bold]total[/]",
                currency,
                format_minor(pending, currency),
                format_minor(available, currency),
                style="bold",
            )
        console.print(table)
        per_currency, per_book = ledger.journal_totals()
        mirror_ok = all(
            per_book.get((owner, PENDING, cur), 0) == pending
            and per_book.get((owner, AVAILABLE, cur), 0) == available
            for owner, cur, pending, available in balance_rows(ledger)
        )
        balanced = all(total == 0 for total in per_currency.values())
        sums = ", ".join(f"{cur} {total}" for cur, total in sorted(per_currency.items()))
        console.print(f"sum of all postings per currency: {sums}")
        console.print(f"balances match the journal: {'yes' if mirror_ok else 'no'}")
        print(f"ledger balanced: {'yes' if balanced and mirror_ok else 'no'}")
        if not (balanced and mirror_ok):
            raise typer.Exit(1)
    finally:
        ledger.close()


def main() -> None:
    try:
        app()
    except SluiceError as error:
        console.print(f"[red]error[/] {error.code}: {error.message}")
        sys.exit(2)
    except DatabaseUrlError as error:
        console.print(f"[red]error[/] database_url: {error}")
        sys.exit(2)
