"""``Projector.rebuild_all`` (one read of the log for every read model) builds exactly what the
projections build one by one, on every store: checked against a replay of the events."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.settings import Settings
from projections.projections import PROJECTIONS
from projections.runner import Projector
from tests.integration.test_projections import (  # noqa: F401  (the store fixture)
    Clock,
    _fresh,
    assert_projections_equal_replay,
    open_store,
    random_history,
    setup_accounts,
    store,
)


def test_rebuilding_every_read_model_in_one_pass_equals_a_replay(store: Settings) -> None:  # noqa: F811
    clock = Clock()
    ledger, projector = open_store(store, clock)
    setup_accounts(ledger)
    random_history(ledger, clock, random.Random(13), 60)
    projector.run_once()
    random_history(ledger, clock, random.Random(14), 20)  # some the live models never saw
    read = projector.rebuild_all(max_batches=10_000)
    assert read > 0
    assert all(
        projector.position(name) == ledger.recorder.max_notification_id()
        for name in projector.projections
    )
    assert_projections_equal_replay(ledger, projector)


def _tables(projector: Projector) -> dict[str, list[dict[str, Any]]]:
    """Every row of every read model (the lag metadata's wall-clock times left out)."""
    out = {}
    with projector.view.read() as tx:
        for table in (t for p in PROJECTIONS.values() for t in p.tables):
            tx.execute(f"SELECT * FROM {table}")
            out[table] = sorted(tx.all(), key=repr)
        tx.execute("SELECT name, position, event_recorded FROM rm_projection_meta")
        out["rm_projection_meta"] = sorted(tx.all(), key=repr)
    return out


@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**32), page_events=st.integers(1, 60))
def test_a_set_based_rebuild_equals_the_row_by_row_projections(
    store: Settings,  # noqa: F811
    seed: int,
    page_events: int,
) -> None:
    """The follower writes row by row (``catch_up``); a rebuild writes each page's rows with
    one statement per table (``apply_all``), in small pages here so that releases, payouts and
    balances span pages: every table comes out the same."""
    clock = Clock()
    ledger, projector = open_store(
        store.model_copy(update={"database_url": _fresh(store.database_url, seed)}), clock
    )
    setup_accounts(ledger)
    random_history(ledger, clock, random.Random(seed), 90)
    projector.run_once()
    row_by_row = _tables(projector)
    assert projector.rebuild_all(page_events=page_events) > 0
    assert _tables(projector) == row_by_row
    # The runner hands each projection only the event classes it ``handles``: one left out
    # would be skipped both ways above. Handed every event, the tables must not change.
    for projection in projector.projections.values():
        projection.handles = (object,)  # type: ignore[misc]
    assert projector.rebuild_all(page_events=page_events) > 0
    assert _tables(projector) == row_by_row
