"""Long-running worker-side processes: ``python -m workers.cli relay|scheduler|dead-letters``.

``sluice relay``, ``sluice scheduler`` and ``sluice worker dead-letters`` exec this module
(the import contracts keep ``adapters`` from importing ``workers``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from adapters.settings import Settings
from workers.actors import queue_names, setup
from workers.broker import broker_url, make_broker, queue_prefix

DEAD_LETTERS_MAX = 1_000


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _open(settings: Settings) -> tuple[Any, Any]:
    from adapters.bootstrap import bootstrap, read_model

    return bootstrap(settings, role="worker"), read_model(settings, role="worker")


def relay(args: argparse.Namespace) -> int:
    from workers.relay import Relay

    settings = Settings()
    broker = make_broker(broker_url())
    setup(broker, queue_prefix())
    ledger, view = _open(settings)
    stop = _stop_on_signals()
    try:
        runner = Relay(ledger, view, settings, name=args.name)
        if args.once:
            print(f"relay: {runner.run_once()} events, {runner.published} messages")
        else:
            runner.run(stop)
    finally:
        broker.close()
        ledger.close()
    return 0


def scheduler(args: argparse.Namespace) -> int:
    from workers.scheduler import Scheduler

    settings = Settings()
    broker = make_broker(broker_url())
    setup(broker, queue_prefix())
    ledger, view = _open(settings)
    stop = _stop_on_signals()
    try:
        runner = Scheduler(ledger, view, settings)
        if args.once:
            if not runner.singleton.acquire(stop):
                return 1
            print(f"scheduler tick: {runner.tick()}")
            runner.singleton.close()
        else:
            runner.run(stop, tick_s=args.tick)
    finally:
        broker.close()
        ledger.close()
    return 0


def dead_letters(args: argparse.Namespace) -> int:
    """Lists dead-lettered messages (RabbitMQ ``<queue>.XQ``): basic_get without ack, so
    closing the channel puts every message back; nothing is consumed."""
    import json

    import pika

    url = broker_url()
    if not url.startswith(("amqp://", "amqps://")):
        print("dead-letters lists RabbitMQ's <queue>.XQ queues; SLUICE_BROKER_URL is not amqp")
        return 2
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


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(prog="workers.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("relay")
    r.add_argument("--once", action="store_true")
    r.add_argument("--name", default="default")
    r.set_defaults(run=relay)
    s = sub.add_parser("scheduler")
    s.add_argument("--once", action="store_true")
    s.add_argument("--tick", type=float, default=10.0)
    s.set_defaults(run=scheduler)
    d = sub.add_parser("dead-letters")
    d.add_argument("--limit", type=int, default=DEAD_LETTERS_MAX)
    d.set_defaults(run=dead_letters)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
