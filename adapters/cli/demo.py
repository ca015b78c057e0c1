"""`sluice demo`, for a newcomer: a small marketplace through the Stripe sandbox, booked from its
webhooks, and the tables that show the books balance. The scenario itself is adapters/demo.py."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from adapters.bootstrap import bootstrap, init_database
from adapters.cli.common import DatabaseUrl, _settings, console
from adapters.persistence import describe
from ledger.journal import AVAILABLE, PENDING
from ledger.money import format_minor

commands = typer.Typer()


@commands.command()
def demo(
    seed: Annotated[int, typer.Option(help="Makes the scenario deterministic")] = 7,
    database_url: DatabaseUrl = None,
) -> None:
    """Run a small marketplace through the Stripe sandbox; book it from the webhooks."""
    from adapters.bootstrap import projector, read_model
    from adapters.demo import (
        Demo,
        DemoStoreError,
        balance_rows,
        prepare_store,
        sandbox_and_webhooks,
    )
    from adapters.http.app import create_app

    settings = _settings(database_url)
    init_database(settings)
    try:
        moved = prepare_store(settings.database_url, bootstrap(settings))
    except DemoStoreError as error:
        console.print(f"[red]error[/] {error}")
        raise typer.Exit(2) from None
    if moved:
        console.print(f"the previous demo's store was moved to {moved}")
        init_database(settings)
    ledger = bootstrap(settings)
    view = read_model(settings)
    try:
        with sandbox_and_webhooks(
            settings, lambda s: create_app(s, ledger=ledger, view=view, run_projector=False)
        ) as (sandbox, wired):
            run = Demo(ledger, view, wired, seed).play(sandbox)
    except DemoStoreError as error:
        console.print(f"[red]error[/] {error}")
        raise typer.Exit(2) from None
    try:
        replayed = sum(r.replayed for r in run.results)
        console.print(
            f"[bold]Sluice demo[/] seed={seed} store={describe(settings.database_url)}: "
            f"{len(run.results)} commands of its own ({replayed} replayed: keys seen before) "
            f"and {run.webhooks_folded} Stripe webhook events folded"
        )
        _print_balances(balance_rows(ledger))
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
        _print_payouts(ledger, run.payouts)
        for line in run.reserves:  # a reserve held, then released on its date
            console.print(line)
        for line in run.holds:  # a payment held, then captured for less
            console.print(line)
        for line in run.instant:  # an Instant Payout with Stripe's fee and the platform's
            console.print(line)
        _print_agreement(run.agreement)
        print(f"stripe and ledger agree: {'yes' if run.agree else 'no'}")
        applied = projector(ledger, settings).run_once()
        console.print(f"read models caught up ({max(applied.values(), default=0)} new events)")
        if not (balanced and mirror_ok and run.agree):
            raise typer.Exit(1)
    finally:
        ledger.close()


def _print_balances(rows: list[tuple[str, str, int, int]]) -> None:
    table = Table(title="Ledger balances by account and currency")
    for column in ("account", "currency", "pending", "available"):
        table.add_column(column, justify="left" if column in ("account", "currency") else "right")
    totals: dict[str, list[int]] = {}
    for owner, currency, pending, available in rows:
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


def _print_payouts(ledger: Any, payout_ids: list[str]) -> None:
    table = Table(title="Payouts made by the workers (each account's schedule decides)")
    for column in ("payout", "account", "requested", "amount", "status", "failure"):
        table.add_column(column, justify="right" if column == "amount" else "left")
    for payout_id in payout_ids:
        payout = ledger.get_payout(payout_id)
        if payout is None:
            continue
        requested = payout.history[0][1]
        table.add_row(
            payout.payout_id,
            payout.account_id,
            f"{requested:%Y-%m-%d}",
            f"{format_minor(payout.amount_minor, payout.currency)} {payout.currency}",
            payout.status,
            payout.failure_code or "",
        )
    console.print(table)


def _print_agreement(rows: list[tuple[str, str, int, int, int, int]]) -> None:
    table = Table(title="Ledger beside Stripe's GET /v1/balance")
    for column in (
        "account",
        "currency",
        "ledger pending",
        "stripe pending",
        "ledger available",
        "stripe available",
        "agree",
    ):
        table.add_column(column, justify="left" if column in ("account", "currency") else "right")
    for owner, cur, lp, la, sp, sa in rows:
        table.add_row(
            owner,
            cur,
            format_minor(lp, cur),
            format_minor(sp, cur),
            format_minor(la, cur),
            format_minor(sa, cur),
            "yes" if (lp, la) == (sp, sa) else "[red]NO[/]",
        )
    console.print(table)
