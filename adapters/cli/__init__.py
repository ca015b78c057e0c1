"""The `sluice` command line."""

from __future__ import annotations

import signal
import sys
import threading
from datetime import UTC, datetime
from typing import Annotated, Any

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
project_app = typer.Typer(no_args_is_help=True, help="Read models: run, rebuild, status")
app.add_typer(project_app, name="project")
audit_app = typer.Typer(no_args_is_help=True, help="Auditor tools: replay and verify")
app.add_typer(audit_app, name="audit")
keys_app = typer.Typer(no_args_is_help=True, help="API keys")
app.add_typer(keys_app, name="keys")
inbox_app = typer.Typer(no_args_is_help=True, help="Stripe webhook inbox")
app.add_typer(inbox_app, name="inbox")
export_app = typer.Typer(no_args_is_help=True, help="Exports as CSV or JSON")
app.add_typer(export_app, name="export")
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


def _instant(text: str | None, param: str) -> datetime | None:
    """ISO 8601 (date or datetime, UTC if no offset) or unix seconds."""
    if text is None:
        return None
    try:
        if text.isdigit():
            return datetime.fromtimestamp(int(text), UTC)
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{param}: use ISO 8601 or unix seconds, got {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _period(start: str | None, end: str | None) -> tuple[int, int]:
    lo = _instant(start, "--from") or datetime(1970, 1, 1, tzinfo=UTC)
    hi = _instant(end, "--to") or datetime(9999, 1, 1, tzinfo=UTC)
    return int(lo.timestamp()), int(hi.timestamp())


def _open(database_url: str | None) -> tuple[Settings, Any, Any]:
    from adapters.bootstrap import read_model

    settings = _settings(database_url)
    return settings, bootstrap(settings), read_model(settings)


def _money_table(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column in MONEY_COLUMNS else "left")
    for row in rows:
        table.add_row(*row)
    return table


MONEY_COLUMNS = {
    "amount",
    "fee",
    "net",
    "pending",
    "available",
    "reserved",
    "collected",
    "refunded",
    "opening",
    "closing",
}
Names = Annotated[list[str] | None, typer.Argument(help="Projections (default: all)")]


@project_app.command("run")
def project_run(
    names: Names = None,
    once: Annotated[bool, typer.Option(help="Catch up and exit")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Follow the event log and keep the read models current (one process per store)."""
    from adapters.bootstrap import bootstrap, follow_log, read_model
    from projections.runner import Projector

    settings = _settings(database_url)
    ledger = bootstrap(settings, role="projector")
    view = read_model(settings, role="projector")
    runner = Projector(ledger, view, names)
    if once:
        for name, applied in runner.run_once().items():
            console.print(f"{name}: applied {applied} events")
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    console.print(
        f"projecting {', '.join(runner.projections)} from {describe(settings.database_url)}"
    )
    try:  # a failed step (the store restarting or stalled) is retried: the process stays up
        follow_log(runner, stop, settings.worker_step_timeout_s)
    except KeyboardInterrupt:
        stop.set()


@project_app.command("rebuild")
def project_rebuild(name: str, database_url: DatabaseUrl = None) -> None:
    """Drop a read model and rebuild it from the whole event log."""
    from projections.runner import Projector

    _, ledger, view = _open(database_url)
    applied = Projector(ledger, view, [name]).rebuild(name)
    console.print(f"{name}: rebuilt from {applied} events")


@project_app.command("status")
def project_status(database_url: DatabaseUrl = None) -> None:
    """Position, head and lag of every read model."""
    from projections.runner import Projector

    _, ledger, view = _open(database_url)
    table = Table(title="Projections")
    for column in ("projection", "position", "head", "lag (events)", "lag (s)"):
        table.add_column(column, justify="left" if column == "projection" else "right")
    for st in Projector(ledger, view).status():
        table.add_row(
            st.name, str(st.position), str(st.head), str(st.lag_events), f"{st.lag_seconds:.1f}"
        )
    console.print(table)


@app.command("balance")
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


@app.command("transactions")
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


def _day(seconds: int | None) -> str:
    return (
        "" if seconds is None else datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")
    )


@app.command("payouts")
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


@app.command("revenue")
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


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="admin, finance, auditor or account:<acct_id>")],
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API key. It is printed once; only its hash is stored."""
    from adapters.bootstrap import read_model
    from adapters.keys import RoleError, create_key

    try:
        key_id, key = create_key(read_model(_settings(database_url)), role)
    except RoleError as error:
        raise typer.BadParameter(str(error)) from None
    console.print(f"created {key_id} with role {role}; store it now, it is not shown again:")
    print(key)


@app.command("serve")
def serve_cmd(
    host: str = "127.0.0.1",
    port: int = 8000,
    projector: Annotated[
        bool, typer.Option(help="Run the read models in this process (one projector per store)")
    ] = True,
    database_url: DatabaseUrl = None,
) -> None:
    """Serve the HTTP API (with an embedded projector unless --no-projector)."""
    from adapters.http.app import serve

    serve(_settings(database_url), host=host, port=port, run_projector=projector)


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

    _, _, view = _open(database_url)
    table = Table(title="Stripe events")
    for column in ("status", "type", "count"):
        table.add_column(column, justify="right" if column == "count" else "left")
    for status, types in sorted(inbox.counts(view).items()):
        for kind, n in sorted(types.items()):
            table.add_row(status, kind, str(n))
    console.print(table)


@app.command("sandbox")
def sandbox_cmd(
    port: int = 12111,
    host: str = "127.0.0.1",
    seed: Annotated[int, typer.Option(help="Makes ids and chaos reproducible")] = 0,
) -> None:
    """Serve the stateful Stripe Connect sandbox (Stripe's API subset Sluice uses)."""
    from stripe_sandbox import run_sandbox

    run_sandbox(host=host, port=port, seed=seed)


worker_app = typer.Typer(help="dramatiq workers (payouts, webhooks, releases)")
app.add_typer(worker_app, name="worker")


def _exec_python(*args: str) -> None:
    """Replaces this process (signals reach it directly). ``workers`` sits above ``adapters``
    in the import contracts, so the worker-side commands run as their own module."""
    import os

    os.execv(sys.executable, [sys.executable, *args])


@worker_app.callback(invoke_without_command=True)
def worker(
    ctx: typer.Context,
    processes: Annotated[int, typer.Option(help="Worker processes")] = 2,
    threads: Annotated[int, typer.Option(help="Threads per process")] = 4,
) -> None:
    """Run the dramatiq workers (``dramatiq workers.main``; SLUICE_BROKER_URL picks the broker)."""
    if ctx.invoked_subcommand is None:
        _exec_python(
            "-m",
            "dramatiq",
            "workers.main",
            "--processes",
            str(processes),
            "--threads",
            str(threads),
        )


@worker_app.command("dead-letters")
def worker_dead_letters(
    limit: Annotated[int, typer.Option(help="At most this many per queue")] = 1000,
) -> None:
    """List dead-lettered messages (RabbitMQ <queue>.XQ) without consuming them."""
    _exec_python("-m", "workers.cli", "dead-letters", "--limit", str(limit))


@app.command()
def relay(
    once: Annotated[bool, typer.Option(help="Publish what is pending, then exit")] = False,
) -> None:
    """Publish the messages the Ledger's events call for (one active relay)."""
    _exec_python("-m", "workers.cli", "relay", *(["--once"] if once else []))


@app.command()
def scheduler(
    once: Annotated[bool, typer.Option(help="One tick, then exit")] = False,
    tick: Annotated[float, typer.Option(help="Seconds between ticks")] = 10.0,
) -> None:
    """Enqueue releases, scheduled payouts, inbox passes and sweeps (one active scheduler)."""
    _exec_python(
        "-m", "workers.cli", "scheduler", "--tick", str(tick), *(["--once"] if once else [])
    )


def main() -> None:
    try:
        app()
    except SluiceError as error:
        console.print(f"[red]error[/] {error.code}: {error.message}")
        sys.exit(2)
    except DatabaseUrlError as error:
        console.print(f"[red]error[/] database_url: {error}")
        sys.exit(2)


if __name__ == "__main__":  # python -m adapters.cli
    main()
