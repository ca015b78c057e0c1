"""The Checkpointer and its tables, on SQLite and PostgreSQL: incremental appends equal a tree
built at once, whatever the page size; checkpoints are idempotent and signed; a second
checkpointer racing the first changes nothing; the stored tree is RFC 9162's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.audit_format import LeafEvent, to_micros
from adapters.audit_log import (
    AuditError,
    Checkpointer,
    Head,
    MerkleStore,
    leaf_event,
    leaf_hash_of,
    read_events,
    recorded_at_us,
)
from adapters.merkle import EMPTY_ROOT, leaf_hash, root_of
from adapters.proof_verifier import verify_checkpoint
from tests.integration.merkle_support import Books, books_on

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Any]:
    if request.param == "sqlite":
        return "sqlite", tmp_path
    return "postgres", request.getfixturevalue("postgres_url")


def all_leaves(books: Books) -> list[LeafEvent]:
    return [leaf_event(books.ledger, n) for n in read_events(books.ledger, 0, 10_000)]


def test_appending_page_by_page_builds_the_rfc_tree(where: tuple[str, Any]) -> None:
    with books_on(*where) as books:
        opened = books.checkpointer.checkpoint()  # the accounts' opening events
        assert opened.tree_size == books.head() and opened.root_hash == root_of(
            leaf_hash(e.encode()) for e in all_leaves(books)
        )
        sizes = []
        for op in ("charge", "transfer", "topup", "release", "payout", "charge"):
            books.apply(op, 1_234)
            sizes.append(books.checkpointer.checkpoint().tree_size)  # pages of 7, cut anywhere
        events = all_leaves(books)
        hashes = [leaf_hash(e.encode()) for e in events]
        for size in sizes:
            checkpoint = books.store.checkpoint(size)
            assert checkpoint is not None
            assert checkpoint.root_hash == root_of(hashes[:size])
            assert checkpoint.last_position == events[size - 1].position
            verify_checkpoint(checkpoint, books.key.public_key())
        assert books.store.leaves_page(0, len(hashes), 10_000) == [
            (i, e.position, h) for i, (e, h) in enumerate(zip(events, hashes, strict=True))
        ]
        # One page of everything gives the same tree and the same signed head.
        books.store.reset()
        again = Checkpointer(books.ledger, books.store, key=books.key, page_events=10_000)
        latest = again.checkpoint()
        assert latest.root_hash == root_of(hashes) and latest.tree_size == sizes[-1]


def test_the_checkpointers_leaf_is_the_decoded_events(where: tuple[str, Any]) -> None:
    """The checkpointer reads each recorded instant without decoding the whole state and
    encodes without the LeafEvent: both must give what the full decode gives, event by event."""
    with books_on(*where) as books:
        for op in ("charge", "transfer", "topup", "release", "payout", "charge"):
            books.apply(op, 4_321)
        notifications = read_events(books.ledger, 0, 10_000)
        assert len(notifications) > 20
        for n in notifications:
            decoded = books.ledger.mapper.to_domain_event(n)
            assert recorded_at_us(books.ledger, n) == to_micros(decoded.timestamp)
            assert leaf_hash_of(books.ledger, n) == leaf_hash(leaf_event(books.ledger, n).encode())


def test_an_empty_tree_has_the_empty_root(tmp_path: Path) -> None:
    with books_on("sqlite", tmp_path) as books:
        books.store.reset()
        assert books.store.head().tree().root() == EMPTY_ROOT


def test_a_checkpoint_of_the_same_size_is_the_same_checkpoint(where: tuple[str, Any]) -> None:
    with books_on(*where) as books:
        books.apply("charge", 500)
        first = books.checkpointer.checkpoint()
        assert books.checkpointer.checkpoint() == first
        assert [c.tree_size for c in books.store.checkpoints(10)] == [first.tree_size]
        with pytest.raises(AuditError):
            Checkpointer(books.ledger, books.store).checkpoint()  # no key: no checkpoint


def test_a_racing_checkpointer_changes_nothing(where: tuple[str, Any]) -> None:
    with books_on(*where) as books:
        books.apply("charge", 500)
        stale = books.store.head()
        books.checkpointer.catch_up()
        head = books.store.head()
        leaf = (stale.tree_size, 1, b"\x00" * 32)
        with pytest.raises(AuditError) as refused:
            books.store.append([leaf], [], Head(stale.tree_size + 1, 1, (b"\x00" * 32,)))
        assert refused.value.code == "checkpoint_conflict"
        assert books.store.head() == head


def test_the_bench_runs_and_reports_rates(where: tuple[str, Any]) -> None:
    from adapters.audit_log import bench_checkpointing

    with books_on(*where) as books:
        for op in ("charge", "transfer", "topup"):
            books.apply(op, 700)
        books.checkpointer.checkpoint()
        with pytest.raises(AuditError):  # never empties a real log unless told to
            bench_checkpointing(books.ledger, books.view)
        result = bench_checkpointing(books.ledger, books.view, max_events=1_000, reset=True)
        assert result["events"] == result["tree_size"] == books.head()
        assert result["checkpointing_per_s"] > 0 and result["same_checkpoint_again"]


def test_the_store_refuses_to_answer_from_a_tree_it_lacks(where: tuple[str, Any]) -> None:
    with books_on(*where) as books:
        books.apply("charge", 500)
        books.checkpointer.checkpoint()
        with books.view.write(None) as tx:
            tx.execute("DELETE FROM sl_merkle_nodes")
        store = MerkleStore(books.view)
        with pytest.raises(AuditError):
            store.perfect_hashes([(0, 4)])
