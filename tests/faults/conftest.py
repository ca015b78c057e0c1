"""Fixtures of the fault suite. Every test starts what it breaks (see ``support``); these only
check that the tools exist, failing under CI and skipping elsewhere (tests/conftest.py's rule)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import pytest

from tests.conftest import require_service


@pytest.fixture(scope="session")
def postgres_tools() -> None:
    """initdb/pg_ctl of the installed server, and root to run them as ``postgres``."""
    if shutil.which("pg_config") is None or shutil.which("runuser") is None:
        require_service("PostgreSQL server tools", "pg_config or runuser not found")
    if os.geteuid() != 0:
        require_service("PostgreSQL server tools", "the fault suite runs as root (runuser)")


@pytest.fixture(scope="session")
def rabbitmq_tools() -> None:
    if not os.path.exists("/usr/lib/rabbitmq/bin/rabbitmq-server") or os.geteuid() != 0:
        require_service("RabbitMQ server", "no rabbitmq-server to start a private node with")


@pytest.fixture(autouse=True)
def _timed(request: pytest.FixtureRequest) -> Iterator[None]:
    """Prints each fault test's duration (the suite's time budget is stated in the report)."""
    started = time.monotonic()
    yield
    print(f"\n[faults] {request.node.name}: {time.monotonic() - started:.1f} s")
