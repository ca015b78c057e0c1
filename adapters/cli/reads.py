"""What finance asks of the read models: balances, balance transactions, payouts, fee revenue
(`sluice balance|transactions|payouts|revenue`), and `sluice export` as CSV or JSON."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from adapters.cli.common import DatabaseUrl, _day, _money_table, _open, _period, console
from ledger.money import format_minor

commands = typer.Typer()
export_app = typer.Typer(no_args_is_help=True, help="Exports as CSV or JSON")


@commands.command("balance")
def balance_cmd(account: str, database_url: DatabaseUrl = None) -> None:
    """Pending, available and reserved funds of an account (from the balances read model)."""
    from projections import queries

    _, _, view = _open(database_url)
    result = queries.balance(view, account)
    rows = [
        [
            a["currency"],
            format_minor(p["amount"], p["currency"]),
            format_minor(a["amount"], a["currency"]),
            format_minor(r["amount"], r["currency"]),
        ]
        for a, p, r in zip(result["available"], result["pending"], result["reserved"], strict=True)
    ]
    console.print(
        _money_table(
            f"Balance of {account}", ["currency", "pending", "available", "reserved"], rows
        )
    )


def _all_pages(fetch: Any) -> list[dict[str, Any]]:
    """Follows ``starting_after`` to the end, within EXPORT_ROWS_MAX rows."""
    from projections.queries import EXPORT_ROWS_MAX, LIST_LIMIT_MAX

    rows: list[dict[str, Any]] = []
    after = None
    while len(rows) < EXPORT_ROWS_MAX:
        page = fetch(limit=LIST_LIMIT_MAX, starting_after=after)
        rows += page.data
        if not page.has_more:
            break
        after = page.data[-1]["id"]
    return rows


@commands.command("transactions")
def transactions_cmd(
    account: str,
    start: Annotated[str | None, typer.Option("--from")] = None,
    end: Annotated[str | None, typer.Option("--to")] = None,
    currency: str | None = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Balance transactions of an account, newest first."""
    from projections import queries

    _, _, view = _open(database_url)
    lo, hi = _period(start, end)
    rows = _all_pages(
        lambda **kw: queries.list_balance_transactions(
            view, account=account, currency=currency, created_gte=lo, created_lt=hi, **kw
        )
    )
    console.print(
        _money_table(
            f"Balance transactions of {account}",
            ["id", "created", "type", "currency", "amount", "fee", "net", "status", "source"],
            [
                [
                    r["id"],
                    _day(r["created"]),
                    r["type"],
                    r["currency"],
                    format_minor(r["amount"], r["currency"]),
                    format_minor(r["fee"], r["currency"]),
                    format_minor(r["net"], r["currency"]),
                    r["status"],
                    r["source"],
                ]
                for r in rows
            ],
        )
    )


@commands.command("payouts")
def payouts_cmd(
    account: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option()] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Payouts with their status and failure codes."""
    from projections import queries

    _, _, view = _open(database_url)
    rows = _all_pages(lambda **kw: queries.list_payouts(view, account=account, status=status, **kw))
    console.print(
        _money_table(
            "Payouts",
            ["id", "account", "created", "currency", "amount", "status", "failure"],
            [
                [
                    r["id"],
                    r["account"],
                    _day(r["created"]),
                    r["currency"],
                    format_minor(r["amount"], r["currency"]),
                    r["status"],
                    r["failure_code"] or "",
                ]
                for r in rows
            ],
        )
    )


@commands.command("revenue")
def revenue_cmd(
    start: Annotated[str, typer.Option("--from", help="first day, YYYY-MM-DD")],
    end: Annotated[str, typer.Option("--to", help="day after the last, YYYY-MM-DD")],
    database_url: DatabaseUrl = None,
) -> None:
    """Platform fee revenue by day and currency."""
    from projections import queries

    _, _, view = _open(database_url)
    rows = queries.revenue(view, start, end)
    console.print(
        _money_table(
            f"Fee revenue {start} to {end}",
            ["day", "currency", "collected", "refunded", "net"],
            [
                [
                    r["day"],
                    r["currency"],
                    format_minor(r["application_fees"], r["currency"]),
                    format_minor(r["application_fee_refunds"], r["currency"]),
                    format_minor(r["net"], r["currency"]),
                ]
                for r in rows
            ],
        )
    )


Format = Annotated[str, typer.Option("--format", help="csv or json")]
Output = Annotated[str | None, typer.Option("--output", "-o", help="file (default: stdout)")]


def _emit(rows: Any, fmt: str, output: str | None) -> None:
    from adapters.export import to_csv, to_json

    if fmt not in ("csv", "json"):
        raise typer.BadParameter("--format is csv or json")
    text = to_csv(rows) if fmt == "csv" else to_json(rows)
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)


@export_app.command("balance-transactions")
def export_bts(
    account: Annotated[str | None, typer.Option()] = None,
    start: Annotated[str | None, typer.Option("--from")] = None,
    end: Annotated[str | None, typer.Option("--to")] = None,
    fmt: Format = "csv",
    output: Output = None,
    database_url: DatabaseUrl = None,
) -> None:
    from projections import queries

    _, _, view = _open(database_url)
    lo, hi = _period(start, end)
    _emit(
        _all_pages(
            lambda **kw: queries.list_balance_transactions(
                view, account=account, created_gte=lo, created_lt=hi, **kw
            )
        ),
        fmt,
        output,
    )


@export_app.command("payouts")
def export_payouts(
    account: Annotated[str | None, typer.Option()] = None,
    fmt: Format = "csv",
    output: Output = None,
    database_url: DatabaseUrl = None,
) -> None:
    from projections import queries

    _, _, view = _open(database_url)
    _emit(_all_pages(lambda **kw: queries.list_payouts(view, account=account, **kw)), fmt, output)


@export_app.command("statement")
def export_statement(
    account: Annotated[str, typer.Option()],
    currency: Annotated[str, typer.Option()],
    start: Annotated[str | None, typer.Option("--from")] = None,
    end: Annotated[str | None, typer.Option("--to")] = None,
    fmt: Format = "csv",
    output: Output = None,
    database_url: DatabaseUrl = None,
) -> None:
    """A statement: opening balance, movements, closing balance (CSV: the movements)."""
    from projections import queries

    _, _, view = _open(database_url)
    lo, hi = _period(start, end)
    result = queries.statement(view, account, currency, lo, hi)
    _emit(result["movements"] if fmt == "csv" else result, fmt, output)
