"""The dramatiq broker, chosen by URL (the factory lives in ``adapters.bootstrap``). Nothing
here creates a broker at import time."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import dramatiq

from adapters.bootstrap import message_broker
from adapters.settings import DEFAULT_BROKER_URL, Settings

__all__ = [
    "DEFAULT_BROKER_URL",
    "broker_url",
    "check_reachable",
    "make_broker",
    "queue_prefix",
    "quiet_pika",
]


def broker_url(settings: Settings | None = None) -> str:
    """``SLUICE_BROKER_URL`` (environment or ``.env``), through the one settings model."""
    return (settings or Settings()).broker_url


def queue_prefix(settings: Settings | None = None) -> str:
    """``SLUICE_QUEUE_PREFIX``: isolates deployments (and test runs) on one broker."""
    return (settings or Settings()).queue_prefix


def make_broker(url: str) -> dramatiq.Broker:
    """``amqp://`` → RabbitMQ with publisher confirms (``send()`` returns once RabbitMQ has the
    message), ``redis://`` → Redis, ``stub://`` → the in-memory StubBroker (tests, embedded)."""
    broker: dramatiq.Broker = message_broker(url)
    return broker


@contextmanager
def quiet_pika() -> Iterator[None]:
    """pika logs each failed connection attempt at ERROR with its traceback; where the caller
    turns the failure into one line of its own, that is noise."""
    logger = logging.getLogger("pika")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_reachable(broker: dramatiq.Broker) -> None:
    """Connects once, raising the broker's own error when it cannot be reached (RabbitMQ: a
    connection, bounded by pika's socket timeout; Redis: a PING; the stub broker: nothing)."""
    with quiet_pika():
        if hasattr(type(broker), "connection"):  # RabbitmqBroker: connects on first access
            _ = broker.connection  # type: ignore[attr-defined]
    client = getattr(broker, "client", None)
    if client is not None and hasattr(client, "ping"):
        client.ping()
