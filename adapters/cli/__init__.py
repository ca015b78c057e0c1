"""The `sluice` command line (console script ``adapters.cli:main``; ``python -m adapters.cli``).

One module per audience, mounted here:

    demo.py         demo: a newcomer's first run (the scenario itself is adapters/demo.py)
    reads.py        balance, transactions, payouts, revenue, export …: finance's read models
    serve.py        serve, sandbox: the HTTP API and the Stripe sandbox
    workers.py      worker [dead-letters], relay, scheduler: the worker-side processes
    db.py           db init
    projections.py  project run|rebuild|status
    audit.py        audit replay|verify, beside adapters/audit_proofs_cli.py's checkpoints
                    and proofs under the same `sluice audit`
    keys.py         keys create
    inbox.py        inbox process|status: the Stripe webhook inbox
    common.py       --database-url, opening the store, instants and periods, money tables
"""

from __future__ import annotations

import sys

import typer

from adapters.audit_proofs_cli import app as audit_proofs_app
from adapters.cli import db, demo, inbox, keys, projections, reads, serve, workers
from adapters.cli.audit import audit_app
from adapters.cli.common import console
from adapters.persistence import DatabaseUrlError
from ledger.errors import SluiceError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Sluice funds-routing ledger")


def _mount_commands(group: typer.Typer, source: typer.Typer) -> None:
    """Registers ``source``'s commands on ``group`` itself, without a sub-command level."""
    group.registered_commands.extend(source.registered_commands)


# `sluice --help` lists commands in the order they are registered here, then the groups.
for module in (demo, reads, serve, workers):
    _mount_commands(app, module.commands)
_mount_commands(audit_app, audit_proofs_app)
app.add_typer(db.db_app, name="db")
app.add_typer(projections.project_app, name="project")
app.add_typer(audit_app, name="audit")
app.add_typer(keys.keys_app, name="keys")
app.add_typer(inbox.inbox_app, name="inbox")
app.add_typer(reads.export_app, name="export")
app.add_typer(workers.worker_app, name="worker")


def main() -> None:
    try:
        app()
    except SluiceError as error:
        console.print(f"[red]error[/] {error.code}: {error.message}")
        sys.exit(2)
    except DatabaseUrlError as error:
        console.print(f"[red]error[/] database_url: {error}")
        sys.exit(2)
