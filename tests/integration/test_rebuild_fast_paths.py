"""The rebuild's fast paths on PostgreSQL (``Projector.rebuild_all``), each held to what the
plain path gives:

- the lists' indexes are dropped for the pass and are there again after it, also after a
  failed page, and the follower recreates them if a rebuild was killed midway;
- the server leaves out the topics no read model handles, yet every read model ends at the
  head (and its lag metadata at the head's event) and equals a row-by-row catch-up;
- a page's columns go as array literals written here: any text and any bigint, None
  included, is stored exactly as given.
"""

from __future__ import annotations

import random
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.settings import Settings
from projections.pages import BIGINT, TEXT, Inserts
from projections.projections import PROJECTIONS
from tests.integration.test_projections import (
    Clock,
    open_store,
    random_history,
    setup_accounts,
)
from tests.integration.test_rebuild_all import _tables

pytestmark = pytest.mark.postgres

DEFERRED = {name for p in PROJECTIONS.values() for name in p.deferred_indexes}
LOCK_WAIT_MAX_S = 5.0  # a catalog lookup takes milliseconds; a lock wait lasts until rollback


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Settings]:
    schema = f"fast_{secrets.token_hex(4)}"
    yield Settings(database_url=f"{postgres_url}?schema={schema}")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _indexes(store: Settings) -> set[str]:
    base, schema = store.database_url.split("?schema=")
    with psycopg.connect(base) as conn:
        rows = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,)
        ).fetchall()
    return {r[0] for r in rows}


def test_deferred_indexes_are_dropped_for_the_pass_and_back_after_it(pg: Settings) -> None:
    assert DEFERRED, "nothing is deferred: this test would prove nothing"
    clock = Clock()
    ledger, projector = open_store(pg, clock)
    setup_accounts(ledger)
    random_history(ledger, clock, random.Random(3), 30)
    assert _indexes(pg) >= DEFERRED
    seen_during: list[set[str]] = []
    write_page = projector._write_page

    def watching(page: Any) -> None:
        seen_during.append(_indexes(pg))
        write_page(page)

    projector._write_page = watching  # type: ignore[method-assign]
    assert projector.rebuild_all(page_events=7) > 0
    assert seen_during and all(not (DEFERRED & during) for during in seen_during)
    assert _indexes(pg) >= DEFERRED

    # A page that fails: the pass stops with its error, and the indexes are back.
    def failing(page: Any) -> None:
        raise RuntimeError("the page's write failed")

    projector._write_page = failing  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="write failed"):
        projector.rebuild_all(page_events=7)
    assert _indexes(pg) >= DEFERRED

    # A rebuild killed midway leaves them dropped: the follower makes them as it starts.
    projector._drop_deferred_indexes()
    assert not (DEFERRED & _indexes(pg))
    stop = threading.Event()
    stop.set()
    projector.run_forever(stop)
    assert _indexes(pg) >= DEFERRED


def test_indexes_already_there_are_not_created_again_under_a_table_lock(pg: Settings) -> None:
    """A follower starting beside a writer mid-transaction: with the indexes in place it must
    not queue behind the writer (``CREATE INDEX IF NOT EXISTS`` would take a SHARE lock first,
    and wait for the writer's ROW EXCLUSIVE), nor make every later writer queue behind it."""
    clock = Clock()
    ledger, projector = open_store(pg, clock)
    setup_accounts(ledger)
    assert _indexes(pg) >= DEFERRED
    base, schema = pg.database_url.split("?schema=")
    with psycopg.connect(base) as writer:  # a transaction holding ROW EXCLUSIVE, left open
        writer.execute(f'DELETE FROM "{schema}".rm_balance_transactions WHERE false')
        follower = threading.Thread(target=projector.ensure_indexes, daemon=True)
        follower.start()
        follower.join(LOCK_WAIT_MAX_S)
        waited = follower.is_alive()
        writer.rollback()  # lets a waiting follower through, so the test ends either way
        follower.join(LOCK_WAIT_MAX_S)
    assert not waited, "the follower's start waited on the writer's lock"
    # Missing ones are still made (no writer in the way here).
    projector._drop_deferred_indexes()
    projector.ensure_indexes()
    assert _indexes(pg) >= DEFERRED


