"""Tampering with the event store is detected, on SQLite and on PostgreSQL.

A history is made with the Ledger's own commands and facts, checkpointed (signed), then the
events table is altered behind the Ledger's back: one event's state edited, one deleted, two
swapped, one inserted, the tail truncated. Re-verifying the log against the latest checkpoint
fails and names the first bad position; a proof made before the tamper no longer matches the
store, and a proof made after it fails the offline verifier. Without a tamper, every inclusion
and consistency proof verifies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.audit_log import AuditError
from adapters.audit_proofs import (
    compare_with_store,
    consistency_proof,
    inclusion_proof,
    verify_log,
)
from adapters.proof_verifier import VerificationError, verify_document
from tests.integration.merkle_support import OPS, TAMPERS, Books, Tamperer, books_on

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
HISTORY = [("charge", 10_000), ("transfer", 2_500), ("topup", 700), ("release", 0)] * 2


@pytest.fixture(params=BACKENDS)
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Any]:
    """(backend, location): a temporary directory, or the PostgreSQL server's URL."""
    if request.param == "sqlite":
        return "sqlite", tmp_path
    return "postgres", request.getfixturevalue("postgres_url")


def offline(document: dict[str, Any], books: Books) -> list[str]:
    """The auditor's path: the document as a file's JSON, the public key, no database."""
    return verify_document(json.loads(json.dumps(document)), books.key.public_key())


def proof_fails_now(books: Books, position: int) -> bool:
    """A proof made now for ``position`` cannot be had, or does not verify."""
    try:
        document = inclusion_proof(books.ledger, books.store, position)
    except AuditError:
        return True
    try:
        offline(document, books)
    except VerificationError:
        return True
    return False


@pytest.mark.parametrize("kind", TAMPERS)
def test_each_tamper_is_detected_and_the_first_bad_position_named(
    where: tuple[str, Any], kind: str
) -> None:
    with books_on(*where) as books:
        for op, amount in HISTORY[:4]:
            books.apply(op, amount)
        first = books.checkpointer.checkpoint()
        for op, amount in HISTORY[4:]:
            books.apply(op, amount)
        latest = books.checkpointer.checkpoint()
        assert verify_log(books.ledger, books.store, books.key.public_key()).ok
        positions = books.positions()
        target = positions[len(positions) // 2]
        named = positions[len(positions) // 2 + 1] if kind == "insert" else target
        before = inclusion_proof(books.ledger, books.store, named)  # of the event to be hit
        offline(before, books)
        consistency = consistency_proof(books.store, first.tree_size, latest.tree_size)
        later = positions[len(positions) // 2 + 3]

        bad = Tamperer(books).run(kind, target, later)

        report = verify_log(books.ledger, books.store, books.key.public_key())
        assert not report.ok, kind
        assert report.first_bad_position == bad == named, (kind, report.describe())
        assert report.leaf_table_ok  # the store's own leaves are what localised it
        assert compare_with_store(books.ledger, before), kind  # the store no longer says so
        offline(before, books)  # the file itself is a signed snapshot: it still verifies
        assert proof_fails_now(books, bad), kind
        offline(consistency, books)  # the checkpoints themselves were not touched


def test_an_untouched_log_verifies_and_a_proof_compares_equal(where: tuple[str, Any]) -> None:
    with books_on(*where) as books:
        for op, amount in HISTORY:
            books.apply(op, amount)
        checkpoint = books.checkpointer.checkpoint()
        report = verify_log(books.ledger, books.store, books.key.public_key())
        assert report.ok and report.events_checked == checkpoint.tree_size == books.head()
        document = inclusion_proof(books.ledger, books.store, books.head())
        assert compare_with_store(books.ledger, document) == []


def _every_proof_verifies(books: Books, sizes: list[int]) -> None:
    positions = books.positions()
    for size in sizes:
        for position in positions[:size]:
            offline(inclusion_proof(books.ledger, books.store, position, size), books)
    for i, old in enumerate(sizes):
        for new in sizes[i:]:
            offline(consistency_proof(books.store, old, new), books)


HISTORIES = st.lists(
    st.tuples(st.sampled_from(OPS), st.integers(1, 99_999)), min_size=1, max_size=6
)


def _random_history_random_tamper(
    where: tuple[str, Any], history: list[tuple[str, int]], kind: str, data: st.DataObject
) -> None:
    with books_on(*where) as books:
        cut = data.draw(st.integers(0, len(history)), label="checkpoint after op")
        sizes = []
        for i, (op, amount) in enumerate(history):
            if i == cut:
                sizes.append(books.checkpointer.checkpoint().tree_size)
            books.apply(op, amount)
        sizes.append(books.checkpointer.checkpoint().tree_size)
        if kind == "none":
            _every_proof_verifies(books, sorted(set(sizes)))
            assert verify_log(books.ledger, books.store, books.key.public_key()).ok
            return
        positions = books.positions()
        # insert and swap need a later checkpointed event to move
        last = len(positions) - (2 if kind in ("insert", "swap") else 1)
        i = data.draw(st.integers(0, last), label="tampered index")
        j = (
            data.draw(st.integers(i + 1, len(positions) - 1), label="swapped with")
            if kind == "swap"
            else None
        )
        bad = Tamperer(books).run(kind, positions[i], positions[j] if j is not None else None)
        report = verify_log(books.ledger, books.store, books.key.public_key())
        assert not report.ok and report.first_bad_position == bad, (kind, report.describe())


PROPERTY = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TAMPER_OR_NONE = st.sampled_from((*TAMPERS, "none"))


@settings(PROPERTY, max_examples=50)
@given(history=HISTORIES, kind=TAMPER_OR_NONE, data=st.data())
def test_any_history_any_tamper_is_detected_and_no_tamper_always_verifies_sqlite(
    tmp_path: Path, history: list[tuple[str, int]], kind: str, data: st.DataObject
) -> None:
    _random_history_random_tamper(("sqlite", tmp_path), history, kind, data)


@pytest.mark.postgres
@settings(PROPERTY, max_examples=15)
@given(history=HISTORIES, kind=TAMPER_OR_NONE, data=st.data())
def test_any_history_any_tamper_is_detected_and_no_tamper_always_verifies_postgres(
    postgres_url: str, history: list[tuple[str, int]], kind: str, data: st.DataObject
) -> None:
    _random_history_random_tamper(("postgres", postgres_url), history, kind, data)
