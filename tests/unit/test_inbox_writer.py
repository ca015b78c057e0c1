"""The webhook inbox's group commit: concurrent deliveries share one transaction, each caller is
told its own outcome, and one bad delivery fails only itself."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from adapters.inbox_writer import InboxWriter


class FakeView:
    """Records transactions: a list of event ids per committed transaction."""

    def __init__(self) -> None:
        self.committed: list[list[str]] = []
        self.stored: set[str] = set()
        self.lock = threading.Lock()

    @contextmanager
    def write(self, tracking: None) -> Iterator[list[str]]:
        pending: list[str] = []
        yield pending
        with self.lock:
            self.committed.append(pending)


def fake_store(view: Any, event: dict[str, Any], raw: bytes) -> bool:
    with view.write(None) as tx:
        if event.get("bad"):
            raise ValueError(f"{event['id']} cannot be stored")
        tx.append(event["id"])
        return True


def fake_store_many(view: Any, items: list[tuple[dict[str, Any], bytes]]) -> list[bool]:
    """A group in one transaction; one bad event fails the whole group."""
    with view.write(None) as tx:
        if any(event.get("bad") for event, _ in items):
            raise ValueError("the group fails")
        tx.extend(event["id"] for event, _ in items)
        return [True] * len(items)


def deliver_at_once(writer: InboxWriter, count: int, bad: int) -> dict[str, Any]:
    """``count`` deliveries from as many threads at once (event ``bad`` cannot be stored);
    each thread's own outcome: True/False, or the error it was told."""
    outcomes: dict[str, Any] = {}
    barrier = threading.Barrier(count)

    def deliver(n: int) -> None:
        event = {"id": f"evt_{n}", "bad": n == bad}
        barrier.wait(10)
        try:
            outcomes[event["id"]] = writer.store(event, b"{}")
        except ValueError as error:
            outcomes[event["id"]] = error

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return outcomes


def test_each_delivery_is_stored_once_and_told_its_own_outcome() -> None:
    """Groups go in one statement; each caller still learns whether its own delivery was new,
    and a failing group falls back to one statement each."""
    view = FakeView()
    writer = InboxWriter(view, fake_store_many, fake_store)  # type: ignore[arg-type]
    outcomes = deliver_at_once(writer, 20, bad=7)
    assert isinstance(outcomes.pop("evt_7"), ValueError)
    assert outcomes == {f"evt_{n}": True for n in range(20) if n != 7}
    stored = [e for tx in view.committed for e in tx]
    assert sorted(stored) == sorted(outcomes)  # once each; the bad one in none


def test_a_lone_failure_is_raised_to_its_caller() -> None:
    writer = InboxWriter(FakeView(), fake_store_many, fake_store)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        writer.store({"id": "evt_bad", "bad": True}, b"{}")
    assert writer.store({"id": "evt_good"}, b"{}") is True


def test_deliveries_from_an_event_loop_share_groups_and_learn_their_own_outcomes() -> None:
    """``store_async``: coroutines queue on their loop, one writer thread stores a group at a
    time; each learns its own outcome, the bad one alone fails, and fewer transactions than
    deliveries are committed."""
    import asyncio

    view = FakeView()
    writer = InboxWriter(view, fake_store_many, fake_store)  # type: ignore[arg-type]

    async def deliver(n: int, bad: int) -> Any:
        try:
            return await writer.store_async({"id": f"evt_{n}", "bad": n == bad}, b"{}")
        except ValueError as error:
            return error

    async def all_at_once(first: int, bad: int) -> list[Any]:
        return await asyncio.gather(*(deliver(n, bad) for n in range(first, first + 20)))

    outcomes = asyncio.run(all_at_once(0, bad=7))
    assert isinstance(outcomes.pop(7), ValueError)
    assert outcomes == [True] * 19
    stored = [e for tx in view.committed if tx for e in tx]
    assert sorted(stored) == sorted(f"evt_{n}" for n in range(20) if n != 7)
    view.committed.clear()
    assert asyncio.run(all_at_once(100, bad=-1)) == [True] * 20  # another loop, same writer
    assert len(view.committed) < 20  # grouped: the first alone, the others queued behind it
