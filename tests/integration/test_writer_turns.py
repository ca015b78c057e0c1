"""The ledger's event inserts on PostgreSQL (adapters.persistence.take_turns).

The writer's turn across processes: while one Ledger has its turn (the exclusive writer lock,
taken after a conflict), another Ledger on the same store cannot commit an event, so the batch
that has the turn cannot lose its write; the turn's own inserts go through (they would wait on
themselves if they took the shared lock).

One round trip: a batch of events is one query string, one implicit transaction. All of it is
stored, in order, with increasing notification ids; or a version already taken stores none of
it, raises a conflict, and leaves the connection usable."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from eventsourcing.persistence import RecordConflictError, StoredEvent

from adapters.bootstrap import bootstrap, init_database
from adapters.settings import Settings
from ledger import commands as c
from ledger.application import Ledger
from tests.faults.support import fresh_schema

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 3, 2, tzinfo=UTC)
BLOCKED_S = 1.0  # long beside a commit (milliseconds): the other insert really waits


@pytest.fixture
def two(postgres_url: str) -> Iterator[tuple[Ledger, Ledger]]:
    with fresh_schema(postgres_url, "turns") as url:
        settings = Settings(database_url=url)
        init_database(settings)
        a, b = bootstrap(settings), bootstrap(settings)
        try:
            a.open_account(
                idempotency_key="p", account_id="acct_platform", kind="platform", effective_at=T0
            )
            for seller in ("acct_a", "acct_b"):
                a.open_account(idempotency_key=f"o-{seller}", account_id=seller, effective_at=T0)
                a.update_account(
                    idempotency_key=f"e-{seller}", account_id=seller, charges_enabled=True,
                    payouts_enabled=True, effective_at=T0,
                )  # fmt: skip
            yield a, b
        finally:
            a.close()
            b.close()


def payment(seller: str) -> c.RecordPayment:
    return c.RecordPayment(
        idempotency_key=str(uuid.uuid4()), effective_at=T0, charge_type="destination",
        currency="usd", amount_minor=10_000, stripe_fee_minor=320, application_fee_minor=1_000,
        account_id=seller,
    )  # fmt: skip


def test_no_other_process_commits_during_a_turn(two: tuple[Ledger, Ledger]) -> None:
    a, b = two
    assert a.writer_lock is not None
    done = threading.Event()
    outcome: list[bool] = []

    def other_process() -> None:
        outcome.append(b.execute(payment("acct_b")).ok)
        done.set()

    with a._writer_turn(attempt=1):  # a conflict's retry: a has the turn
        assert a.writer_lock.held
        assert a.execute(payment("acct_a")).ok  # its own insert goes through
        writer = threading.Thread(target=other_process)
        writer.start()
        time.sleep(BLOCKED_S)
        assert not done.is_set()  # b's insert waits for the turn to end
    assert done.wait(30) and outcome == [True]
    writer.join(30)
    assert not a.writer_lock.held
    # Side by side again: without a turn, both write without waiting on each other.
    began = time.monotonic()
    assert a.execute(payment("acct_a")).ok and b.execute(payment("acct_b")).ok
    assert time.monotonic() - began < BLOCKED_S


def stored(originator_id: uuid.UUID, version: int) -> StoredEvent:
    return StoredEvent(originator_id, version, "tests:Probe", b'{"n": %d}' % version)


def test_a_batch_is_stored_whole_in_order_or_not_at_all(two: tuple[Ledger, Ledger]) -> None:
    a, _ = two
    recorder = a.recorder
    assert type(recorder).__name__.startswith("TurnTaking")
    x, y = uuid.uuid4(), uuid.uuid4()
    head = recorder.max_notification_id() or 0
    ids = recorder.insert_events([stored(x, 1), stored(y, 1), stored(x, 2)])
    assert len(ids) == 3 and ids == sorted(ids) and ids[0] > head
    rows = recorder.select_notifications(ids[0], 10)
    assert [(n.id, n.originator_id, n.originator_version, n.state) for n in rows] == [
        (ids[0], x, 1, b'{"n": 1}'),
        (ids[1], y, 1, b'{"n": 1}'),
        (ids[2], x, 2, b'{"n": 2}'),
    ]
    z = uuid.uuid4()
    with pytest.raises(RecordConflictError):  # y's version 1 is taken: z's events go too
        recorder.insert_events([stored(z, 1), stored(z, 2), stored(y, 1)])
    assert recorder.select_events(z) == []
    assert recorder.max_notification_id() == ids[-1]
    # The connections are idle again, not in a failed transaction: the next batch is stored.
    assert all(len(recorder.insert_events([stored(z, n)])) == 1 for n in (1, 2))
    assert [e.originator_version for e in recorder.select_events(z)] == [1, 2]
