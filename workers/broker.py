"""The dramatiq broker, chosen by URL (the factory lives in ``adapters.bootstrap``). Nothing
here creates a broker at import time."""

from __future__ import annotations

import os

import dramatiq

from adapters.bootstrap import message_broker

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"
BROKER_URL_ENV = "SLUICE_BROKER_URL"
QUEUE_PREFIX_ENV = "SLUICE_QUEUE_PREFIX"  # isolates deployments (and test runs) on one broker


def broker_url() -> str:
    return os.environ.get(BROKER_URL_ENV) or DEFAULT_BROKER_URL


def queue_prefix() -> str:
    return os.environ.get(QUEUE_PREFIX_ENV, "")


def make_broker(url: str) -> dramatiq.Broker:
    """``amqp://`` → RabbitMQ with publisher confirms (``send()`` returns once RabbitMQ has the
    message), ``redis://`` → Redis, ``stub://`` → the in-memory StubBroker (tests, embedded)."""
    broker: dramatiq.Broker = message_broker(url)
    return broker
