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
    account: Annotated[str, typer.Option(help="the account's id, acct_…")],
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="effective by: ISO 8601 or unix seconds")
    ] = None,
    recorded_as_of: Annotated[
        str | None,
        typer.Option("--recorded-as-of", help="recorded by: ISO 8601 or unix seconds"),
    ] = None,
    output_format: Annotated[
        str, typer.Option("--format", help="table (default) or json (the HTTP API's shape)")
    ] = "table",
    database_url: DatabaseUrl = None,
) -> None:
    """Balances and every movement behind them, from the events alone."""
    from adapters.cli.progress import progress
    from adapters.export import to_json
    from projections.audit import replay

    if output_format not in ("table", "json"):
        console.print(f"[red]error[/] --format: table or json, not {output_format!r}")
        raise typer.Exit(2)
    settings = _settings(database_url)
    ledger = bootstrap(settings)
    head = int(ledger.recorder.max_notification_id() or 0)
    with progress(f"replaying {account}", head) as update:
        result = replay(
            ledger,
            account,
            as_of=_instant(as_of, "--as-of"),
            recorded_as_of=_instant(recorded_as_of, "--recorded-as-of"),
            on_progress=update,
        )
    if output_format == "json":
        print(to_json(result.as_dict()))
        return
    console.print(
        _money_table(
            f"Movements of {account}",
            ["position", "id", "effective", "kind", "book", "currency", "amount"],
            [
                [
                    str(m["position"]),
                    m["id"],
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
    from adapters.cli.progress import on_terminal, progress
    from adapters.verify import DIFFERENCES_SHOWN_MAX, verify

    settings, ledger, view = _open(database_url)
    head = int(ledger.recorder.max_notification_id() or 0)
    with progress("rebuilding in scratch", head, enabled=on_terminal()) as update:
        positions, differences = verify(
            ledger,
            view,
            settings,
            on_progress=lambda phase, n: update(n) if phase == "rebuild" else None,
        )
    for name, position in positions.items():
        console.print(f"{name}: compared at position {position}")
    for difference in differences[:DIFFERENCES_SHOWN_MAX]:
        console.print(f"[red]difference[/] {difference.projection}: {difference.describe()}")
    if differences:
        console.print(f"[red]{len(differences)} difference(s)[/]")
        raise typer.Exit(1)
    console.print("read models equal a replay of the events: yes")
