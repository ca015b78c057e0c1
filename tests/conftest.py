"""Shared fixtures for backing services (PostgreSQL, RabbitMQ, Redis).

Locally a missing service skips the tests that need it, so a laptop without
Docker can still run the fast suite. Under CI (``CI`` set) it fails instead:
a silently skipped database test there would hide real breakage.
"""

from __future__ import annotations

import os
import socket
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

# Same default as scripts/test.
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
CONNECT_TIMEOUT_S = 3


def require_service(name: str, reason: str) -> NoReturn:
    """Fail under CI, skip elsewhere, because service ``name`` is unavailable."""
    message = f"{name} unavailable: {reason}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set, so this is an error, not a skip)", pytrace=False)
    pytest.skip(message)


def _check_tcp(name: str, url: str, default_port: int) -> None:
    """Plain TCP connect: proves something listens without needing a client library."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return
    except OSError as exc:
        error = str(exc)
    # Outside the except block so the report isn't cluttered with a chained traceback.
    require_service(name, f"cannot connect to {host}:{port} ({error})")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    # Imported here so tests that never touch the database don't need psycopg.
    import psycopg

    url = os.environ.get("SLUICE_TEST_DATABASE_URL", DEFAULT_DATABASE_URL)
    try:
        psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S).close()
        return url
    except psycopg.Error as exc:
        error = str(exc).strip()
    require_service("PostgreSQL", f"cannot connect to {url} ({error})")


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    url = os.environ.get("SLUICE_TEST_RABBITMQ_URL", DEFAULT_RABBITMQ_URL)
    _check_tcp("RabbitMQ", url, 5672)
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("SLUICE_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    _check_tcp("Redis", url, 6379)
    return url
