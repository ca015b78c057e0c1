"""The worker-side processes: `sluice worker [dead-letters]`, `sluice relay`, `sluice scheduler`.

Each command replaces this process (``os.execv``) rather than importing and calling the worker
code, because those processes are their own entry points: ``dramatiq workers.main`` is dramatiq's
CLI, which forks the worker processes and creates the broker as it imports ``workers.main``;
``python -m workers.cli`` runs the relay's and the scheduler's loops under its own signal handlers
(and lists dead letters). After the exec a supervisor's signals reach that process directly, with
no `sluice` process in between.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

commands = typer.Typer()
worker_app = typer.Typer(help="dramatiq workers (payouts, webhooks, releases)")


def _exec_python(*args: str) -> None:
    """Replaces this process with ``python *args`` (see the module docstring for why)."""
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


@commands.command()
def relay(
    once: Annotated[bool, typer.Option(help="Publish what is pending, then exit")] = False,
) -> None:
    """Publish the messages the Ledger's events call for (one active relay)."""
    _exec_python("-m", "workers.cli", "relay", *(["--once"] if once else []))


@commands.command()
def scheduler(
    once: Annotated[bool, typer.Option(help="One tick, then exit")] = False,
    tick: Annotated[float, typer.Option(help="Seconds between ticks")] = 10.0,
) -> None:
    """Enqueue releases, scheduled payouts, inbox passes and sweeps (one active scheduler)."""
    _exec_python(
        "-m", "workers.cli", "scheduler", "--tick", str(tick), *(["--once"] if once else [])
    )
