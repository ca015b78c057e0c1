"""`sluice inbox`: the stored Stripe webhook events, folded into the ledger and counted."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from adapters.cli.common import DatabaseUrl, _open, console

inbox_app = typer.Typer(no_args_is_help=True, help="Stripe webhook inbox")


@inbox_app.command("process")
def inbox_process(
    limit: Annotated[int, typer.Option(help="events per pass")] = 500,
    passes: Annotated[int, typer.Option(help="passes (parked events are retried)")] = 3,
    database_url: DatabaseUrl = None,
) -> None:
    """Fold stored Stripe events into the ledger."""
    from adapters.bootstrap import stripe_gateway
    from adapters.stripe.folding import Folder

    settings, ledger, view = _open(database_url)
    folder = Folder(ledger, stripe_gateway(settings), settings)
    for n in range(passes):
        report = folder.process(view, limit)
        console.print(
            f"pass {n + 1}: processed {report.processed}, parked {report.parked}, "
            f"failed {report.failed}, ignored {sum(report.ignored.values())}"
        )
        for error in report.errors[:20]:
            console.print(f"  [yellow]{error}[/]")
        if not (report.processed or report.parked):
            break


@inbox_app.command("status")
def inbox_status(database_url: DatabaseUrl = None) -> None:
    """Stored Stripe events by status and type (unknown types are kept and counted)."""
    from adapters.stripe import inbox

    settings, _, view = _open(database_url)
    mode = "live" if settings.livemode else "test"
    other = "test" if settings.livemode else "live"
    by_mode = inbox.mode_counts(view)
    console.print(f"mode: {mode} (from the Stripe key; events of {mode} mode are folded)")
    console.print(
        f"events stored: {by_mode.get(settings.livemode, 0)} {mode} mode, "
        f"{by_mode.get(not settings.livemode, 0)} {other} mode (kept, never folded)"
    )
    table = Table(title="Stripe events")
    for column in ("status", "type", "count"):
        table.add_column(column, justify="right" if column == "count" else "left")
    for status, types in sorted(inbox.counts(view).items()):
        for kind, n in sorted(types.items()):
            table.add_row(status, kind, str(n))
    console.print(table)
