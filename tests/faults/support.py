"""What the fault tests start, break and clean up themselves.

- ``PrivatePostgres``: a PostgreSQL cluster of its own (``initdb`` and ``pg_ctl`` from the
  installed server, run as the ``postgres`` user), on a free port, in a temporary data
  directory, with its own socket directory. Only its own processes are ever signalled: the
  postmaster named in its ``postmaster.pid`` (checked against the command line) and that
  postmaster's children. The shared server is never touched.
- ``PrivateRabbit``: a RabbitMQ node of its own (name, AMQP and distribution ports, data and log
  directories), run as the ``rabbitmq`` user; it can be stopped and started again.
- ``Serve``: ``sluice serve`` as a subprocess (SIGKILL-able), with its log kept for failures.
- ``Writes``: threads posting top-ups with unique Idempotency-Keys, each retried with the same
  key until acknowledged, remembering what was acknowledged.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60  # a cluster or a serve process that is not up by then is broken
RABBIT_START_TIMEOUT_S = 90  # a RabbitMQ node boots in ~12 s here; 90 s is a broken boot
STOP_TIMEOUT_S = 30


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Polls ``condition`` every 0.1 s until it is truthy (returned) or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


def pg_bindir() -> Path:
    out = subprocess.run(
        ["pg_config", "--bindir"], capture_output=True, text=True, check=True, timeout=10
    )
    return Path(out.stdout.strip())


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # the process ended meanwhile
            continue
        # pid (comm) state ppid ...: comm may hold spaces; split after its closing paren.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


# PostgreSQL --------------------------------------------------------------------------------------


class PrivatePostgres:
    """A throwaway PostgreSQL cluster. ``url`` is its ``postgres`` database (trust auth)."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="sluice-faults-pg-"))
        self.data = self.base / "data"
        self.sockets = self.base / "sockets"
        self.log = self.base / "postgres.log"
        self.port = free_port()
        self.bindir = pg_bindir()
        self.frozen: list[int] = []

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str, timeout: float = START_TIMEOUT_S) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            check=True,
            capture_output=True,
            timeout=timeout,
            cwd=self.base,
        )

    def init(self) -> PrivatePostgres:
        self.sockets.mkdir()
        shutil.chown(self.base, "postgres", "postgres")
        shutil.chown(self.sockets, "postgres", "postgres")
        self._as_postgres(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
            "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions",
        )  # fmt: skip
        return self.start()

    START_ATTEMPTS = 5  # after a crash, a dying backend may hold the port or memory a moment

    def start(self) -> PrivatePostgres:
        # fsync off: these tests kill processes, not the machine, so the page cache survives
        # and committed data with it; it keeps the suite fast.
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c max_connections=200 -c shared_buffers=32MB"
        )
        for attempt in range(self.START_ATTEMPTS):
            try:
                self._as_postgres(
                    str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                    "-o", options, "-w", "-t", str(START_TIMEOUT_S), "start",
                )  # fmt: skip
                return self
            except subprocess.CalledProcessError as failure:
                if attempt == self.START_ATTEMPTS - 1:
                    log = self.log.read_text()[-3000:] if self.log.exists() else ""
                    message = f"pg_ctl start failed: {failure.stderr!r}\n{log}"
                    raise AssertionError(message) from failure
                time.sleep(1.0)
        return self

    def postmaster(self) -> int | None:
        """The postmaster's pid, if it runs from this cluster's data directory."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            return None
        if str(self.data) not in cmdline or not _alive(pid):
            return None
        return pid

    def processes(self) -> list[int]:
        """The postmaster and its children (backends and background workers)."""
        pid = self.postmaster()
        return [] if pid is None else [pid, *_children(pid)]

    def kill9(self) -> None:
        """SIGKILL to the postmaster and every one of its processes at once: a crash. The
        postmaster is stopped first, so it cannot fork a backend that would outlive the rest."""
        postmaster = self.postmaster()
        assert postmaster is not None, "the private cluster is not running"
        os.kill(postmaster, signal.SIGSTOP)
        procs = [postmaster, *_children(postmaster)]
        for pid in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not any(_alive(p) for p in procs), STOP_TIMEOUT_S, "postgres to die")

    def freeze(self) -> None:
        """SIGSTOP to every process of the cluster: connections stay open, nothing answers."""
        self.frozen = self.processes()
        assert self.frozen, "the private cluster is not running"
        for pid in self.frozen:
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.frozen = []

    def stop(self) -> None:
        self.thaw()
        if self.postmaster() is not None:
            with contextlib.suppress(subprocess.SubprocessError):
                self._as_postgres(
                    str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                    "-w", "-t", str(STOP_TIMEOUT_S), "stop", timeout=STOP_TIMEOUT_S + 5,
                )  # fmt: skip
        shutil.rmtree(self.base, ignore_errors=True)

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            cursor = conn.execute(statement, params)
            return list(cursor.fetchall()) if cursor.description else []


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    try:
        yield pg.init()
    finally:
        pg.stop()


# RabbitMQ ---------------------------------------------------------------------------------------


class PrivateRabbit:
    """A RabbitMQ node of its own. ``url`` is its default vhost (guest/guest on loopback)."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="sluice-faults-rmq-"))
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"sluicefault{uuid.uuid4().hex[:8]}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self, wait: bool = True) -> PrivateRabbit:
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text(f"listeners.tcp.default = {self.port}\n")
        for path in (self.base, self.base / "enabled_plugins", self.base / "rabbitmq.conf"):
            shutil.chown(path, "rabbitmq", "rabbitmq")
        env = {
            "HOME": "/var/lib/rabbitmq",  # the rabbitmq user's Erlang cookie
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq"),
            "RABBITMQ_PID_FILE": str(self.base / "pid"),
        }
        self.proc = subprocess.Popen(
            ["runuser", "-u", "rabbitmq", "--", "env", *(f"{k}={v}" for k, v in env.items()),
             "/usr/lib/rabbitmq/bin/rabbitmq-server"],
            cwd=self.base,
            stdout=(self.base / "server.out").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        if wait:
            self.wait_started()
        return self

    def wait_started(self) -> None:
        wait_until(
            lambda: port_open(self.port) or self._died(),
            RABBIT_START_TIMEOUT_S,
            "the private RabbitMQ node",
        )
        assert not self._died(), (self.base / "server.out").read_text()[-2000:]

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def beam(self) -> int | None:
        try:
            return int((self.base / "pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """Stops the node (SIGTERM to its Erlang VM: a clean shutdown, as a restart does)."""
        pid = self.beam()
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGTERM)
            try:
                wait_until(lambda: not _alive(pid), STOP_TIMEOUT_S, "RabbitMQ to stop")
            except AssertionError:
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(STOP_TIMEOUT_S)
        (self.base / "pid").unlink(missing_ok=True)
        wait_until(lambda: not port_open(self.port), STOP_TIMEOUT_S, "RabbitMQ's port to close")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


# Processes ---------------------------------------------------------------------------------------


def sluice_env(**settings: str) -> dict[str, str]:
    """The environment of a Sluice subprocess: this one's, less any SLUICE_ setting, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env | settings


def sluice(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        cwd=ROOT,
        env=env | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Serve:
    """``sluice serve`` in a subprocess on a fixed port (so a restart answers at the same
    address)."""

    def __init__(self, env: dict[str, str], *, projector: bool, port: int | None = None) -> None:
        self.env = env
        self.projector = projector
        self.port = port or free_port()
        self.log = Path(tempfile.mkstemp(prefix="sluice-serve-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Serve:
        args = ["serve", "--port", str(self.port)]
        if not self.projector:
            args.append("--no-projector")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "adapters.cli", *args],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_until(self._up, START_TIMEOUT_S, f"sluice serve on {self.port}")
        return self

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"sluice serve exited: {self.log.read_text()[-3000:]}")
        try:
            return get(self.address, "/healthz", timeout=1)[0] == 200
        except OSError:
            return False

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT_S)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
        self.log.unlink(missing_ok=True)


# HTTP -------------------------------------------------------------------------------------------


def request(
    address: str,
    method: str,
    path: str,
    *,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], Any]:
    """One HTTP request on a fresh connection: (status, lower-case headers, JSON or text)."""
    host, port = address.rsplit(":", 1)
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json"} if data is not None else {}
    sent |= headers or {}
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        text = response.read().decode("utf-8", "replace")
        got = {k.lower(): v for k, v in response.getheaders()}
        try:
            parsed: Any = json.loads(text)
        except ValueError:
            parsed = text
        return response.status, got, parsed
    finally:
        conn.close()


def get(address: str, path: str, key: str | None = None, **kwargs: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    status, _, body = request(address, "GET", path, headers=headers, **kwargs)
    return status, body


def post(
    address: str, path: str, body: Any, key: str, idempotency_key: str, **kwargs: Any
) -> tuple[int, dict[str, str], Any]:
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key}
    return request(address, "POST", path, body=body, headers=headers, **kwargs)


# A stream of acknowledged writes ------------------------------------------------------------------


@dataclass
class Writes:
    """``threads`` writers, each posting top-ups of distinct amounts to ``account`` under fresh
    keys, retrying every unacknowledged write with the same key (and body) until it is
    acknowledged. Acknowledged: key → amount. A write gives up (counted) after ``retry_s``."""

    addresses: list[str]
    key: str
    account: str
    threads: int = 4
    retry_s: float = 90.0  # a write not acknowledged in 90 s is a failure of the test
    acked: dict[str, int] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    given_up: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    slowest_s: float = 0.0  # the longest a write took from first try to acknowledgement
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)
    _seq: int = 0

    def start(self) -> Writes:
        for n in range(self.threads):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def _next(self) -> tuple[str, int]:
        with self._lock:
            self._seq += 1
            return f"fault-write-{uuid.uuid4().hex[:10]}-{self._seq}", 100 + self._seq

    def _run(self, n: int) -> None:
        while not self._stop.is_set():
            key, amount = self._next()
            self._write(n, key, amount)

    def _write(self, n: int, key: str, amount: int) -> None:
        body = {"account": self.account, "amount": amount, "currency": "usd"}
        started = time.monotonic()
        give_up = started + self.retry_s
        tries = 0
        while time.monotonic() < give_up:  # bounded: a write retried past retry_s fails the test
            address = self.addresses[(n + tries) % len(self.addresses)]
            tries += 1
            try:
                status, _, _ = post(address, "/v1/topups", body, self.key, key, timeout=15)
            except (OSError, http.client.HTTPException):
                # Refused or reset (the server is down or restarting), or cut mid-answer: a
                # process killed after sending a 200's headers leaves an IncompleteRead, and the
                # write it committed is acknowledged only by retrying it (a replay).
                status = 0
            with self._lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
                self.attempts[key] = tries
            if status == 200:
                with self._lock:
                    self.acked[key] = amount
                    self.slowest_s = max(self.slowest_s, time.monotonic() - started)
                return
            time.sleep(0.2)
        with self._lock:
            self.given_up.append(key)

    def stop(self) -> None:
        """Stops starting new writes; waits for those in flight to be acknowledged."""
        self._stop.set()
        for thread in self._workers:
            thread.join(self.retry_s + 20)

    @property
    def retried(self) -> list[str]:
        return [k for k, n in self.attempts.items() if n > 1]


# Stores and ledger checks -------------------------------------------------------------------------


def prepare_store(database_url: str) -> str:
    """Creates Sluice's tables at ``database_url``; returns a new admin key."""
    from adapters.bootstrap import init_database, read_model
    from adapters.keys import create_key
    from adapters.settings import Settings

    settings = Settings(database_url=database_url)
    init_database(settings)
    view = read_model(settings)
    try:
        return create_key(view, "admin")[1]
    finally:
        view.datastore.close()


def open_accounts(address: str, key: str, *accounts: str) -> None:
    for account in ("acct_platform", *accounts):
        body = {"id": account, "kind": "platform" if account == "acct_platform" else "connected"}
        status, _, reply = post(address, "/v1/accounts", body, key, f"open-{account}")
        assert status == 200, reply


def topups_recorded(ledger: Any) -> list[Any]:
    from ledger.balances import Balance

    return [e for _, e in ledger.iter_events() if isinstance(e, Balance.ToppedUp)]


def check_writes_exactly_once(ledger: Any, writes: Writes, account: str) -> None:
    """Every acknowledged write is in the ledger once: its key is recorded, the number of
    top-ups equals the number of acknowledged keys, and their amounts (distinct per write) add
    up to the balance. A write applied twice, or lost, breaks the count or the sum."""
    assert not writes.given_up, f"writes never acknowledged: {writes.given_up[:5]}"
    assert writes.acked, "no write was acknowledged"
    for key in writes.acked:
        assert ledger.has_command(key), f"acknowledged {key} is not in the ledger"
    recorded = topups_recorded(ledger)
    assert len(recorded) == len(writes.acked), (len(recorded), len(writes.acked))
    balance = ledger.get_balance(account, "usd")
    assert balance is not None
    total = balance.pending_minor + balance.available_minor
    assert total == sum(writes.acked.values()), (total, sum(writes.acked.values()))


def audit_verify(env: dict[str, str]) -> str:
    out = sluice("audit", "verify", env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "read models equal a replay of the events: yes" in out.stdout, out.stdout
    return out.stdout


@contextlib.contextmanager
def fresh_schema(postgres_url: str, prefix: str = "faults") -> Iterator[str]:
    """A database URL on a new schema of the shared test database, dropped afterwards (the
    shared server itself is never stopped, signalled or reconfigured)."""
    import psycopg
    from psycopg import sql

    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    separator = "&" if "?" in postgres_url else "?"
    try:
        yield f"{postgres_url}{separator}schema={schema}"
    finally:
        with psycopg.connect(postgres_url.split("?", 1)[0], autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
