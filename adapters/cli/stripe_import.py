"""`sluice stripe import`: adopt Sluice on a platform that already runs at Stripe.

Thin: options, the store and the gateway, progress lines, the closing report. The logic is in
``adapters.stripe.importer``. Exit 0 when the books equal Stripe's balances and nothing was
skipped, 1 when they differ or something was skipped (each named), 2 on an error (one line;
a booking error is reported beside the progress so far, and the next run resumes there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from adapters.cli.common import DatabaseUrl, _instant, _open, console

if TYPE_CHECKING:
    from adapters.stripe.importer import ImportReport

REPORT_LINES_MAX = 50  # per section of the closing report; the counts say the rest


def import_cmd(
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="The cut-over (ISO 8601 or unix seconds): the balance as of it is the opening "
            "balance, every movement since is booked. Default: now (today's balance); a resumed "
            "import keeps its first cut-over.",
        ),
    ] = None,
    lookback_days: Annotated[
        int,
        typer.Option(
            help="How far before the cut-over to look for funds still pending at it",
        ),
    ] = 90,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress lines")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Import connected accounts, opening balances and Stripe's movements since a cut-over."""
    import stripe

    from adapters.bootstrap import stripe_gateway
    from adapters.stripe.importer import Importer
    from ledger.errors import SluiceError

    cutover = _instant(since, "--since")
    settings, ledger, view = _open(database_url)
    try:
        if not settings.stripe_api_key:
            console.print(
                "[red]error[/] settings: SLUICE_STRIPE_API_KEY is not set", soft_wrap=True
            )
            raise typer.Exit(2)
        progress = (
            None if quiet else (lambda line: console.print(line, highlight=False, soft_wrap=True))
        )
        importer = Importer(ledger, stripe_gateway(settings), settings, progress=progress)
        try:
            report = importer.run(cutover, lookback_days)
        except (SluiceError, stripe.StripeError) as error:
            message = (
                f"{error.code}: {error.message}"
                if isinstance(error, SluiceError)
                else f"stripe: {error.user_message or error}"
            )
            console.print(f"[red]error[/] {message}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    finally:
        ledger.close()
        view.datastore.close()
    _print_report(report)
    if report.errors:  # stopped on an error: the next run resumes at the cursor
        raise typer.Exit(2)
    if not report.ok:
        raise typer.Exit(1)


def _print_report(report: ImportReport) -> None:
    def out(line: str) -> None:
        console.print(line, highlight=False, soft_wrap=True)

    out(
        f"cut-over {report.cutover.isoformat()}: {len(report.accounts)} connected account(s), "
        f"{report.booked} balance transaction(s) booked, {report.already} booked before",
    )
    if report.movements:
        out(f"booked as Stripe-made movements (no object's fact): {report.movements}")
    if report.nothing:
        out(f"folded into nothing: {dict(report.nothing)}")
    for title, lines in (
        ("skipped (no fact books them)", [x for xs in report.skipped.values() for x in xs]),
        ("flagged", report.flagged),
        ("errors (run the import again to resume)", report.errors),
        ("books differ from Stripe's GET /v1/balance", report.differences),
    ):
        if lines:
            out(f"{title}: {len(lines)}")
            for line in lines[:REPORT_LINES_MAX]:
                out(f"  {line}")
    if not report.differences:
        out(f"books equal Stripe's balances: {len(report.balances)} account/currency row(s)")
