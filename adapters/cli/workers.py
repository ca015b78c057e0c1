"""The worker-side processes: `sluice worker [dead-letters]`, `sluice relay`, `sluice scheduler`.

Each command replaces this process (``os.execv``) rather than importing and calling the worker
code, because those processes are their own entry points: ``workers.cli worker`` runs dramatiq's
CLI, which forks the worker processes and creates the broker as they import ``workers.main``;
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
MetricsPort = Annotated[
    int | None,
    typer.Option(help="Serve Prometheus metrics on this port (SLUICE_METRICS_PORT)"),
]


Wait = Annotated[
    float,
    typer.Option(help="Seconds to wait for a running instance to stop (default: exit 2 at once)"),
]


HealthPort = Annotated[
    int | None,
    typer.Option(help="Serve /healthz and /readyz on this port (SLUICE_HEALTH_PORT)"),
]


def _metrics_args(port: int | None, health_port: int | None = None) -> list[str]:
    metrics = ["--metrics-port", str(port)] if port is not None else []
    return metrics + (["--health-port", str(health_port)] if health_port is not None else [])


worker_app = typer.Typer(help="dramatiq workers (payouts, webhooks, releases)")


def _exec_python(*args: str) -> None:
    """Replaces this process with ``python *args`` (see the module docstring for why)."""
    os.execv(sys.executable, [sys.executable, *args])


@worker_app.callback(invoke_without_command=True)
def worker(
    ctx: typer.Context,
    processes: Annotated[int, typer.Option(help="Worker processes")] = 2,
    threads: Annotated[int, typer.Option(help="Threads per process")] = 4,
    metrics_port: MetricsPort = None,
    health_port: HealthPort = None,
) -> None:
    """Run the dramatiq workers (``dramatiq workers.main``; SLUICE_BROKER_URL picks the broker)."""
    if ctx.invoked_subcommand is None:
        _exec_python(
            "-m",
            "workers.cli",
            "worker",
            "--processes",
            str(processes),
            "--threads",
            str(threads),
            *_metrics_args(metrics_port, health_port),
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
    metrics_port: MetricsPort = None,
    wait: Wait = 0.0,
    health_port: HealthPort = None,
) -> None:
    """Publish the messages the Ledger's events call for (one active relay: a second one exits
    2 naming the running one, or with --wait stands by, alive but not ready)."""
    _exec_python(
        "-m", "workers.cli", "relay", *(["--once"] if once else []),
        *_metrics_args(metrics_port, health_port), "--wait", str(wait),
    )  # fmt: skip


@commands.command()
def scheduler(
    once: Annotated[bool, typer.Option(help="One tick, then exit")] = False,
    tick: Annotated[float, typer.Option(help="Seconds between ticks")] = 10.0,
    metrics_port: MetricsPort = None,
    wait: Wait = 0.0,
    health_port: HealthPort = None,
) -> None:
    """Enqueue releases, scheduled payouts, inbox passes and sweeps (one active scheduler: a
    second one exits 2 naming the running one, or with --wait stands by, alive but not ready)."""
    _exec_python(
        "-m", "workers.cli", "scheduler", "--tick", str(tick), *(["--once"] if once else []),
        *_metrics_args(metrics_port, health_port), "--wait", str(wait),
    )  # fmt: skip
