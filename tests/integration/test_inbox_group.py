"""The webhook inbox's group statement (``inbox.store_many``), on SQLite and PostgreSQL: one
multi-row INSERT stores what one statement per event would, each delivery told its own outcome,
a redelivery inside the group or of an event stored before is the duplicate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.bootstrap import init_database, read_model
from adapters.settings import Settings
from adapters.stripe import inbox
from projections.store import ReadModel
from tests.integration.stripe_support import fresh_settings

COLUMNS = "event_id, type, account, livemode, created, payload, status, attempts"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def views(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ReadModel, ReadModel]]:
    """Two empty inboxes of one dialect: one written a statement per event, one by groups."""
    if request.param == "sqlite":
        pair = []
        for name in ("one", "group"):
            settings = Settings(database_url=f"sqlite:///{tmp_path / name}.db")
            init_database(settings)
            pair.append(read_model(settings))
        yield pair[0], pair[1]
        return
    url = request.getfixturevalue("postgres_url")
    with fresh_settings(url) as one, fresh_settings(url) as group:
        a, b = read_model(one), read_model(group)
        try:
            yield a, b
        finally:
            a.datastore.close()
            b.datastore.close()


def event(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"evt_g{n}", "object": "event", "type": "charge.succeeded",
        "created": 1_700_000_000 + n, "livemode": n % 2 == 1,
        "account": f"acct_{n}" if n % 3 else None, **fields,
    }  # fmt: skip


def rows(view: ReadModel) -> list[dict[str, Any]]:
    return view.query(f"SELECT {COLUMNS} FROM sl_stripe_events ORDER BY event_id")


def test_a_group_stores_what_one_statement_each_would(views: tuple[ReadModel, ReadModel]) -> None:
    one, group = views
    earlier = event(0)
    deliveries = [event(1), event(2), event(1, note="redelivered"), earlier, event(3)]
    raw = {id(e): json.dumps(e).encode() for e in [earlier, *deliveries]}
    for view in (one, group):
        assert inbox.store(view, earlier, raw[id(earlier)])

    alone = [inbox.store(one, e, raw[id(e)]) for e in deliveries]
    together = inbox.store_many(group, [(e, raw[id(e)]) for e in deliveries])

    assert together == alone == [True, True, False, False, True]
    assert rows(group) == rows(one)  # the first delivery's payload, as one at a time keeps it
    assert len(rows(group)) == 4


def test_a_group_is_bounded(views: tuple[ReadModel, ReadModel]) -> None:
    _, group = views
    with pytest.raises(ValueError):
        inbox.store_many(group, [])
    items = [(event(n), json.dumps(event(n)).encode()) for n in range(inbox.STORE_MANY_MAX)]
    assert inbox.store_many(group, items) == [True] * inbox.STORE_MANY_MAX  # SQLite's 999 holds
