"""`sluice audit`, for an auditor: balances replayed from the events alone, and every read
model checked against a replay."""

from __future__ import annotations

from typing import Annotated

import typer

from adapters.bootstrap import bootstrap
from adapters.cli.common import DatabaseUrl, _day, _instant, _money_table, _open, _settings, console
from ledger.money import format_minor

audit_app = typer.Typer(
    no_args_is_help=True, help="Auditor tools: replay, verify, checkpoints and proofs"
)


@audit_app.command("replay")
def audit_replay(
    account: Annotated[str, typer.Option()],
    as_of: Annotated[str | None, typer.Option("--as-of")] = None,
    recorded_as_of: Annotated[str | None, typer.Option("--recorded-as-of")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Balances and every movement behind them, from the events alone."""
    from projections.audit import replay

    settings = _settings(database_url)
    ledger = bootstrap(settings)
    result = replay(
        ledger,
        account,
        as_of=_instant(as_of, "--as-of"),
        recorded_as_of=_instant(recorded_as_of, "--recorded-as-of"),
    )
    console.print(
        _money_table(
            f"Movements of {account}",
            ["position", "effective", "kind", "book", "currency", "amount"],
            [
                [
                    str(m["position"]),
                    _day(m["effective_at"]),
                    m["kind"],
                    m["book"],
                    m["currency"],
                    format_minor(m["amount"], m["currency"]),
                ]
                for m in result.movements
            ],
        )
    )
    console.print(
        _money_table(
            f"Balances of {account} as of {as_of or 'now'}"
            + (f", as recorded by {recorded_as_of}" if recorded_as_of else ""),
            ["currency", "pending", "available", "reserved"],
            [
                [cur, *(format_minor(books[b], cur) for b in ("pending", "available", "reserved"))]
                for cur, books in sorted(result.balances.items())
            ],
        )
    )


@audit_app.command("verify")
def audit_verify(database_url: DatabaseUrl = None) -> None:
    """Rebuild every read model into a scratch store and diff it with the live one."""
    from adapters.verify import DIFFERENCES_SHOWN_MAX, verify

    settings, ledger, view = _open(database_url)
    positions, differences = verify(ledger, view, settings)
    for name, position in positions.items():
        console.print(f"{name}: compared at position {position}")
    for difference in differences[:DIFFERENCES_SHOWN_MAX]:
        console.print(f"[red]difference[/] {difference.projection}: {difference.describe()}")
    if differences:
        console.print(f"[red]{len(differences)} difference(s)[/]")
        raise typer.Exit(1)
    console.print("read models equal a replay of the events: yes")
