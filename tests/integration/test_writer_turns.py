"""The writer's turn across processes (adapters.persistence.take_turns), on PostgreSQL: while one
Ledger has its turn (the exclusive writer lock, taken after a conflict), another Ledger on the
same store cannot commit an event, so the batch that has the turn cannot lose its write; the
turn's own inserts go through (they would wait on themselves if they took the shared lock)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

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
