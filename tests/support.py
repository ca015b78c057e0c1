"""Helpers shared by the ledger tests: stores, event counts, aggregate state comparison."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError

from adapters.bootstrap import bootstrap
from adapters.settings import Settings
from ledger.application import Ledger
from ledger.ids import command_record_id
from ledger.records import CommandRecord

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PLATFORM = "acct_platform"
# The kernel may give the port it just gave back to the next bind: a few more tries find
# another (the ephemeral range holds thousands); more than this means ports are running out.
FREE_PORT_TRIES_MAX = 100
_ports_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on as this returns (bound, then released), and never one handed
    out before in this test run: two servers started in one test (a cluster and its second
    port, two metrics endpoints) once drew the same port and one failed to bind."""
    for _ in range(FREE_PORT_TRIES_MAX):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _ports_handed_out:
            _ports_handed_out.add(port)
            return port
    raise RuntimeError(f"no new free port in {FREE_PORT_TRIES_MAX} tries")


def delete_queues(url: str, prefix: str) -> None:
    """Deletes the queues (with their delay and dead-letter queues) that a test's workers
    declared under ``prefix`` on the shared RabbitMQ, so runs leave nothing behind."""
    import pika

    from workers.actors import queue_names

    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = conn.channel()
        for queue in queue_names(prefix):
            for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
                channel.queue_delete(name)
    finally:
        conn.close()


class SluiceProcess:
    """A long-running ``sluice`` command in its own session, its output in ``log``; ``stop``
    ends the session (SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``)."""

    STOP_TIMEOUT_S = 30.0  # SIGTERM to exit: the relay wakes from LISTEN within 5 s

    def __init__(self, log: Path, env: Mapping[str, str], *args: str) -> None:
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "adapters.cli", *args],
                cwd=ROOT,
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(self.STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(self.STOP_TIMEOUT_S)


def new_ledger(
    database_url: str,
    clock: Callable[[], datetime],
    *,
    create_tables: bool = True,
    cache_maxsize: int = 10_000,
) -> Ledger:
    settings = Settings(database_url=database_url, aggregate_cache_maxsize=cache_maxsize)
    return bootstrap(settings, clock=clock, create_tables=create_tables)


def uncached_ledger(
    database_url: str, clock: Callable[[], datetime], *, create_tables: bool = False
) -> Ledger:
    """A second Ledger on the store that rebuilds every aggregate from it (snapshot and events)
    on each read: ``aggregate_cache_maxsize=0`` turns its cache off."""
    ledger = new_ledger(database_url, clock, create_tables=create_tables, cache_maxsize=0)
    assert ledger.repository.cache is None, "aggregate_cache_maxsize=0 left a cache on"
    return ledger


def event_count(app: Ledger) -> int:
    return len(list(app.iter_events()))


def command_record(app: Ledger, idempotency_key: str) -> CommandRecord | None:
    try:
        found = app.repository.get(command_record_id(idempotency_key))
    except AggregateNotFoundError:
        return None
    assert isinstance(found, CommandRecord)
    return found


def aggregate_state(aggregate: Any) -> dict[str, Any]:
    """Everything an aggregate knows, minus the events it has not saved yet."""
    state = dict(vars(aggregate))
    state.pop("_pending_events", None)
    state["__class__"] = type(aggregate)
    return state


def aggregate_ids(app: Ledger) -> set[UUID]:
    return {event.originator_id for _, event in app.iter_events()}


def _with_schema(base_url: str, schema: str) -> str:
    separator = "&" if "?" in base_url else "?"
    return f"{base_url}{separator}schema={schema}"


def drop_postgres_schema(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    conninfo = url.split("?", 1)[0]
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def new_postgres_schema(base_url: str) -> tuple[str, Callable[[], None]]:
    """A database URL on a new, empty schema, and the function that drops it."""
    schema = f"sluice_test_{uuid4().hex[:16]}"
    return _with_schema(base_url, schema), lambda: drop_postgres_schema(base_url, schema)


@contextmanager
def fresh_postgres_schema(base_url: str) -> Iterator[str]:
    url, drop = new_postgres_schema(base_url)
    try:
        yield url
    finally:
        drop()
