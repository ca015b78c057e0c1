"""Liveness and readiness of every process, probed over HTTP on real processes and PostgreSQL:
the projector, relay and scheduler ready once they hold their lock, a standby started with
``--wait`` alive but not ready until the first one stops, the workers ready with RabbitMQ;
the API and the processes not ready (503 ``migrations_pending``) while a migration is pending,
naming the same migrations as ``sluice db status``, and ``store_unreachable`` without a store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters import health, schema
from adapters.bootstrap import init_database, read_model
from adapters.http.app import create_app
from adapters.settings import Settings
from tests.integration.http_support import running
from tests.support import SluiceProcess, delete_queues, drop_postgres_schema, free_port

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
READY_WAIT_S = 60.0  # a process imports, connects, takes its lock: seconds on a busy CI box
TAKEOVER_WAIT_S = 30.0  # a standby retries its lock every second (adapters.locks.RETRY_S)
POLL_S = 0.2
PROBE_TIMEOUT_S = 10.0


def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}{path}", timeout=PROBE_TIMEOUT_S
        ) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError as error:  # not listening yet
        return 0, {"error": {"code": type(error).__name__}}


def wait_for(port: int, path: str, want: Callable[[int, dict[str, Any]], bool], within_s: float,
             why: str) -> tuple[int, dict[str, Any]]:  # fmt: skip
    end = time.monotonic() + within_s
    last: tuple[int, dict[str, Any]] = (0, {})
    while time.monotonic() < end:
        last = probe(port, path)
        if want(*last):
            return last
        time.sleep(POLL_S)
    raise AssertionError(f"{why}: not within {within_s}s; last answer {last}")


def ready(status: int, _: dict[str, Any]) -> bool:
    return status == 200


def code_is(code: str) -> Callable[[int, dict[str, Any]], bool]:
    return lambda status, body: status == 503 and body.get("error", {}).get("code") == code


@pytest.fixture
def store(postgres_url: str) -> Iterator[Settings]:
    name = f"health_{uuid.uuid4().hex[:12]}"
    settings = Settings(database_url=f"{postgres_url}?schema={name}")
    try:
        init_database(settings)
        yield settings
    finally:
        drop_postgres_schema(postgres_url, name)


Process = SluiceProcess


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    started: list[Process] = []
    declared: list[tuple[str, str]] = []  # (broker, prefix) of processes on a real RabbitMQ

    def run(settings: Settings, *args: str, broker: str = "stub://") -> Process:
        prefix = f"health{uuid.uuid4().hex[:8]}_"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        env |= {
            "SLUICE_DATABASE_URL": settings.database_url,
            "SLUICE_BROKER_URL": broker,
            "SLUICE_QUEUE_PREFIX": prefix,
            "SLUICE_LOG_FORMAT": "json",
        }
        if broker.startswith("amqp"):
            declared.append((broker, prefix))
        started.append(
            SluiceProcess(tmp_path / f"{args[0]}-{uuid.uuid4().hex[:6]}.log", env, *args)
        )
        return started[-1]

    yield run
    for process in started:
        process.stop()
    for broker, prefix in declared:  # the workers' queues on the shared broker
        delete_queues(broker, prefix)


@pytest.mark.parametrize(
    "command",
    [["project", "run"], ["relay"], ["scheduler", "--tick", "1"]],
    ids=["projector", "relay", "scheduler"],
)
def test_a_standby_is_alive_but_not_ready_until_it_takes_over(
    store: Settings, start: Callable[..., Process], command: list[str]
) -> None:
    first_port, second_port = free_port(), free_port()
    first = start(store, *command, "--health-port", str(first_port))
    wait_for(first_port, "/readyz", ready, READY_WAIT_S, f"{command[0]} ready")
    assert probe(first_port, "/healthz")[0] == 200
    second = start(store, *command, "--health-port", str(second_port), "--wait", "120")
    wait_for(second_port, "/healthz", ready, READY_WAIT_S, "the standby alive")
    _, body = wait_for(
        second_port, "/readyz", code_is("standby"), READY_WAIT_S, "the standby not ready"
    )
    assert f"pid {first.proc.pid}" in body["error"]["message"], body  # says who holds it
    assert probe(first_port, "/readyz")[0] == 200  # the first one stays ready
    first.stop()
    wait_for(second_port, "/readyz", ready, TAKEOVER_WAIT_S, "the standby took over")
    assert second.proc.poll() is None


def test_the_workers_are_ready_with_the_broker_and_the_store(
    store: Settings, start: Callable[..., Process], rabbitmq_url: str
) -> None:
    port = free_port()
    workers = start(
        store, "worker", "--processes", "1", "--threads", "1", "--health-port", str(port),
        broker=rabbitmq_url,
    )  # fmt: skip
    _, body = wait_for(port, "/readyz", ready, READY_WAIT_S, "the workers ready")
    assert body == {"status": "ready", "process": "worker"}
    assert probe(port, "/healthz") == (200, {"status": "ok", "process": "worker"})
    workers.stop()
    assert probe(port, "/healthz")[0] == 0, "the health port outlived the workers"


def _unapply_last_migration(settings: Settings) -> tuple[str, Callable[[], None]]:
    """Forgets the newest migration's record (its tables stay): the store then reads as one
    migration behind, as after deploying code that brings a new one. Returns its id and how to
    put the record back (a migration may not be safe to apply twice)."""
    import psycopg
    from psycopg import sql

    last = schema.status(settings).migrations[-1].id
    url, _, query = settings.database_url.partition("?")
    table = sql.Identifier(query.removeprefix("schema="), "_yoyo_migration")
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL("DELETE FROM {} WHERE migration_id = %s RETURNING *").format(table), (last,)
        ).fetchone()
        names = [column.name for column in conn.execute(
            sql.SQL("SELECT * FROM {} LIMIT 0").format(table)
        ).description or []]  # fmt: skip
    assert row is not None and schema.status(settings).pending == [last]

    def restore() -> None:
        insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            table,
            sql.SQL(", ").join(map(sql.Identifier, names)),
            sql.SQL(", ").join(sql.Placeholder() * len(names)),
        )
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(insert, row)

    return last, restore


def test_not_ready_while_a_migration_is_pending(
    store: Settings, start: Callable[..., Process]
) -> None:
    port = free_port()
    start(store, "relay", "--health-port", str(port))
    wait_for(port, "/readyz", ready, READY_WAIT_S, "the relay ready")
    with running(create_app(store, run_projector=False)) as address:
        api = int(address.rsplit(":", 1)[1])
        assert probe(api, "/readyz") == (200, {"status": "ready"})
        pending, restore = _unapply_last_migration(store)
        for where in (port, api):
            status, body = probe(where, "/readyz")
            assert status == 503 and body["error"]["code"] == "migrations_pending", body
            assert (
                pending in body["error"]["message"]
                and "sluice db migrate" in body["error"]["message"]
            )
            assert probe(where, "/healthz")[0] == 200  # alive: a restart would not migrate
        restore()  # as `sluice db migrate` would record it
        assert probe(api, "/readyz")[0] == 200
        assert probe(port, "/readyz")[0] == 200


def test_pending_migrations_are_those_db_status_names(store: Settings) -> None:
    view = read_model(store)
    try:
        known = health.known_migrations(store)
        assert health.pending_migrations(view, known) == schema.status(store).pending == []
        pending, restore = _unapply_last_migration(store)
        assert health.pending_migrations(view, known) == [pending]
        restore()
        assert health.pending_migrations(view, known) == schema.status(store).pending == []
    finally:
        view.datastore.close()


def test_not_ready_without_a_store(tmp_path: Path) -> None:
    # A port nobody listens on: connections are refused.
    closed = free_port()
    settings = Settings(
        database_url=f"postgresql://postgres@127.0.0.1:{closed}/none",
        http_ready_timeout_s=2.0,
    )
    view = read_model(settings, role="worker")
    server = health.serve(free_port(), "relay", settings, view)
    assert server is not None
    try:
        status, body = probe(server.port, "/readyz")
        # A pool that never connected waits out the deadline for a connection (stalled); one
        # whose server went away fails at once (unreachable): not ready either way, and fast.
        assert status == 503, body
        assert body["error"]["code"] in ("store_unreachable", "store_stalled"), body
        assert probe(server.port, "/healthz")[0] == 200
    finally:
        server.close()
        view.datastore.close()


def test_a_health_port_in_use_is_one_line_and_exit_2(store: Settings) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        env |= {"SLUICE_DATABASE_URL": store.database_url, "SLUICE_BROKER_URL": "stub://"}
        done = subprocess.run(
            [sys.executable, "-m", "adapters.cli", "relay", "--health-port", str(port)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=READY_WAIT_S, check=False,
        )  # fmt: skip
    said = (done.stdout + done.stderr).strip()
    assert done.returncode == 2, said
    assert said.splitlines() == [said] and f"cannot serve health on 127.0.0.1:{port}" in said
