"""Scheduled checkpoints (``adapters.audit_schedule``), on SQLite and PostgreSQL: the projector
signs checkpoints while writers write, never more often than its interval, only when the log
grew, works a backlog off in bounded steps, and a failing checkpoint never stops it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from adapters.audit_log import Checkpointer
from adapters.audit_schedule import ScheduledCheckpoints, scheduled_checkpoints
from adapters.bootstrap import follow_log
from adapters.proof_verifier import verify_checkpoint
from adapters.settings import Settings
from projections.runner import Projector
from tests.integration.merkle_support import OPS, Books, books_on

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
WRITES = 40
CAUGHT_UP_WAIT_S = 20.0  # the schedule's interval is 0.2 s: a few steps, far below this


@pytest.fixture(params=BACKENDS)
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Any]:
    if request.param == "sqlite":
        return "sqlite", tmp_path
    return "postgres", request.getfixturevalue("postgres_url")


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _wait_for_checkpoint_of_head(books: Books) -> None:
    deadline = time.monotonic() + CAUGHT_UP_WAIT_S
    while time.monotonic() < deadline:  # bounded by CAUGHT_UP_WAIT_S
        latest = books.store.checkpoint()
        if latest is not None and latest.last_position == books.head():
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint of the head within {CAUGHT_UP_WAIT_S} s")


def test_the_projector_signs_checkpoints_while_writers_write(where: tuple[str, Any]) -> None:
    with books_on(*where) as books:
        interval_s = 0.2
        schedule = ScheduledCheckpoints(books.checkpointer, interval_s=interval_s, step_events=50)
        stop = threading.Event()
        follower = threading.Thread(
            target=follow_log,
            args=(Projector(books.ledger, books.view, ["balances"]), stop, 30.0, schedule),
        )
        began = time.monotonic()
        follower.start()
        try:
            slowest_write_s = 0.0
            for n in range(WRITES):
                t = time.monotonic()
                books.apply(OPS[n % len(OPS)], 1_000 + n)
                slowest_write_s = max(slowest_write_s, time.monotonic() - t)
                time.sleep(0.01)
            _wait_for_checkpoint_of_head(books)
        finally:
            stop.set()
            follower.join(CAUGHT_UP_WAIT_S)
        elapsed_s = time.monotonic() - began
        signed = books.store.checkpoints(100)
        assert signed and signed[0].last_position == books.head()
        for checkpoint in signed:
            verify_checkpoint(checkpoint, books.key.public_key())
        # At most one per interval (plus the first, signed at once).
        assert len(signed) <= elapsed_s / interval_s + 1
        assert slowest_write_s < 2.0, f"a write took {slowest_write_s:.2f} s"


def test_nothing_is_signed_while_the_log_does_not_grow(where: tuple[str, Any]) -> None:
    with books_on(*where) as books:
        clock = FakeMonotonic()
        schedule = ScheduledCheckpoints(books.checkpointer, interval_s=10, monotonic=clock)
        first = schedule()
        assert first is not None and first.tree_size == len(books.positions())
        clock.now += 5
        books.apply("charge", 500)
        assert schedule() is None  # the log grew, but the interval has not passed
        clock.now += 5
        second = schedule()
        assert second is not None and second.tree_size == len(books.positions()) > first.tree_size
        clock.now += 60
        assert schedule() is None  # an interval passed, but nothing new
        assert [c.tree_size for c in books.store.checkpoints(10)] == [
            second.tree_size,
            first.tree_size,
        ]


def test_a_backlog_is_appended_in_bounded_steps_and_signed_once(where: tuple[str, Any]) -> None:
    with books_on(*where) as books:
        for n in range(12):
            books.apply(OPS[n % len(OPS)], 700 + n)
        events = len(books.positions())
        schedule = ScheduledCheckpoints(books.checkpointer, interval_s=3600, step_events=5)
        for step in range(events // 5):  # each step appends 5 leaves and signs nothing
            assert schedule() is None
            assert books.store.head().tree_size == 5 * (step + 1)
        signed = schedule()
        assert signed is not None and signed.tree_size == events
        assert len(books.store.checkpoints(10)) == 1


def test_a_failing_checkpoint_is_logged_and_tried_again_later(where: tuple[str, Any]) -> None:
    with books_on(*where) as books:
        clock = FakeMonotonic()
        keyless = Checkpointer(books.ledger, books.store, key=None)
        schedule = ScheduledCheckpoints(keyless, interval_s=30, monotonic=clock)
        assert schedule() is None and schedule.failures == 1
        assert schedule() is None and schedule.failures == 1  # waits out the interval
        clock.now += 30
        assert schedule() is None and schedule.failures == 2


def test_the_schedule_exists_only_with_a_signing_key(tmp_path: Path) -> None:
    with books_on("sqlite", tmp_path) as books:
        assert scheduled_checkpoints(books.ledger, books.view, books.settings) is None
        seed = books.key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        keyed = Settings(database_url=books.url, audit_signing_key=seed.hex())
        schedule = scheduled_checkpoints(books.ledger, books.view, keyed)
        assert schedule is not None
        signed = schedule()
        assert signed is not None
        verify_checkpoint(signed, books.key.public_key())