def test_the_server_skips_unhandled_topics_and_positions_still_reach_the_head(
    pg: Settings,
) -> None:
    clock = Clock()
    ledger, projector = open_store(pg, clock)
    setup_accounts(ledger)
    random_history(ledger, clock, random.Random(5), 40)
    # The log ends with events no read model handles (idempotency records of a command that
    # only records): a pass must still take every position to the head.
    projector.run_once()
    row_by_row = _tables(projector)
    head = ledger.recorder.max_notification_id()
    last = ledger.recorder.select_notifications(start=head, limit=1)[0]
    fetched = projector.rebuild_all(page_events=9)
    assert 0 < fetched < head  # the server left some out
    assert projector._handled(None)[0][last.topic] is False  # among them, the head's
    assert all(projector.position(name) == head for name in projector.projections)
    assert _tables(projector) == row_by_row


@pytest.fixture(scope="module")
def inserts_schema(postgres_url: str) -> Iterator[tuple[str, str]]:
    schema = f"arrays_{secrets.token_hex(4)}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".rm_t (n BIGINT, a TEXT, b TEXT, k BIGINT)')
    yield postgres_url, schema
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# Without None most columns go as literals; one None sends its column as a list instead.
_strings = st.one_of(
    st.sampled_from(["", "NULL", "null", '"', "\\", "{}", "a,b", " x ", "'", "é", '\\"']),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
)
_texts = st.one_of(_strings, st.none())
_bigints = st.integers(-(2**63), 2**63 - 1)
_ints = st.one_of(_bigints, st.none())
_rows = st.one_of(
    st.lists(st.tuples(_strings, _strings, _bigints), min_size=1, max_size=30),
    st.lists(st.tuples(_texts, _texts, _ints), min_size=1, max_size=30),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=_rows)
def test_any_column_value_is_stored_as_given(
    inserts_schema: tuple[str, str], rows: list[tuple[Any, Any, Any]]
) -> None:
    base, schema = inserts_schema
    sink = Inserts("rm_t", (("n", BIGINT), ("a", TEXT), ("b", TEXT), ("k", BIGINT)))
    sink.begin(None, True)  # type: ignore[arg-type]
    for n, (a, b, k) in enumerate(rows):
        sink.insert([n, a, b, k])
    with psycopg.connect(base) as conn:
        conn.execute(f'TRUNCATE "{schema}".rm_t')

        class Tx:
            def execute(self, sql: str, params: Any = ()) -> None:
                conn.execute(sql.replace("rm_t", f'"{schema}".rm_t'), params)

        sink.write(Tx(), "postgres")  # type: ignore[arg-type]
        got = conn.execute(f'SELECT a, b, k FROM "{schema}".rm_t ORDER BY n').fetchall()
    assert got == [tuple(r) for r in rows]


def test_the_cyclic_gc_is_off_for_a_pass_and_as_it_was_after(pg: Settings) -> None:
    import gc

    clock = Clock()
    ledger, projector = open_store(pg, clock)
    setup_accounts(ledger)
    random_history(ledger, clock, random.Random(7), 10)
    during: list[bool] = []
    write_page = projector._write_page

    def watching(page: Any) -> None:
        during.append(gc.isenabled())
        write_page(page)

    projector._write_page = watching  # type: ignore[method-assign]
    assert gc.isenabled()
    projector.rebuild_all(page_events=5)
    assert during and not any(during)
    assert gc.isenabled()

    def failing(page: Any) -> None:
        raise RuntimeError("the page's write failed")

    projector._write_page = failing  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        projector.rebuild_all(page_events=5)
    assert gc.isenabled()
    gc.disable()  # a process that runs without it keeps it off
    try:
        projector._write_page = watching  # type: ignore[method-assign]
        projector.rebuild_all(page_events=5)
        assert not gc.isenabled()
    finally:
        gc.enable()
