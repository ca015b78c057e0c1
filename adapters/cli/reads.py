"""What finance asks of the read models: balances, balance transactions, payouts, fee revenue
(`sluice balance|transactions|payouts|revenue`), and `sluice export` as CSV or JSON."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Annotated, Any, NoReturn

import typer

from adapters.cli.common import (
    DatabaseUrl,
    _day,
    _day_text,
    _money_table,
    _open,
    _period,
    _require_account,
    console,
)
from ledger import payouts as payout_statuses
from ledger.money import format_minor

commands = typer.Typer()
export_app = typer.Typer(no_args_is_help=True, help="Exports as CSV or JSON")


@commands.command("balance")
def balance_cmd(
    account: Annotated[str, typer.Argument(help="the account's id, acct_…")],
    database_url: DatabaseUrl = None,
) -> None:
    """Pending, available and reserved funds of an account (from the balances read model)."""
    from projections import queries

    _, ledger, view = _open(database_url)
    _require_account(ledger, account)
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
    for book in result.get("clearing", []):  # open reconciliation breaks (`reconcile status`)
        if book["amount"]:
            amount = format_minor(book["amount"], book["currency"])
            console.print(f"clearing {book['currency']}: {amount} (open reconciliation breaks)")


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
    account: Annotated[str, typer.Argument(help="the account's id, acct_…")],
    start: Annotated[
        str | None, typer.Option("--from", help="created at or after: ISO 8601 or unix seconds")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="created before: ISO 8601 or unix seconds")
    ] = None,
    currency: Annotated[str | None, typer.Option(help="only this currency, e.g. usd")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Balance transactions of an account, newest first."""
    from projections import queries

    lo, hi = _period(start, end)
    _, ledger, view = _open(database_url)
    _require_account(ledger, account)
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


PAYOUT_TABLE_COLUMNS = [
    "id", "account", "created", "currency", "amount", "status", "failure / hold",
    "stripe payout", "arrival", "destination",
]  # fmt: skip


