"""Finding accounts and reporting on them: `sluice accounts` (search by name, email or metadata,
filter by flags) and `sluice tax-report` (per account and calendar year, for 1099-K-style
filings), from the read models, as a table, CSV or JSON."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from adapters.cli.common import DatabaseUrl, _open, _require_account, console
from adapters.export import to_csv, to_json
from ledger.money import format_minor

commands = typer.Typer()

METADATA = re.compile(r"^([^=\[\]]{1,40})=(.*)$")
ACCOUNTS_SHOWN_MAX = 10_000
Format = Annotated[
    str, typer.Option("--format", help="table (default), csv or json", show_default=False)
]
Output = Annotated[
    Path | None, typer.Option("-o", "--output", help="write to this file instead of the screen")
]


def _metadata(pairs: list[str] | None) -> dict[str, str]:
    found = {}
    for pair in pairs or []:
        match = METADATA.match(pair)
        if match is None:
            raise typer.BadParameter(f"--metadata is key=value, got {pair!r}")
        found[match.group(1)] = match.group(2)
    return found


def _check_format(fmt: str) -> None:
    if fmt not in ("table", "csv", "json"):
        raise typer.BadParameter(f"--format is table, csv or json, got {fmt!r}")


def _table(title: str, columns: list[str], rows: list[list[str]], *, right: int = 0) -> Table:
    """Readable at 100 columns: ids never cut, long text folded, the last ``right`` columns
    (amounts) right-aligned."""
    table = Table(title=title)
    for i, name in enumerate(columns):
        if i == 0:
            table.add_column(name, no_wrap=True)
        elif i >= len(columns) - right:
            table.add_column(name, justify="right", no_wrap=True)
        else:
            table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        console.print(text, end="", markup=False, highlight=False, soft_wrap=True)
    else:
        output.write_text(text)
        console.print(f"wrote {output}")


@commands.command("accounts")
def accounts_cmd(
    search: Annotated[
        str | None, typer.Option(help="text in the name, email, id or metadata (any case)")
    ] = None,
    charges_enabled: Annotated[
        bool | None,
        typer.Option(
            "--charges-enabled/--charges-disabled",
            help="only accounts that can / cannot take charges",
        ),
    ] = None,
    payouts_enabled: Annotated[
        bool | None,
        typer.Option(
            "--payouts-enabled/--payouts-disabled",
            help="only accounts that can / cannot be paid out",
        ),
    ] = None,
    metadata: Annotated[
        list[str] | None,
        typer.Option(help="key=value: only accounts whose metadata has it (repeatable)"),
    ] = None,
    fmt: Format = "table",
    output: Output = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Connected accounts with their names, emails, metadata and flags, newest first."""
    from projections.accounts import list_accounts
    from projections.queries import LIST_LIMIT_MAX

    _check_format(fmt)
    wanted = _metadata(metadata)
    _, _, view = _open(database_url)
    rows: list[dict[str, Any]] = []
    after = None
    while len(rows) < ACCOUNTS_SHOWN_MAX:
        page = list_accounts(
            view,
            search=search,
            charges_enabled=charges_enabled,
            payouts_enabled=payouts_enabled,
            metadata=wanted,
            limit=LIST_LIMIT_MAX,
            starting_after=after,
        )
        rows += page.data
        if not page.has_more:
            break
        after = page.data[-1]["id"]
    if fmt != "table":
        _emit(to_json(rows) + "\n" if fmt == "json" else to_csv(rows), output)
        return
    columns = ["id", "name", "email", "country", "charges", "payouts", "due", "metadata"]
    table = [
        [
            r["id"],
            r["name"] or "",
            r["email"] or "",
            r["country"],
            "yes" if r["charges_enabled"] else "no",
            "yes" if r["payouts_enabled"] else "no",
            _due(r["requirements"]),
            " ".join(f"{k}={v}" for k, v in sorted(r["metadata"].items())),
        ]
        for r in rows
    ]
    console.print(_table(f"Accounts ({len(rows)})", columns, table))


def _due(requirements: dict[str, Any]) -> str:
    """What Stripe still needs, in one cell: why it disabled the account, else the fields due."""
    if requirements["disabled_reason"]:
        return (
            f"disabled: {requirements['disabled_reason']} ({', '.join(requirements['past_due'])})"
        )
    return ", ".join(requirements["currently_due"])


@commands.command("tax-report")
def tax_report_cmd(
    year: Annotated[int, typer.Option(help="the calendar year (UTC), e.g. 2026")],
    account: Annotated[
        str | None, typer.Option(help="one account (default: every connected account)")
    ] = None,
    fmt: Format = "table",
    output: Output = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Gross payment volume, refunds and number of payments per account, currency and month of
    one calendar year (the figures of a 1099-K-style return)."""
    from projections import tax
    from projections.queries import QueryError

    _check_format(fmt)
    if not tax.YEAR_MIN <= year <= tax.YEAR_MAX:
        raise typer.BadParameter(f"--year is between {tax.YEAR_MIN} and {tax.YEAR_MAX}")
    _, ledger, view = _open(database_url)
    _require_account(ledger, account)
    try:
        reports = tax.tax_reports(view, year, account)
    except QueryError as error:
        raise typer.BadParameter(str(error)) from None
    if fmt == "json":
        _emit(to_json(reports) + "\n", output)
        return
    if fmt == "csv":
        _emit(to_csv(tax.csv_rows(reports), tax.CSV_COLUMNS), output)
        return
    rows = [
        [
            r["account"],
            r["name"] or "",
            r["currency"],
            format_minor(r["gross_volume"], r["currency"]),
            format_minor(r["refunds"], r["currency"]),
            str(r["payments"]),
        ]
        for r in reports
    ]
    columns = ["account", "name", "currency", "gross volume", "refunds", "payments"]
    console.print(_table(f"Tax report {year}", columns, rows, right=3))


@commands.command("risk")
def risk_cmd(
    account: Annotated[
        str | None, typer.Option(help="one account (default: every connected account)")
    ] = None,
    fmt: Format = "table",
    output: Output = None,
    database_url: DatabaseUrl = None,
) -> None:
    """The platform's exposure per seller: each connected account's available and reserved
    funds, who covers a negative balance (Stripe's controller.losses.payments) and what the
    platform would owe (projections.risk)."""
    from projections.risk import exposure

    _check_format(fmt)
    _, ledger, view = _open(database_url)
    _require_account(ledger, account)
    found = exposure(view, account)
    if fmt != "table":
        rows = found["data"]
        _emit(to_json(found) + "\n" if fmt == "json" else to_csv(rows), output)
        return
    table = [
        [
            r["account"],
            r["currency"],
            r["losses_covered_by"] or "unknown",
            format_minor(r["available"], r["currency"]),
            format_minor(r["reserved"], r["currency"]),
            format_minor(r["platform_exposure"], r["currency"]),
        ]
        for r in found["data"]
    ]
    columns = ["account", "currency", "losses covered by", "available", "reserved", "exposure"]
    console.print(_table("Platform exposure per seller", columns, table, right=3))
    for total in found["total_platform_exposure"]:
        amount = format_minor(total["amount"], total["currency"])
        console.print(f"total exposure {total['currency']}: {amount}")
