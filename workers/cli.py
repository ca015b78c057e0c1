"""Long-running worker-side processes: ``python -m workers.cli
relay|scheduler|worker|dead-letters``.

``sluice relay``, ``sluice scheduler``, ``sluice worker`` and ``sluice worker dead-letters`` exec
this module (the import contracts keep ``adapters`` from importing ``workers``). Each configures
the one log format (``adapters.logs``) and, with ``--metrics-port`` (or ``SLUICE_METRICS_PORT``),
serves its metrics (``adapters.metrics``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

from adapters import logs
from adapters.cli.common import operational_problem
from adapters.settings import Settings
from workers.actors import queue_names, setup
from workers.broker import broker_url, check_reachable, make_broker, queue_prefix, quiet_pika

DEAD_LETTERS_MAX = 1_000
WAIT_HELP = "seconds to wait for a running instance to stop (default 0: exit 2 at once)"


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _open(settings: Settings) -> tuple[Any, Any]:
    from adapters.bootstrap import bootstrap, read_model

    return bootstrap(settings, role="worker"), read_model(settings, role="worker")


def _take_lock(
    settings: Settings, name: str, args: argparse.Namespace, stop: threading.Event
) -> tuple[Any, Any, Any, Any] | None:
    """The store's ``name`` lock, then the ledger, the read model and the health server (with
    ``--health-port``). The lock is tried first, before anything is opened; with ``--wait``
    an instance that did not get it opens the store and serves its health while it waits (a
    standby: alive, not ready). None (after saying who holds it, on one line) when another
    instance keeps it: a second relay or scheduler, or a ``--once`` beside a running one,
    never starts silently."""
    from adapters import health
    from workers.singleton import Singleton

    lock = Singleton(settings, name)
    held = lock.try_acquire()
    if held or args.wait > 0:
        ledger, view = _open(settings)
        server = health.serve(
            args.health_port, name, settings, view, locks={name: lock}, broker_url=broker_url()
        )
        if held or lock.wait_acquire(args.wait, stop):
            return lock, ledger, view, server
        health.close(server)
        ledger.close()
    print(f"error: {lock.busy_message(name)}", file=sys.stderr)
    lock.close()
    return None


def relay(args: argparse.Namespace) -> int:
    from workers.relay import Relay
    from workers.singleton import RELAY_LOCK

    settings = Settings()
    stop = _stop_on_signals()
    started = _take_lock(settings, RELAY_LOCK, args, stop)
    if started is None:
        return 2
    lock, ledger, view, health_server = started
    broker = make_broker(broker_url())
    setup(broker, queue_prefix())
    metrics = _serve_metrics(args, "relay", ledger, view)
    try:
        runner = Relay(ledger, view, settings, name=args.name)
        runner.singleton = lock  # held from here on: run() keeps it, or re-takes a lost one
        if args.once:
            print(f"relay: {runner.run_once()} events, {runner.published} messages")
        else:
            runner.run(stop)
    finally:
        lock.close()
        _stop_metrics(metrics)
        _stop_metrics(health_server)
        broker.close()
        ledger.close()
    return 0


def scheduler(args: argparse.Namespace) -> int:
    from workers.scheduler import Scheduler
    from workers.singleton import SCHEDULER_LOCK

    settings = Settings()
    stop = _stop_on_signals()
    started = _take_lock(settings, SCHEDULER_LOCK, args, stop)
    if started is None:
        return 2
    lock, ledger, view, health_server = started
    broker = make_broker(broker_url())
    setup(broker, queue_prefix())
    metrics = _serve_metrics(args, "scheduler", ledger, view)
    try:
        runner = Scheduler(ledger, view, settings)
        runner.singleton = lock  # held from here on
        if args.once:
            if not runner.singleton.acquire(stop):
                return 1
            print(f"scheduler tick: {runner.tick()}")
            runner.singleton.close()
        else:
            runner.run(stop, tick_s=args.tick)
    finally:
        lock.close()
        _stop_metrics(metrics)
        _stop_metrics(health_server)
        broker.close()
        ledger.close()
    return 0


def _serve_metrics(args: argparse.Namespace, process: str, ledger: Any, view: Any) -> Any:
    """The relay's lag, or the scheduler's inbox, payouts and queue depths, on the metrics port
    (with this process's command counters)."""
    from adapters import metrics

    if process == "relay":
        collectors: list[Any] = [metrics.StoreCollector(ledger, view, [metrics.relay_lag])]
    else:
        parts = [metrics.inbox_events, metrics.payouts_by_status, metrics.reconciliation_breaks]
        collectors = [
            metrics.StoreCollector(ledger, view, parts),
            metrics.QueueCollector(broker_url(), queue_names(queue_prefix())),
        ]
    return metrics.serve(args.metrics_port, *collectors)


def _stop_metrics(server: Any) -> None:
    """Stops a metrics or health server (None: there is none)."""
    if server is not None:
        server.shutdown()


def worker(args: argparse.Namespace) -> int:
    """dramatiq's CLI in this process (``dramatiq workers.main``), after the one log format is
    set (its processes fork from this one and keep it) and, with a metrics port, dramatiq's
    Prometheus middleware is configured: its exposition process serves every worker
    process's series (``dramatiq_*`` and Sluice's command counters) on that port, collected
    through prometheus-client's multiprocess files in a directory of this run's own."""
    import tempfile

    from dramatiq.cli import main as dramatiq_main
    from dramatiq.cli import make_argument_parser

    if args.metrics_port is not None:
        if "prometheus_client" in sys.modules:  # it picks single- or multiprocess at import
            raise RuntimeError("prometheus_client was imported before its multiprocess setup")
        # dramatiq reads lowercase names; an operator may give the directory.
        given = os.environ.get("dramatiq_prom_db")  # noqa: SIM112
        directory = given or tempfile.mkdtemp(prefix="sluice-prom-")
        os.environ.update(
            {
                "dramatiq_prom_db": directory,
                "PROMETHEUS_MULTIPROC_DIR": directory,
                "dramatiq_prom_port": str(args.metrics_port),
                # adapters.metrics' settings, read here without importing prometheus_client.
                "dramatiq_prom_host": Settings().metrics_host,
                "SLUICE_METRICS_PORT": str(args.metrics_port),  # workers.main adds the middleware
            }
        )
    # dramatiq's consumers reconnect to a broker that goes away (logged, retried every few
    # seconds), which is right once running; at start, an unreachable broker is a mistake to
    # say in one line (main) rather than a log flood: connect once first.
    preflight = make_broker(broker_url())
    try:
        check_reachable(preflight)
    finally:
        preflight.close()
    argv = ["workers.main", "--processes", str(args.processes), "--threads", str(args.threads)]
    if args.health_port is not None:
        # A process of its own, forked by dramatiq's main process (adapters.health).
        os.environ["SLUICE_HEALTH_PORT"] = str(args.health_port)
        argv += ["--fork-function", "adapters.health:worker_health"]
    result: int = dramatiq_main(make_argument_parser().parse_args([*argv, "--skip-logging"]))
    return result


def dead_letters(args: argparse.Namespace) -> int:
    """Lists dead-lettered messages (RabbitMQ ``<queue>.XQ``): basic_get without ack, so
    closing the channel puts every message back; nothing is consumed."""
    import json

    import pika

    url = broker_url()
    if not url.startswith(("amqp://", "amqps://")):
        print("dead-letters lists RabbitMQ's <queue>.XQ queues; SLUICE_BROKER_URL is not amqp")
        return 2
    with quiet_pika():  # unreachable: one line from main
        conn = pika.BlockingConnection(pika.URLParameters(url))
    total = 0
    try:
        for queue in queue_names(queue_prefix()):
            channel = conn.channel()
            try:
                channel.queue_declare(f"{queue}.XQ", passive=True)
            except pika.exceptions.ChannelClosedByBroker:
                continue  # never declared: no dead letters
            for _ in range(args.limit):
                method, _props, body = channel.basic_get(f"{queue}.XQ", auto_ack=False)
                if method is None:
                    break
                message = json.loads(body)
                options = message.get("options", {})
                print(
                    f"{queue}.XQ {message.get('message_id')} {message.get('actor_name')}"
                    f" args={message.get('args')} retries={options.get('retries', 0)}"
                    f" error={str(options.get('traceback', '')).strip().splitlines()[-1:]}"
                )
                total += 1
            channel.close()  # unacked → requeued
    finally:
        conn.close()
    print(f"{total} dead letter(s)")
    return 0


def _metrics_port_option(parser: argparse.ArgumentParser) -> None:
    """``--metrics-port`` and ``--health-port`` (each defaults to its setting)."""
    parser.add_argument("--metrics-port", type=int, default=Settings().metrics_port)
    parser.add_argument("--health-port", type=int, default=Settings().health_port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workers.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("relay")
    r.add_argument("--once", action="store_true")
    r.add_argument("--name", default="default")
    r.add_argument("--wait", type=float, default=0.0, help=WAIT_HELP)
    _metrics_port_option(r)
    r.set_defaults(run=relay)
    s = sub.add_parser("scheduler")
    s.add_argument("--once", action="store_true")
    s.add_argument("--tick", type=float, default=10.0)
    s.add_argument("--wait", type=float, default=0.0, help=WAIT_HELP)
    _metrics_port_option(s)
    s.set_defaults(run=scheduler)
    w = sub.add_parser("worker")
    w.add_argument("--processes", type=int, default=2)
    w.add_argument("--threads", type=int, default=4)
    _metrics_port_option(w)
    w.set_defaults(run=worker)
    d = sub.add_parser("dead-letters")
    d.add_argument("--limit", type=int, default=DEAD_LETTERS_MAX)
    d.set_defaults(run=dead_letters)
    args = parser.parse_args(argv)
    logs.use(None, None, process=args.command)
    try:
        result: int = args.run(args)
    except Exception as error:  # no broker, no database, no schema: the fix, not a traceback
        problem = operational_problem(error)
        if problem is None:
            raise
        print(f"error {problem}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