@commands.command("payouts")
def payouts_cmd(
    account: Annotated[str | None, typer.Option(help="only this account's payouts")] = None,
    status: Annotated[
        str | None, typer.Option(help=f"one of {', '.join(payout_statuses.STATUSES)}")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Payouts with their status, failure codes and, for held ones, why they wait."""
    from projections import queries

    if status is not None and status not in payout_statuses.STATUSES:
        raise typer.BadParameter(f"--status is one of {', '.join(payout_statuses.STATUSES)}")
    _, ledger, view = _open(database_url)
    _require_account(ledger, account)
    rows = _all_pages(lambda **kw: queries.list_payouts(view, account=account, status=status, **kw))
    console.print(
        _money_table(
            "Payouts",
            PAYOUT_TABLE_COLUMNS,
            [
                [
                    r["id"],
                    r["account"],
                    _day(r["created"]),
                    r["currency"],
                    format_minor(r["amount"], r["currency"]),
                    r["status"],
                    _reason(r),
                    r.get("stripe_payout_id") or "",
                    _day(r["arrival_date"]) if r.get("arrival_date") else "",
                    r.get("destination") or "",
                ]
                for r in rows
            ],
        )
    )


def _reason(payout: dict[str, Any]) -> str:
    """A failed payout's code; a held one's code and Stripe's message."""
    hold = payout.get("hold")
    if hold:
        return ": ".join(str(part) for part in (hold["reason_code"], hold["message"]) if part)
    parts = (payout["failure_code"], payout.get("failure_message"))  # Stripe's, verbatim
    return ": ".join(str(part) for part in parts if part)


@commands.command("revenue")
def revenue_cmd(
    start: Annotated[
        str, typer.Option("--from", help="first day: ISO 8601 (YYYY-MM-DD) or unix seconds")
    ],
    end: Annotated[str, typer.Option("--to", help="day after the last: ISO 8601 or unix seconds")],
    database_url: DatabaseUrl = None,
) -> None:
    """Platform fee revenue by day and currency."""
    from projections import queries

    start, end = str(_day_text(start, "--from")), str(_day_text(end, "--to"))
    if end <= start:
        raise typer.BadParameter("--to must be after --from")
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
Tz = Annotated[str | None, typer.Option("--tz", help="IANA time zone for instants (default UTC)")]
Start = Annotated[str | None, typer.Option("--from", help="ISO 8601 (in --tz if no offset)")]
End = Annotated[str | None, typer.Option("--to", help="exclusive; ISO 8601 or unix seconds")]


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _bound(text: str | None, param: str, tz: Any, default: int) -> int:
    """ISO 8601 (a date or datetime; in ``tz`` without an offset) or unix seconds."""
    from datetime import datetime

    if text is None:
        return default
    if text.isdigit():
        return int(text)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        _fail(f"{param}: use ISO 8601 or unix seconds, got {text!r}")
    return int((value if value.tzinfo else value.replace(tzinfo=tz)).timestamp())


def _window(start: str | None, end: str | None, tz: Any) -> tuple[int, int]:
    lo = _bound(start, "--from", tz, 0)
    hi = _bound(end, "--to", tz, 253_402_300_800)  # 10000-01-01: no end
    if hi <= lo:
        _fail("--to must be after --from")
    return lo, hi


def _zone(tz: str | None) -> Any:
    from adapters.export import ExportError, zone

    try:
        return zone(tz)
    except ExportError as error:
        _fail(f"--{error.param}: {error.message}")


def _emit(rows: Iterable[dict[str, Any]], columns: list[str], fmt: str, output: str | None) -> None:
    """Streams ``rows`` as CSV or a JSON array to ``output`` (or stdout), row by row."""
    from adapters.export import ExportError, csv_lines, json_lines

    if fmt not in ("csv", "json"):
        _fail("--format is csv or json")
    chunks = csv_lines(rows, columns) if fmt == "csv" else json_lines(rows)
    from contextlib import nullcontext

    opened = open(output, "w", encoding="utf-8", newline="") if output else None  # noqa: SIM115
    with opened or nullcontext(sys.stdout) as handle:
        try:
            for chunk in chunks:
                handle.write(chunk)
        except ExportError as error:
            _fail(error.message)


def _within_max(count: int) -> None:
    from projections.queries import EXPORT_ROWS_MAX

    if count > EXPORT_ROWS_MAX:
        _fail(f"{count} rows match, over the {EXPORT_ROWS_MAX} an export holds: narrow it")


@export_app.command("balance-transactions")
def export_bts(
    account: Annotated[str | None, typer.Option(help="only this account's")] = None,
    currency: Annotated[str | None, typer.Option(help="only this currency, e.g. usd")] = None,
    start: Start = None,
    end: End = None,
    tz: Tz = None,
    fmt: Format = "csv",
    output: Output = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Every matching balance transaction, oldest first: gross/fee/net in minor units and as
    decimals, ISO 8601 instants, the account's metadata."""
    from adapters.export import (
        BT_COLUMNS,
        account_metadata,
        finance_balance_transaction,
        metadata_columns,
    )
    from projections import exports

    zone = _zone(tz)
    lo, hi = _window(start, end, zone)
    _, ledger, view = _open(database_url)
    filters = {"account": account, "currency": currency, "created_gte": lo, "created_lt": hi}
    _within_max(exports.count_balance_transactions(view, **filters))
    keys, metadata_of = account_metadata(ledger.get_account, exports.accounts_in(view, account))
    rows = (
        finance_balance_transaction(bt, zone, keys, metadata_of)
        for bt in exports.iter_balance_transactions(view, **filters)
    )
    _emit(rows, BT_COLUMNS + metadata_columns(keys), fmt, output)


@export_app.command("payouts")
def export_payouts(
    account: Annotated[str | None, typer.Option(help="only this account's")] = None,
    status: Annotated[str | None, typer.Option(help="only payouts in this status")] = None,
    tz: Tz = None,
    fmt: Format = "csv",
    output: Output = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Every matching payout, oldest first, with amounts as decimals and ISO 8601 instants."""
    from adapters.export import PAYOUT_COLUMNS, account_metadata, finance_payout, metadata_columns
    from projections import exports

    zone = _zone(tz)
    _, ledger, view = _open(database_url)
    _within_max(exports.count_payouts(view, account=account, status=status))
    keys, metadata_of = account_metadata(ledger.get_account, exports.accounts_in(view, account))
    rows = (
        finance_payout(p, zone, keys, metadata_of)
        for p in exports.iter_payouts(view, account=account, status=status)
    )
    _emit(rows, PAYOUT_COLUMNS + metadata_columns(keys), fmt, output)


@export_app.command("statement")
def export_statement(
    account: Annotated[str, typer.Option(help="the account's id, acct_…")],
    currency: Annotated[str, typer.Option(help="the statement's currency, e.g. usd")],
    start: Start = None,
    end: End = None,
    tz: Tz = None,
    fmt: Format = "csv",
    output: Output = None,
    database_url: DatabaseUrl = None,
) -> None:
    """A statement: an opening row, every movement with the balance after it, a closing row."""
    from adapters.export import STATEMENT_COLUMNS, statement_rows
    from projections import queries

    zone = _zone(tz)
    lo, hi = _window(start, end, zone)
    _, _, view = _open(database_url)
    try:
        result = queries.statement(view, account, currency, lo, hi)
    except queries.QueryError as error:
        _fail(f"--{error.param}: {error}")
    _emit(statement_rows(result, zone), STATEMENT_COLUMNS, fmt, output)


@export_app.command("balance-change")
def export_balance_change(
    account: Annotated[str | None, typer.Option(help="default: the platform")] = None,
    start: Start = None,
    end: End = None,
    tz: Tz = None,
    fmt: Format = "csv",
    output: Output = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Balance change from activity, itemized by reporting category per currency: opening,
    one row per category (count, gross, fee, net), closing."""
    from adapters.export import BALANCE_CHANGE_COLUMNS, balance_change_rows
    from projections import exports

    zone = _zone(tz)
    lo, hi = _window(start, end, zone)
    settings, _, view = _open(database_url)
    rows = exports.balance_change(view, account or settings.platform_account_id, lo, hi)
    _emit(balance_change_rows(rows), BALANCE_CHANGE_COLUMNS, fmt, output)


@export_app.command("seller-summary")
def export_seller_summary(
    account: Annotated[str | None, typer.Option(help="default: every seller")] = None,
    start: Start = None,
    end: End = None,
    tz: Tz = None,
    fmt: Format = "csv",
    output: Output = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Per seller and currency: opening, gross, fees, refunds, disputes, transfers, payouts,
    other, closing (= opening + the movements, exactly) for the period."""
    from adapters.export import SUMMARY_COLUMNS, account_metadata, metadata_columns, summary_rows
    from projections import exports

    zone = _zone(tz)
    lo, hi = _window(start, end, zone)
    settings, ledger, view = _open(database_url)
    try:
        rows = exports.seller_summaries(
            view, lo, hi, account=account, exclude=[settings.platform_account_id]
        )
    except exports.QueryError as error:
        _fail(f"--{error.param}: {error}")
    keys, metadata_of = account_metadata(ledger.get_account, sorted({r["account"] for r in rows}))
    _emit(
        summary_rows(rows, keys, metadata_of), SUMMARY_COLUMNS + metadata_columns(keys), fmt, output
    )
