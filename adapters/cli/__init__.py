"""The `sluice` command line (console script ``adapters.cli:main``; ``python -m adapters.cli``).

One module per audience, mounted here:

    demo.py         demo: a newcomer's first run (the scenario itself is adapters/demo.py)
    reads.py        balance, transactions, payouts, revenue, export …: finance's read models
    accounts.py     accounts, tax-report: finding accounts, yearly figures per account
    serve.py        serve, sandbox: the HTTP API and the Stripe sandbox
    workers.py      worker [dead-letters], relay, scheduler: the worker-side processes
    db.py           db init
    projections.py  project run|rebuild|status
    audit.py        audit replay|verify, beside adapters/audit_proofs_cli.py's checkpoints
                    and proofs under the same `sluice audit`
    keys.py         keys create
    inbox.py        inbox process|status: the Stripe webhook inbox
    stripe.py       stripe setup|check: the webhook endpoints and keys at Stripe
    common.py       --database-url, opening the store, instants and periods, money tables
"""

from __future__ import annotations

import sys

import click
import typer
from pydantic import ValidationError

from adapters.audit_proofs_cli import app as audit_proofs_app
from adapters.cli import (
    accounts,
    db,
    demo,
    inbox,
    keys,
    projections,
    reads,
    reconcile,
    serve,
    stripe,
    workers,
)
from adapters.cli.audit import audit_app
from adapters.cli.common import console, operational_problem
from adapters.persistence import DatabaseUrlError
from adapters.settings import settings_problem
from ledger.errors import SluiceError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Sluice funds-routing ledger")
DISTRIBUTION = "sluice-ledger"  # pyproject's [project] name


def _print_version(asked: bool) -> None:
    """``sluice --version``: the installed distribution's version (its package metadata)."""
    if not asked:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        print(f"sluice {version(DISTRIBUTION)}")
    except PackageNotFoundError:  # run from a checkout that was never installed
        console.print(f"[red]error[/] {DISTRIBUTION} is not installed: run `pip install -e .`")
        raise typer.Exit(2) from None
    raise typer.Exit(0)


@app.callback()
def _logging(
    ctx: typer.Context,
    log_format: str | None = typer.Option(
        None, help="json or console (default: console on a terminal, else json; SLUICE_LOG_FORMAT)"
    ),
    log_level: str | None = typer.Option(None, help="DEBUG, INFO, … (SLUICE_LOG_LEVEL; INFO)"),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version"
    ),
) -> None:
    from adapters.logs import use

    use(log_format, log_level, process=ctx.invoked_subcommand)


def _mount_commands(group: typer.Typer, source: typer.Typer) -> None:
    """Registers ``source``'s commands on ``group`` itself, without a sub-command level."""
    group.registered_commands.extend(source.registered_commands)


# `sluice --help` lists commands in the order they are registered here, then the groups.
for module in (demo, reads, accounts, serve, workers):
    _mount_commands(app, module.commands)
_mount_commands(audit_app, audit_proofs_app)
app.add_typer(db.db_app, name="db")
app.add_typer(projections.project_app, name="project")
app.add_typer(audit_app, name="audit")
app.add_typer(keys.keys_app, name="keys")
app.add_typer(inbox.inbox_app, name="inbox")
app.add_typer(stripe.stripe_app, name="stripe")
app.add_typer(reads.export_app, name="export")
app.add_typer(workers.worker_app, name="worker")
app.add_typer(reconcile.reconcile_app, name="reconcile")


# Recent typer versions vendor click (typer._click): catch their usage errors and click's.
USAGE_ERRORS = tuple(
    {click.UsageError, *(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")}
)


def main() -> None:
    try:
        # Not standalone: usage errors come here, to be said in one line like every error.
        code = app(standalone_mode=False)
    except USAGE_ERRORS as error:  # a bad option or argument: one line, exit 2
        console.print(f"[red]error[/] {error.format_message()}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (click.Abort, typer.Abort):
        console.print("aborted")
        sys.exit(1)
    except SluiceError as error:
        console.print(f"[red]error[/] {error.code}: {error.message}")
        sys.exit(2)
    except DatabaseUrlError as error:
        console.print(f"[red]error[/] database_url: {error}")
        sys.exit(2)
    except ValidationError as error:
        if error.title != "Settings":
            raise
        console.print(f"[red]error[/] settings: {settings_problem(error)}", soft_wrap=True)
        sys.exit(2)
    except Exception as error:  # no database, no schema, no broker: the fix, not a traceback
        problem = operational_problem(error)
        if problem is None:
            raise
        console.print(f"[red]error[/] {problem}", highlight=False, soft_wrap=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
