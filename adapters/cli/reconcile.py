"""`sluice reconcile`: one pass over Stripe's balance transactions (`adapters.reconcile`), the
breaks it found (`status`), and the balance agreement at a cut-off (`balances`)."""

from __future__ import annotations

from typing import Annotated, Any, NoReturn

import typer
from rich.table import Table

from adapters.cli.common import DatabaseUrl, _open, console
from adapters.cli.reads import Output, _emit
from ledger.money import format_minor

reconcile_app = typer.Typer(
    help="Reconcile the ledger with Stripe: `sluice reconcile` runs one pass",
    invoke_without_command=True,
)
Accounts = Annotated[
    list[str] | None, typer.Option("--account", help="only these accounts (repeatable)")
]


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error[/] {message}", highlight=False)
    raise typer.Exit(2)


def _stripe(database_url: str | None) -> tuple[Any, Any, Any, Any]:
    from adapters.bootstrap import stripe_gateway

    settings, ledger, view = _open(database_url)
    if not settings.stripe_api_key:
        _fail("no Stripe key: set SLUICE_STRIPE_API_KEY (and SLUICE_STRIPE_API_BASE)")
    return settings, ledger, view, stripe_gateway(settings)


@reconcile_app.callback()
def reconcile(
    ctx: typer.Context, account: Accounts = None, database_url: DatabaseUrl = None
) -> None:
    """Compare every account's balance transactions at Stripe with the ledger since its cursor,
    repair what a lost webhook explains, and record every break (see `reconcile status`)."""
    if ctx.invoked_subcommand is not None:
        return
    from adapters.reconcile import Reconciler

    settings, ledger, view, gateway = _stripe(database_url)
    report = Reconciler(ledger, view, gateway, settings).run(account)
    rate = report.checked / report.seconds if report.seconds else 0.0
    console.print(
        f"accounts {report.accounts}, balance transactions checked {report.checked} "
        f"({rate:.0f}/s), breaks found {sum(report.found.values())}, repaired "
        f"{report.repaired}, resolved {report.resolved}, open {sum(report.open.values())}"
    )
    for name, n in sorted(report.found.items()):
        console.print(f"  found {name}: {n}")
    for name, n in sorted(report.open.items()):
        console.print(f"  [yellow]open {name}: {n}[/]")
    for error in report.errors[:20]:
        console.print(f"  [yellow]{error}[/]", highlight=False)


@reconcile_app.command("status")
def status(
    show: Annotated[str, typer.Option(help="open, resolved or all")] = "open",
    account: Annotated[str | None, typer.Option(help="one account")] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv or json (default: a table)")
    ] = None,
    output: Output = None,
    database_url: DatabaseUrl = None,
) -> None:
    """The breaks (open by default), by name, and every clearing book that is not zero."""
    from adapters.http.reconciliation import BREAK_COLUMNS, _flat
    from projections import reconciliation as recon_view

    if show not in ("open", "resolved", "all"):
        _fail("--show is open, resolved or all")
    _, _, view = _open(database_url)
    breaks = recon_view.all_breaks(view, status=None if show == "all" else show, account=account)
    if fmt is not None:
        _emit((_flat(b) for b in breaks), list(BREAK_COLUMNS), fmt, output)
        return
    counts = recon_view.break_counts(view)
    opened = sum(n for (state, _), n in counts.items() if state == "open")
    console.print(f"breaks: {opened} open, {sum(counts.values()) - opened} resolved")
    table = Table(title=f"breaks ({show})")
    for column in (
        "name",
        "account",
        "currency",
        "stripe object",
        "difference",
        "first seen",
        "status",
    ):
        table.add_column(column)
    for b in breaks[:200]:
        diff = b["difference"]
        table.add_row(
            b["name"],
            b["account"],
            b["currency"],
            b["stripe_object"],
            f"amount {diff.get('amount', 0)} fee {diff.get('fee', 0)} net {diff.get('net', 0)}",
            str(b["first_seen"]),
            b["status"] if b["resolved_at"] is None else f"{b['resolution']} at {b['resolved_at']}",
        )
    console.print(table)
    for (acct, currency), amount in sorted(recon_view.clearing_books(view, account).items()):
        if amount:
            console.print(
                f"[yellow]clearing {acct} {currency}: {format_minor(amount, currency)}[/]"
            )


