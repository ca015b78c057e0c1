"""The ledger's event inserts on PostgreSQL (adapters.persistence.take_turns).

The writer's turn across processes: while one Ledger has its turn (the exclusive writer lock,
taken after a conflict), another Ledger on the same store cannot commit an event, so the batch
that has the turn cannot lose its write; the turn's own inserts go through (they would wait on
themselves if they took the shared lock).

One round trip: a batch of events is one query string, one implicit transaction. All of it is
stored, in order, with increasing notification ids; or a version already taken stores none of
it, raises a conflict, and leaves the connection usable.

No probe while the cache is known current (``Engine._known_head``): a batch runs on the cached
aggregates and its insert goes through only if no other writer wrote since. Whatever that run
cannot vouch for runs again after a probe: another Ledger's write to an account it only reads,
an idempotency key recorded elsewhere (or no longer cached), a rejection."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from eventsourcing.persistence import RecordConflictError, StoredEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.bootstrap import bootstrap, init_database
from adapters.persistence import _event_arrays
from adapters.settings import Settings
from ledger import commands as c
from ledger.application import Ledger
from ledger.errors import ChargesDisabledError
from ledger.ids import command_record_id, payment_aggregate_id
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


def payment(seller: str, charge_type: str = "destination") -> c.RecordPayment:
    return c.RecordPayment(
        idempotency_key=str(uuid.uuid4()), effective_at=T0, charge_type=charge_type,
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


# Topics as eventsourcing writes them (the literal path), and anything else (bound parameters):
# quotes, braces, commas, backslashes, NULL, spaces, non-ASCII.
topics = st.one_of(
    st.from_regex(r"[a-z_.]{1,20}:[A-Za-z<>.]{1,20}", fullmatch=True),
    st.sampled_from(["NULL", "null", "a'b", 'a"b', "a,b", "{a}", "a\\b", "a b", "ü:Ä", "%s"]),
    st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=20),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.tuples(topics, st.binary(max_size=64)), min_size=1, max_size=8),
    st.booleans(),
)
def test_any_topic_and_state_is_stored_as_given(
    two: tuple[Ledger, Ledger], events: list[tuple[str, bytes]], check_head: bool
) -> None:
    """Whether the arrays go as literals (plain topics) or as parameters (anything else), the
    rows read back are the events given, in order; with the store's head as the expected head
    they are stored, with a head that is not the store's, none is."""
    from ledger.engine import HeadCheck, StaleHeadError

    recorder = two[0].recorder
    x = uuid.uuid4()
    batch = [StoredEvent(x, n, topic, state) for n, (topic, state) in enumerate(events, 1)]
    literal = _event_arrays(batch) is not None
    assert literal == all(
        t.isascii()
        and t.replace("_", "a")
        .replace(".", "a")
        .replace(":", "a")
        .replace("<", "a")
        .replace(">", "a")
        .isalnum()
        for t, _ in events
    )
    head = recorder.max_notification_id() or 0
    if check_head:
        with pytest.raises(StaleHeadError):
            recorder.insert_events(batch, head_check=HeadCheck(expected=head + 1))
        assert recorder.select_events(x) == []
    check = HeadCheck(expected=head) if check_head else None
    ids = recorder.insert_events(batch, head_check=check)
    assert len(ids) == len(batch) and ids == sorted(ids) and ids[0] > head
    assert [(e.originator_version, e.topic, e.state) for e in recorder.select_events(x)] == [
        (n, topic, state) for n, (topic, state) in enumerate(events, 1)
    ]


def known_current(ledger: Ledger) -> None:
    """Writes until ``ledger`` knows its cache current (a probed batch with no other writer
    between its probe and its insert); then its batches skip the probe."""
    for _ in range(3):
        assert ledger.execute(payment("acct_b")).ok
    assert ledger._known_head is not None


def test_another_ledgers_write_to_a_read_account_is_seen(two: tuple[Ledger, Ledger]) -> None:
    a, b = two
    known_current(a)
    update = b.update_account(idempotency_key="off", account_id="acct_a", charges_enabled=False)
    # a's cached acct_a still has charges on: its unprobed run would book the direct charge,
    # but its insert finds the head moved, and the probed run sees the account as it is.
    with pytest.raises(ChargesDisabledError):
        a.execute(payment("acct_a", "direct"))
    assert a.recorder.max_notification_id() == update.position  # b's update is the last
    assert a.execute(payment("acct_b")).ok


def test_a_key_recorded_by_another_ledger_is_replayed(two: tuple[Ledger, Ledger]) -> None:
    a, b = two
    known_current(a)
    command = payment("acct_a")
    first = b.execute(command)
    events = a.recorder.max_notification_id()
    again = a.execute(command)
    assert again.replayed and again.ids == first.ids
    assert a.recorder.max_notification_id() == events


def test_a_key_no_longer_cached_is_replayed(two: tuple[Ledger, Ledger]) -> None:
    a, _ = two
    command = payment("acct_a")
    first = a.execute(command)
    known_current(a)
    cache = a.repository.cache
    assert cache is not None
    for evicted in (
        command_record_id(command.idempotency_key),
        payment_aggregate_id(first.ids["payment"]),
    ):
        cache.get(evicted, evict=True)  # as the LRU would, under other traffic
    events = a.recorder.max_notification_id()
    again = a.execute(command)  # unprobed: taken for new, refused by the store: probed again
    assert again.replayed and again.ids == first.ids
    assert a.recorder.max_notification_id() == events


def test_a_recorded_key_is_replayed_even_when_it_would_now_be_refused(
    two: tuple[Ledger, Ledger],
) -> None:
    a, b = two
    command = payment("acct_a", "direct")
    first = a.execute(command)
    known_current(b)  # b's cache never held the command's record
    b.update_account(idempotency_key="off", account_id="acct_a", charges_enabled=False)
    assert b._known_head is not None  # its own write: still current
    again = b.execute(command)  # unprobed, the payment is refused: probed, it is a replay
    assert again.replayed and again.ids == first.ids
