"""`sluice project`: the read models, for whoever runs Sluice: follow the log, rebuild one,
show how far behind each is."""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Any, NoReturn

import typer
from rich.table import Table

from adapters.cli.common import DatabaseUrl, _open, _settings, console
from adapters.persistence import describe
from adapters.settings import Settings

project_app = typer.Typer(no_args_is_help=True, help="Read models: run, rebuild, status")

Names = Annotated[list[str] | None, typer.Argument(help="Projections (default: all)")]
Wait = Annotated[
    float,
    typer.Option(help="Seconds to wait for a running projector to stop (default: exit 2 at once)"),
]


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _projector(ledger: Any, view: Any, names: list[str] | None) -> Any:
    from projections.runner import Projector

    try:
        return Projector(ledger, view, names)
    except KeyError as error:
        _fail(str(error.args[0]))


def _take_locks(
    settings: Settings, names: list[str], wait_s: float, locks: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every named read model's projector lock (one projector per read model; ``locks`` if
    made already), waiting at most ``wait_s`` in all; exits 2 naming the holder when another
    projector keeps one."""
    import time

    from adapters.bootstrap import projector_locks

    locks = locks if locks is not None else projector_locks(settings, names)
    end = time.monotonic() + max(0.0, wait_s)
    for name, lock in locks.items():
        if not lock.wait_acquire(max(0.0, end - time.monotonic())):
            message = lock.busy_message(f"projector of {name}")
            _release(locks)
            _fail(message)
    return locks


def _release(locks: dict[str, Any]) -> None:
    for lock in locks.values():
        lock.close_session()


@project_app.command("run")
def project_run(
    names: Names = None,
    once: Annotated[bool, typer.Option(help="Catch up and exit")] = False,
    database_url: DatabaseUrl = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port (SLUICE_METRICS_PORT)")
    ] = None,
    wait: Wait = 0.0,
    health_port: Annotated[
        int | None,
        typer.Option(help="Serve /healthz and /readyz on this port (SLUICE_HEALTH_PORT)"),
    ] = None,
) -> None:
    """Follow the event log and keep the read models current (one projector per read model: a
    second one, --once included, exits 2 naming the running one, or with --wait stands by,
    alive but not ready)."""
    from adapters import health
    from adapters.bootstrap import bootstrap, projector_locks, read_model

    settings = _settings(database_url)
    ledger = bootstrap(settings, role="projector")
    view = read_model(settings, role="projector")
    runner = _projector(ledger, view, names)
    locks = projector_locks(settings, list(runner.projections))
    port = health_port if health_port is not None else settings.health_port
    probes = health.serve(port, "projector", settings, view, locks=locks)
    try:
        locks = _take_locks(settings, list(runner.projections), wait, locks)
        _project(runner, locks, once, settings, metrics_port)
    finally:
        health.close(probes)


def _project(
    runner: Any, locks: dict[str, Any], once: bool, settings: Settings, metrics_port: int | None
) -> None:
    """Catches up once, or follows the log until SIGTERM (the locks held, released at the end)."""
    from adapters.bootstrap import follow_log

    ledger, view = runner.ledger, runner.view
    if once:
        try:
            for name, applied in runner.run_once().items():
                console.print(f"{name}: applied {applied} events")
        finally:
            _release(locks)
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    from adapters import metrics  # the read models' lag, on the metrics port

    lag = metrics.StoreCollector(ledger, view, [metrics.projection_lag])
    metrics.serve(metrics_port if metrics_port is not None else metrics.metrics_port(), lag)
    console.print(
        f"projecting {', '.join(runner.projections)} from {describe(settings.database_url)}"
    )
    from adapters.audit_schedule import scheduled_checkpoints

    # With a signing key, the projector also signs a checkpoint now and then (off the write path).
    checkpoints = scheduled_checkpoints(ledger, view, settings)
    if checkpoints is not None:
        console.print(f"signing checkpoints at most every {checkpoints.interval_s:.0f} s")
    try:  # a failed step (the store restarting or stalled) is retried: the process stays up
        follow_log(runner, stop, settings.worker_step_timeout_s, checkpoints, locks=locks)
    except KeyboardInterrupt:
        stop.set()
    finally:
        _release(locks)


@project_app.command("rebuild")
def project_rebuild(
    name: Annotated[str, typer.Argument(help="the read model: balances, payouts, accounts, …")],
    database_url: DatabaseUrl = None,
    wait: Wait = 0.0,
) -> None:
    """Drop a read model and rebuild it from the whole event log (not while a projector runs
    it: that one is named and this exits 2)."""
    from adapters.cli.progress import polled

    settings, ledger, view = _open(database_url)
    runner = _projector(ledger, view, [name])
    locks = _take_locks(settings, [name], wait)
    head = int(ledger.recorder.max_notification_id() or 0)
    try:
        with polled(f"rebuilding {name}", head, lambda: runner.position(name)):
            applied = runner.rebuild(name)
    finally:
        _release(locks)
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
