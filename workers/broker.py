"""The dramatiq broker, chosen by URL (the factory lives in ``adapters.bootstrap``). Nothing
here creates a broker at import time."""

from __future__ import annotations

import dramatiq

from adapters.bootstrap import message_broker
from adapters.settings import DEFAULT_BROKER_URL, Settings

__all__ = ["DEFAULT_BROKER_URL", "broker_url", "make_broker", "queue_prefix"]


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
