"""`sluice audit verify` streams (adapters/verify.py): the one-pass rebuild equals the live read
models, and the page-by-page merge-join names every row that is missing, extra or changed, also
when the pages are tiny (keys crossing page boundaries), on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters import verify as verify_module
from projections.runner import Projector
from tests.integration.merkle_support import OPS, books_on

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Any]:
    if request.param == "sqlite":
        return "sqlite", tmp_path
    return "postgres", request.getfixturevalue("postgres_url")


@pytest.mark.parametrize("page_rows", [3, 2_000])
def test_verify_names_missing_extra_and_changed_rows(
    where: tuple[str, Any], page_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify_module, "COMPARE_PAGE_ROWS", page_rows)
    with books_on(*where) as books:
        for n in range(20):
            books.apply(OPS[n % len(OPS)], 500 + n)
        Projector(books.ledger, books.view).run_once()
        phases: list[str] = []
        positions, differences = verify_module.verify(
            books.ledger, books.view, books.settings, on_progress=lambda p, _: phases.append(p)
        )
        assert differences == [] and set(phases) == {"rebuild", "compare"}
        assert all(p == books.head() for p in positions.values())
        with books.view.read() as tx:
            tx.execute("SELECT id FROM rm_balance_transactions ORDER BY id")
            ids = [r["id"] for r in tx.all()]
        changed, missing = ids[1], ids[-2]
        with books.view.write(None) as tx:
            tx.execute("UPDATE rm_balance_transactions SET net = net + 1 WHERE id = %s", (changed,))
            tx.execute("DELETE FROM rm_balance_transactions WHERE id = %s", (missing,))
            tx.execute(
                "INSERT INTO rm_balance_transactions SELECT 'txn_forged', position, account_id,"
                " type, amount, fee, fee_details, net, currency, status, available_on, created,"
                " recorded, source, reporting_category, description, entry_id"
                " FROM rm_balance_transactions WHERE id = %s",
                (ids[0],),
            )
        _, differences = verify_module.verify(books.ledger, books.view, books.settings)
        found = {
            (d.key[0], d.live is None, d.rebuilt is None)
            for d in differences
            if d.table == "rm_balance_transactions"
        }
        assert found == {
            (changed, False, False),
            (missing, True, False),
            ("txn_forged", False, True),
        }
        assert all(d.projection == "balance_transactions" for d in differences)


def test_verify_replays_each_read_model_to_its_own_position(where: tuple[str, Any]) -> None:
    """Live read models at different positions (one lags, others are at the head): each is
    replayed to its own, so none differs; the lagging one's later rows are not expected."""
    with books_on(*where) as books:
        for n in range(12):
            books.apply(OPS[n % len(OPS)], 700 + n)
        middle = books.head()
        for n in range(12, 24):
            books.apply(OPS[n % len(OPS)], 700 + n)
        projector = Projector(books.ledger, books.view)
        for name in projector.projections:
            projector.catch_up(name, stop=middle if name == "balance_transactions" else None)
        positions, differences = verify_module.verify(books.ledger, books.view, books.settings)
        assert differences == [], [d.describe() for d in differences[:3]]
        assert positions["balance_transactions"] <= middle < books.head()
        assert all(p == books.head() for n, p in positions.items() if n != "balance_transactions")
