"""`sluice project`: the read models, for whoever runs Sluice: follow the log, rebuild one,
show how far behind each is."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer
from rich.table import Table

from adapters.cli.common import DatabaseUrl, _open, _settings, console
from adapters.persistence import describe

project_app = typer.Typer(no_args_is_help=True, help="Read models: run, rebuild, status")

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
