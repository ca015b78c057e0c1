"""``Projector.rebuild_all`` (one read of the log for every read model) builds exactly what the
projections build one by one, on every store: checked against a replay of the events."""

from __future__ import annotations

import random

from adapters.settings import Settings
from tests.integration.test_projections import (  # noqa: F401  (the store fixture)
    Clock,
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