@reconcile_app.command("balances")
def balances(
    account: Accounts = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv or json (default: a table)")
    ] = None,
    output: Output = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Per account and currency at one cut-off (now): the ledger's pending and available beside
    Stripe's GET /v1/balance, and the clearing book. Exits 1 when any row disagrees."""
    from adapters.reconcile import balance_agreement, known_accounts

    settings, ledger, view, gateway = _stripe(database_url)
    chosen = account or known_accounts(ledger, gateway, settings)
    cutoff, rows = balance_agreement(ledger, gateway, settings, chosen, view)
    data = [{**row.__dict__, "agrees": row.agrees} for row in rows]
    if fmt is not None:
        _emit(iter(data), list(data[0]) if data else ["account"], fmt, output)
    else:
        table = Table(title=f"ledger beside Stripe at {cutoff.isoformat()}")
        for column in (
            "account",
            "currency",
            "ledger pending / available",
            "stripe pending / available",
            "clearing",
            "",
        ):
            table.add_column(column)
        for row in rows:
            c = row.currency
            table.add_row(
                row.account,
                c,
                f"{format_minor(row.ledger_pending, c)} / {format_minor(row.ledger_available, c)}",
                f"{format_minor(row.stripe_pending, c)} / {format_minor(row.stripe_available, c)}",
                format_minor(row.clearing, c),
                "agrees" if row.agrees else "[red]differs[/]",
            )
        console.print(table)
        console.print(f"stripe and ledger agree: {'yes' if all(r.agrees for r in rows) else 'no'}")
    if not all(r.agrees for r in rows):
        raise typer.Exit(1)


@reconcile_app.command("payouts")
def payouts(
    account: Accounts = None,
    payout: Annotated[
        str | None, typer.Option(help="one payout: Sluice's id or Stripe's po_")
    ] = None,
    start: Annotated[int | None, typer.Option("--from", help="created from, unix s")] = None,
    end: Annotated[int | None, typer.Option("--to", help="created before, unix s")] = None,
    stripe: Annotated[
        bool, typer.Option("--stripe", help="Stripe's itemization beside the ledger's payouts")
    ] = False,
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv or json (default: a table)")
    ] = None,
    output: Output = None,
    database_url: DatabaseUrl = None,
) -> None:
    """The ledger's payout reconciliation (projections.payout_items): each payout with the
    balance transactions it settled, gross, fees, net, and whether they net exactly to its
    amount (an automatic payout's must; a manual one itemizes nothing). Exits 1 when any payout
    is flagged. ``--stripe``: each payout at Stripe, itemized by Stripe, beside the ledger's."""
    if stripe:
        _stripe_payouts(account, fmt, output, database_url)
        return
    from adapters.http.payout_reports import REPORT_COLUMNS, csv_rows
    from projections.payout_items import payout_reconciliation
    from projections.queries import QueryError

    _, _, view = _open(database_url)
    try:
        report = [
            row
            for a in account or [None]
            for row in payout_reconciliation(
                view, payout_id=payout, account=a, created_from_s=start, created_to_s=end
            )
        ]
    except QueryError as error:
        _fail(str(error))
    if fmt == "json":
        _emit(iter(report), ["payout"], fmt, output)
    elif fmt is not None:
        _emit(csv_rows(report), list(REPORT_COLUMNS), fmt, output)
    else:
        _payouts_table(report)
    if any(row["flagged"] for row in report):
        raise typer.Exit(1)


def _payouts_table(report: list[dict[str, Any]]) -> None:
    table = Table(title="payouts, itemized by the ledger")
    for column in ("account", "payout", "stripe", "status", "amount", "items", "gross", "fees"):
        table.add_column(column)
    for column in ("net", "check"):
        table.add_column(column)
    for row in report:
        c = row["currency"]
        table.add_row(
            row["account"],
            row["payout"],
            row["stripe_payout_id"] or "",
            row["status"] + ("" if row["automatic"] else " (manual)"),
            format_minor(row["amount"], c),
            str(row["item_count"]),
            format_minor(row["gross"], c),
            format_minor(row["fee"], c),
            format_minor(row["net"], c),
            f"[red]differs by {format_minor(row['difference'], c)}[/]"
            if row["flagged"]
            else row["check"],
        )
    console.print(table)


def _stripe_payouts(
    account: list[str] | None, fmt: str | None, output: str | None, database_url: str | None
) -> None:
    """Each connected account's recent payouts at Stripe with what they settled
    (balance_transactions?payout=): gross, fees, net and items, beside the ledger's payout.
    An automatic payout's items net exactly to its amount. Exits 1 when any row disagrees."""
    from adapters.reconcile import known_accounts, payout_report

    settings, ledger, _, gateway = _stripe(database_url)
    chosen = account or known_accounts(ledger, gateway, settings)
    rows = [row for a in chosen for row in payout_report(ledger, gateway, settings, a)]
    data = [{**row.__dict__, "sums": row.sums, "agrees": row.agrees} for row in rows]
    if fmt is not None:
        _emit(iter(data), list(data[0]) if data else ["payout"], fmt, output)
    else:
        table = Table(title="payouts at Stripe, itemized, beside the ledger")
        for column in (
            "account",
            "payout",
            "status",
            "amount",
            "items",
            "gross",
            "fees",
            "net",
            "",
        ):
            table.add_column(column)
        for row in rows:
            c = row.currency
            table.add_row(
                row.account,
                row.payout,
                row.status + ("" if row.automatic else " (manual)"),
                format_minor(row.amount, c),
                str(row.items),
                format_minor(row.gross, c),
                format_minor(row.fees, c),
                format_minor(row.net, c),
                "agrees"
                if row.agrees
                else f"[red]ledger {row.ledger_status} {row.ledger_amount}[/]",
            )
        console.print(table)
    if not all(row.agrees for row in rows):
        raise typer.Exit(1)
