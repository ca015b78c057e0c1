"""``ReadModel.index_exists`` on SQLite (PostgreSQL's is held by the rebuild fast-path tests):
the catalog says whether an index is there, and ``drop_index`` takes it away."""

from __future__ import annotations

from pathlib import Path

from adapters.bootstrap import read_model
from adapters.settings import Settings
from projections.projections import PROJECTIONS


def test_an_index_is_found_until_it_is_dropped(tmp_path: Path) -> None:
    view = read_model(Settings(database_url=f"sqlite:///{tmp_path}/r.db"), create_tables=True)
    deferred = [name for p in PROJECTIONS.values() for name in p.deferred_indexes]
    assert deferred, "nothing to look up: this test would prove nothing"
    with view.write(None) as tx:
        assert all(view.index_exists(tx, name) for name in deferred)
        assert not view.index_exists(tx, "ix_no_such_index")
        view.drop_index(tx, deferred[0])
        assert not view.index_exists(tx, deferred[0])
