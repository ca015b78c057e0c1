"""Liveness and readiness of every Sluice process, on Kubernetes' and compose's terms.

- **Liveness** (``GET /healthz``): the process answers. It never touches the store or the
  broker, since restarting a process does not bring a database back; a supervisor restarts the
  process when this fails. The workers' probe also fails when dramatiq's main process is gone.
- **Readiness** (``GET /readyz``): the process can do its work now. Not ready (503 with a code,
  in the API's error envelope) while the store is unreachable (``store_unreachable``) or does
  not answer within ``SLUICE_HTTP_READY_TIMEOUT_S`` (``store_stalled``), while migrations are
  pending (``migrations_pending``: the same ids as ``sluice db status``), while the broker is
  away (``broker_unreachable``), and, for the relay, the scheduler and the projector, while this
  instance does not hold its single-instance lock (``standby``: a second instance waiting with
  ``--wait`` is alive but not ready, and becomes ready when it takes over).

The API serves both on its own port (``adapters.http.reads``, with the same store check). The
relay, scheduler, projector and workers serve them on ``--health-port`` (``SLUICE_HEALTH_PORT``)
with a small standard-library server of their own, apart from the metrics port: the workers'
metrics port belongs to dramatiq's exposition process, a scrape reads the store under its own
deadline, and a probe should neither need metrics turned on nor count as a scrape.

Each readiness check reads through the process's own store (its pool and the deadline watchdog
of ``adapters.deadlines``), so a probe is bounded even when the server is frozen; checks run one
at a time, and a probe arriving while one runs waits for it (bounded) rather than piling up.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from adapters import deadlines
from adapters.settings import Settings

log = logging.getLogger("sluice.health")

BROKER_TIMEOUT_S = 2.0  # connect and socket timeouts of the broker check
CHECK_SLACK_S = 1.0  # a probe waits this much beyond the store's timeout for a running check
MIGRATION_TABLE = "_yoyo_migration"  # adapters.schema.MIGRATION_TABLE (yoyo's default)


@dataclass(frozen=True)
class NotReady:
    """Why a process is not ready: a stable ``code`` and one line for a person."""

    code: str
    message: str


Check = Callable[[], "NotReady | None"]


# The store and its schema ----------------------------------------------------------------------


@lru_cache(maxsize=4)
def _known(dialect: str) -> tuple[str, ...]:
    from yoyo import read_migrations

    import migrations

    return tuple(m.id for m in read_migrations(str(migrations.directory(dialect))))


def known_migrations(settings: Settings) -> tuple[str, ...] | None:
    """The migration ids this code ships for the store's dialect (read once per process: they
    change only with the code); None for a store without migrations (``memory://``)."""
    from adapters import schema

    try:
        return _known(schema.dialect(settings))
    except schema.SchemaError:
        return None


def applied_migrations(view: Any) -> set[str]:
    """The migration ids recorded in the store, read through the read model's connection."""
    with view.read() as tx:
        if view.dialect == "postgres":
            schema = view.datastore.schema
            tx.execute("SELECT to_regclass(%s)::text AS found", (f'"{schema}".{MIGRATION_TABLE}',))
            table = f'"{schema}".{MIGRATION_TABLE}'
        else:
            tx.execute(
                "SELECT name AS found FROM sqlite_master WHERE type = 'table' AND name = %s",
                (MIGRATION_TABLE,),
            )
            table = MIGRATION_TABLE
        row = tx.one()
        if row is None or row["found"] is None:
            return set()  # never migrated
        tx.execute(f"SELECT migration_id FROM {table}")
        return {str(r["migration_id"]) for r in tx.all()}


def pending_migrations(view: Any, known: Sequence[str] | None) -> list[str]:
    """``known`` ids not recorded in the store, in order (as ``sluice db status`` lists them)."""
    if known is None:
        return []
    applied = applied_migrations(view)
    return [m for m in known if m not in applied]


def migrations_pending(pending: Sequence[str]) -> NotReady:
    return NotReady(
        "migrations_pending",
        f"{len(pending)} migration(s) pending ({', '.join(pending)}): run `sluice db migrate`",
    )


def store_check(settings: Settings, view: Any, timeout_s: float) -> Check:
    """Ready when the store answers within ``timeout_s`` and no migration is pending."""
    known = known_migrations(settings)

    def check() -> NotReady | None:
        try:
            with deadlines.within(timeout_s):
                pending = pending_migrations(view, known)
        except deadlines.DeadlineExceeded:
            return NotReady("store_stalled", f"the store did not answer within {timeout_s:g} s")
        except Exception as error:  # refused, reset, unknown host, authentication
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            return NotReady("store_unreachable", f"the store cannot be reached ({first})")
        return migrations_pending(pending) if pending else None

    return check


# Locks and the broker --------------------------------------------------------------------------


def lock_check(locks: Mapping[str, Any], what: str, timeout_s: float) -> Check:
    """Ready while every lock of ``locks`` (``adapters.locks.StoreLock``) is held by this
    process; a standby waiting for them is alive but not ready. Held or not is the lock's own
    state (no I/O); a standby also names the holder (one bounded read)."""

    def check() -> NotReady | None:
        missing = [name for name, lock in locks.items() if not lock.alive()]
        if not missing:
            return None
        holder = None
        if len(missing) == len(locks):
            with deadlines.within(timeout_s):
                holder = next(iter(locks.values())).holder()  # None when it cannot tell
        who = f" ({holder.describe()})" if holder is not None else ""
        return NotReady(
            "standby",
            f"standing by: this {what} does not hold the {', '.join(missing)} lock{who}",
        )

    return check


def broker_check(url: str) -> Check:
    """Ready when RabbitMQ accepts a connection within ``BROKER_TIMEOUT_S`` (other brokers, as
    the tests' stub, are not checked)."""

    def check() -> NotReady | None:
        if not url.startswith(("amqp://", "amqps://")):
            return None
        import pika

        params = pika.URLParameters(url)
        params.socket_timeout = BROKER_TIMEOUT_S
        params.blocked_connection_timeout = BROKER_TIMEOUT_S
        params.stack_timeout = BROKER_TIMEOUT_S * 2
        params.connection_attempts = 1
        try:
            pika.BlockingConnection(params).close()
        except Exception as error:
            return NotReady("broker_unreachable", f"the broker cannot be reached ({error!r})")
        return None

    return check


# One process's health ----------------------------------------------------------------------------


class Health:
    """A process's liveness (``alive``: callables, none by default) and readiness (``checks``,
    in order: the first failing one answers)."""

    def __init__(
        self,
        process: str,
        checks: Sequence[Check],
        *,
        timeout_s: float,
        alive: Sequence[Check] = (),
    ) -> None:
        self.process = process
        self.checks = list(checks)
        self.alive_checks = list(alive)
        self.timeout_s = timeout_s
        self._running = threading.Lock()  # one readiness evaluation at a time

    def live(self) -> NotReady | None:
        for check in self.alive_checks:
            found = check()
            if found is not None:
                return found
        return None

    def ready(self) -> NotReady | None:
        if not self._running.acquire(timeout=self.timeout_s + CHECK_SLACK_S):
            return NotReady("store_stalled", "a readiness check is still running")
        try:
            for check in self.checks:
                found = check()
                if found is not None:
                    return found
            return None
        finally:
            self._running.release()


def _body(process: str, problem: NotReady | None, ok: str) -> tuple[int, dict[str, Any]]:
    if problem is None:
        return 200, {"status": ok, "process": process}
    error = {"type": "api_error", "code": problem.code, "message": problem.message, "param": None}
    return 503, {"error": error, "process": process}


class _Handler(BaseHTTPRequestHandler):
    health: Health  # set on the subclass made per server

    def do_GET(self) -> None:  # http.server's name
        if self.path.split("?", 1)[0] == "/healthz":
            status, body = _body(self.health.process, self.health.live(), "ok")
        elif self.path.split("?", 1)[0] == "/readyz":
            status, body = _body(self.health.process, self.health.ready(), "ready")
        else:
            error = {"type": "invalid_request_error", "code": "resource_missing"}
            status, body = 404, {"error": error | {"message": "GET /healthz or /readyz"}}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 503:
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # the base's names
        log.debug("health probe: " + format, *args)  # a probe every few seconds: not at INFO


class HealthServer:
    """``health`` on ``host:port`` in a daemon thread; ``close()`` stops it."""

    def __init__(self, health: Health, port: int, host: str) -> None:
        handler = type("HealthHandler", (_Handler,), {"health": health})
        try:
            self.server = ThreadingHTTPServer((host, port), handler)
        except OSError as error:  # the port is taken, or the address is not this host's
            print(f"error: cannot serve health on {host}:{port}: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="sluice-health", daemon=True
        )
        self.thread.start()
        # A process forked from this one (dramatiq's) must not keep the listening socket open:
        # a probe would then reach a process that never answers.
        os.register_at_fork(after_in_child=self.server.socket.close)
        log.info("health on http://%s:%s/healthz and /readyz", host, port)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    shutdown = close  # the metrics server's name for it


def serve(
    port: int | None,
    process: str,
    settings: Settings,
    view: Any,
    *,
    locks: Mapping[str, Any] | None = None,
    broker_url: str | None = None,
) -> HealthServer | None:
    """Serves ``process``'s health on ``port`` (None: not at all): readiness is the store and
    its migrations, then the broker (if given), then the locks (if given)."""
    if port is None:
        return None
    timeout_s = settings.http_ready_timeout_s
    checks = [store_check(settings, view, timeout_s)]
    if broker_url is not None:
        checks.append(broker_check(broker_url))
    if locks is not None:
        checks.append(lock_check(locks, process, timeout_s))
    health = Health(process, checks, timeout_s=timeout_s)
    return HealthServer(health, port, settings.health_host)


def close(server: HealthServer | None) -> None:
    if server is not None:
        server.close()


# The workers -----------------------------------------------------------------------------------


def worker_health() -> int:
    """dramatiq's ``--fork-function`` for ``sluice worker --health-port``: a process of its own
    forked by dramatiq's main process once the worker processes are up (dramatiq stops it with
    them), serving the workers' health on ``SLUICE_HEALTH_PORT``. Alive while dramatiq's main
    process is; ready when the store, its migrations and the broker are."""
    from adapters.bootstrap import read_model

    settings = Settings()
    if settings.health_port is None:
        return 0
    parent = os.getppid()

    def main_process_alive() -> NotReady | None:
        if os.getppid() != parent:  # re-parented: dramatiq's main process is gone
            return NotReady("not_alive", "dramatiq's main process is gone")
        return None

    timeout_s = settings.http_ready_timeout_s
    views: list[Any] = []  # opened on the first probe that can: the store may be down now

    def store() -> NotReady | None:
        if not views:
            try:
                views.append(read_model(settings, role="worker"))
            except Exception as error:
                return NotReady("store_unreachable", f"the store cannot be opened ({error})")
        return store_check(settings, views[0], timeout_s)()

    checks = [store, broker_check(settings.broker_url)]
    health = Health("worker", checks, timeout_s=timeout_s, alive=[main_process_alive])
    server = HealthServer(health, settings.health_port, settings.health_host)
    try:
        server.thread.join()  # until dramatiq's SIGTERM ends this process
    finally:
        server.close()
    return 0
