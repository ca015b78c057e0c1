"""One relay, one scheduler, one projector per read model: real `sluice` processes on a real
store (PostgreSQL: a session advisory lock; SQLite: a file lock), a second instance exiting 2
with the first one's pid, host and start, or waiting (bounded) with ``--wait``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adapters.bootstrap import init_database
from adapters.locks import StoreLock
from adapters.settings import Settings
from tests.support import SluiceProcess, drop_postgres_schema

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60  # a process imports, connects and takes its lock: seconds on a busy CI box
RUN_TIMEOUT_S = 60  # one short command (a refused second instance, a --once pass)
STOP_TIMEOUT_S = 30  # SIGTERM to exit: the relay wakes from LISTEN within 5 s
POLL_S = 0.2


@pytest.fixture(params=["postgresql", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        settings = Settings(database_url=f"sqlite:///{tmp_path / 'single.db'}")
        init_database(settings)
        yield settings
        return
    base = request.getfixturevalue("postgres_url")
    name = f"single_{uuid.uuid4().hex[:12]}"
    settings = Settings(database_url=f"{base}?schema={name}")
    try:
        init_database(settings)
        yield settings
    finally:
        drop_postgres_schema(base, name)


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_METRICS")}
    env |= {"SLUICE_DATABASE_URL": settings.database_url, "SLUICE_BROKER_URL": "stub://"}
    return env


def sluice(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        check=False,  # the callers assert on the exit code
        cwd=ROOT,
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


Running = SluiceProcess


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(settings: Settings, *args: str) -> Running:
        started.append(
            SluiceProcess(tmp_path / f"{uuid.uuid4().hex[:8]}.log", _env(settings), *args)
        )
        return started[-1]

    yield start
    for one in started:
        one.stop()


def wait_until_held_by(settings: Settings, name: str, first: Running | int) -> None:
    """Polls (bounded by START_TIMEOUT_S) until ``first`` (a process or a pid) holds ``name``."""
    probe = StoreLock(settings, name, record=False)
    pid = first if isinstance(first, int) else first.proc.pid
    end = time.monotonic() + START_TIMEOUT_S
    try:
        while time.monotonic() < end:
            if isinstance(first, Running):
                assert first.proc.poll() is None, first.log.read_text()
            if not probe.try_acquire():
                holder = probe.holder()
                if holder is not None and holder.pid == pid:
                    return
            else:
                probe.close()  # not started yet: let it go for the real process
            time.sleep(POLL_S)
    finally:
        probe.close()
    pytest.fail(f"{name} was never taken by pid {pid}")


def assert_refused(done: subprocess.CompletedProcess[str], what: str, first: Running | int) -> None:
    said = (done.stdout + done.stderr).strip()
    assert done.returncode == 2, said
    assert len(said.splitlines()) == 1, said  # one line, no traceback
    pid = first if isinstance(first, int) else first.proc.pid
    expected = f"another {what} is running (pid {pid}, host {socket.gethostname()}"
    assert expected in said, said
    assert ", since 20" in said, said


def test_a_second_relay_or_relay_once_beside_a_running_relay_exits_2_naming_it(
    store: Settings, running: Callable[..., Running]
) -> None:
    first = running(store, "relay")
    wait_until_held_by(store, "relay", first)

    assert_refused(sluice(store, "relay"), "relay", first)
    assert_refused(sluice(store, "relay", "--once"), "relay", first)
    started = time.monotonic()
    assert_refused(sluice(store, "relay", "--once", "--wait", "1.5"), "relay", first)
    assert time.monotonic() - started >= 1.5  # it did wait, bounded, before giving up
    assert first.proc.poll() is None  # the running one is untouched

    first.stop()
    after = sluice(store, "relay", "--once")
    assert after.returncode == 0, after.stdout + after.stderr
    assert "relay: " in after.stdout


def test_relay_once_with_wait_runs_when_the_running_relay_stops(
    store: Settings, running: Callable[..., Running]
) -> None:
    first = running(store, "relay")
    wait_until_held_by(store, "relay", first)
    second = running(store, "relay", "--once", "--wait", "45")
    time.sleep(2)  # the second is waiting, not refused
    assert second.proc.poll() is None, second.log.read_text()
    first.stop()
    assert second.proc.wait(RUN_TIMEOUT_S) == 0, second.log.read_text()
    assert "relay: " in second.log.read_text()


def test_a_second_scheduler_exits_2_naming_the_running_one(
    store: Settings, running: Callable[..., Running]
) -> None:
    first = running(store, "scheduler", "--tick", "1")
    wait_until_held_by(store, "scheduler", first)
    assert_refused(sluice(store, "scheduler"), "scheduler", first)
    assert_refused(sluice(store, "scheduler", "--once"), "scheduler", first)
    first.stop()
    after = sluice(store, "scheduler", "--once")
    assert after.returncode == 0, after.stdout + after.stderr


def test_a_second_projector_or_a_rebuild_beside_a_running_projector_exits_2(
    store: Settings, running: Callable[..., Running]
) -> None:
    first = running(store, "project", "run")
    wait_until_held_by(store, "projector:balances", first)
    wait_until_held_by(store, "projector:payouts", first)

    assert_refused(sluice(store, "project", "run"), "projector of balances", first)
    assert_refused(sluice(store, "project", "run", "--once"), "projector of balances", first)
    assert_refused(sluice(store, "project", "run", "payouts"), "projector of payouts", first)
    assert_refused(sluice(store, "project", "rebuild", "revenue"), "projector of revenue", first)

    first.stop()
    after = sluice(store, "project", "run", "--once")
    assert after.returncode == 0, after.stdout + after.stderr
    rebuilt = sluice(store, "project", "rebuild", "revenue")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr


def test_projectors_of_different_read_models_run_side_by_side(
    store: Settings, running: Callable[..., Running]
) -> None:
    first = running(store, "project", "run", "balances")
    wait_until_held_by(store, "projector:balances", first)
    other = sluice(store, "project", "run", "--once", "payouts")
    assert other.returncode == 0, other.stdout + other.stderr
    assert "payouts: applied" in other.stdout


def test_the_projector_inside_serve_is_the_one_projector_of_its_read_models(
    store: Settings,
) -> None:
    from adapters.http.app import create_app
    from tests.integration.http_support import running as serving

    with serving(create_app(store)):
        wait_until_held_by(store, "projector:balances", os.getpid())
        refused = sluice(store, "project", "run", "--once")
        assert_refused(refused, "projector of balances", os.getpid())
    # serve stopped: its projector's locks went with it
    after = sluice(store, "project", "run", "--once")
    assert after.returncode == 0, after.stdout + after.stderr


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:  # bounded by timeout_s
        if condition():
            return
        time.sleep(POLL_S)
    pytest.fail(f"not within {timeout_s} s: {what}")


def test_a_standby_projector_takes_over_its_read_models_when_the_holder_stops(
    store: Settings,
) -> None:
    import threading

    from adapters.bootstrap import bootstrap, follow_log, projector_locks, read_model
    from projections.runner import Projector

    ledger, view = bootstrap(store), read_model(store)
    names = list(Projector(ledger, view).projections)
    runs = []
    try:
        for _ in range(2):
            locks = projector_locks(store, names)
            stop = threading.Event()
            thread = threading.Thread(
                target=follow_log,
                args=(Projector(ledger, view), stop, 10.0),
                kwargs={"locks": locks},
                daemon=True,
            )
            thread.start()
            runs.append((locks, stop, thread))
            if len(runs) == 1:  # the first takes every read model before the second starts
                taken = list(locks.values())
                _wait(lambda: all(lk.held for lk in taken), START_TIMEOUT_S, "first")  # noqa: B023
        (first, stop_first, thread_first), (second, _, _) = runs
        time.sleep(2)  # the standby tried (every second) and got none
        assert not any(lock.held for lock in second.values())
        assert all(lock.held for lock in first.values())

        stop_first.set()
        thread_first.join(STOP_TIMEOUT_S)
        assert not thread_first.is_alive()
        _wait(lambda: all(lk.held for lk in second.values()), START_TIMEOUT_S, "takeover")
    finally:
        for _, stop, thread in runs:
            stop.set()
            thread.join(STOP_TIMEOUT_S)
        ledger.close()
        view.datastore.close()  # type: ignore[attr-defined]
