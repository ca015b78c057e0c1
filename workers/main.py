"""Entry module for the dramatiq CLI: ``dramatiq workers.main`` (or ``sluice worker``).

Importing this module — and only this one — creates the broker from ``SLUICE_BROKER_URL``
(default ``amqp://guest:guest@127.0.0.1:5672/``) and declares the actors on it, with queue
names prefixed by ``SLUICE_QUEUE_PREFIX`` (default none). The actors build their Ledger,
read-model store and Stripe gateway from the ``SLUICE_*`` settings on first use.

Each worker process logs in the one format (``adapters.logs``) and counts its commands; with
``SLUICE_METRICS_PORT`` (``sluice worker --metrics-port``, which also sets up the multiprocess
directory before anything imports prometheus-client) dramatiq's Prometheus middleware serves
them with dramatiq's own series.
"""

from __future__ import annotations

from adapters import logs
from adapters.settings import Settings
from workers.actors import setup
from workers.broker import broker_url, make_broker, queue_prefix

logs.configure(process="worker")

broker = make_broker(broker_url())
if Settings().metrics_port is not None:  # `sluice worker --metrics-port` sets it
    from dramatiq.middleware.prometheus import Prometheus

    broker.add_middleware(Prometheus())
# Imported after the multiprocess setup above: counts every command and logs its line.
from adapters.metrics import observe_commands  # noqa: E402

observe_commands()
actors = setup(broker, queue_prefix())
