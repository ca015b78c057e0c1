"""The dashboard's reconciliation and risk sections with real breaks in them: drift injected into
the Stripe sandbox and into Sluice's own books, one reconcile pass, then the dashboard's pages
(served by uvicorn, read with the dashboard's cookie) show the open breaks by name, each name's
list, the clearing books and the exposure per seller exactly as the API gives them; an account
key sees its own account's only.

Real parts throughout, as in ``test_reconcile``: the sandbox over HTTP, PostgreSQL, the player.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.http.dashboard import COOKIE
from ledger import reconciliation as r
from tests.integration.http_support import Client, Reply, new_key, running
from tests.integration.test_reconcile import HISTORY, _charge_behind_sluices_back, _record_wrongly
from tests.integration.test_reconcile import reconcile as reconcile_once
from tests.property.agreement_support import Config, Player, postgres_stores

pytestmark = pytest.mark.postgres

ROW = re.compile(r"<tr ([^>]*data-[^>]*)>")
ATTR = re.compile(r'data-([a-z_]+)="([^"]*)"')
CELL = re.compile(r'<td[^>]*data-book="([a-z_]+)" data-amount="(-?\d+)"')


@pytest.fixture
def player(postgres_url: str) -> Iterator[Player]:
    with Player(Config(seed=5), postgres_stores(postgres_url)) as played:
        yield played


def _rows(html: str, table_id: str) -> list[dict[str, str]]:
    """The data-* attributes of each row of one table on a page."""
    start = html.index(f'id="{table_id}"')
    table = html[start : html.index("</table>", start)]
    return [dict(ATTR.findall(attrs)) for attrs in ROW.findall(table)]


def _page(client: Client, key: str, path: str) -> Reply:
    return client.get(path, headers={"Cookie": f"{COOKIE}={key}", "Accept": "text/html"})


def test_the_dashboard_shows_open_breaks_clearing_and_exposure_as_the_api_does(
    player: Player,
) -> None:
    from adapters.http.app import create_app

    for op in HISTORY[:5]:
        player.apply(op)
    a0 = player.accounts["A0"].id
    amount_wrong = _charge_behind_sluices_back(player, "X1", 12_000)
    _record_wrongly(player, amount_wrong, amount_minor=12_100)
    fee_wrong = _charge_behind_sluices_back(player, "X0", 11_000)
    _record_wrongly(player, fee_wrong, stripe_fee_minor=999)
    reconcile_once(player)
    app = create_app(player.settings, ledger=player.ledger, view=player.view, run_projector=False)
    with running(app) as address:
        finance = new_key(player.settings, "finance")
        api = Client(address, finance)
        page = _page(Client(address), finance, "/dashboard")
        assert page.status == 200, page.text
        shown = {row["break"]: int(row["count"]) for row in _rows(page.text, "open-breaks")}
        assert set(shown) == set(r.BREAK_NAMES)
        for name, count in shown.items():
            listed = api.get(f"/v1/reconciliation/breaks?status=open&name={name}&limit=100")
            assert count == len(listed.json()["data"]), name
        assert shown[r.AMOUNT_MISMATCH] == 1 and shown[r.FEE_MISMATCH] == 1
        clearing = [
            (row["account"], row["currency"], int(row["amount"]))
            for row in _rows(page.text, "clearing")
        ]
        books = api.get("/v1/reconciliation/clearing").json()["data"]
        assert clearing == [(b["account"], b["currency"], b["amount"]) for b in books]
        assert any(amount != 0 for _, _, amount in clearing)
        exposure = api.get("/v1/risk/exposure").json()["data"]
        sellers = [row for row in _rows(page.text, "exposure") if "account" in row]
        assert [(row["account"], row["currency"]) for row in sellers] == [
            (e["account"], e["currency"]) for e in exposure
        ]
        start = page.text.index('id="exposure"')
        cells = CELL.findall(page.text[start : page.text.index("</table>", start)])
        columns = ("available", "reserved", "negative_balance", "platform_exposure")
        assert [(book, int(amount)) for book, amount in cells] == [
            (book, e[book]) for e in exposure for book in columns
        ]
        rows = _page(Client(address), finance, "/dashboard/exposure.csv").rows()
        assert [(row["account"], int(row["platform_exposure"])) for row in rows] == [
            (e["account"], e["platform_exposure"]) for e in exposure
        ]
        rows = _page(Client(address), finance, "/dashboard/clearing.csv").rows()
        assert [(row["account"], int(row["amount"])) for row in rows] == [
            (b["account"], b["amount"]) for b in books
        ]
        listed = api.get(f"/v1/reconciliation/breaks?status=open&name={r.AMOUNT_MISMATCH}")
        one = _page(Client(address), finance, f"/dashboard/breaks/{r.AMOUNT_MISMATCH}")
        assert [row["break"] for row in _rows(one.text, "breaks")] == [
            b["id"] for b in listed.json()["data"]
        ]
        assert amount_wrong in one.text
        csv_reply = _page(
            Client(address), finance, f"/dashboard/breaks/{r.AMOUNT_MISMATCH}/breaks.csv"
        )
        assert [row["stripe_object"] for row in csv_reply.rows()] == [amount_wrong]
        _an_account_key_sees_its_own_only(player, address, a0)


def _an_account_key_sees_its_own_only(player: Player, address: str, account: str) -> None:
    key = new_key(player.settings, f"account:{account}")
    page = _page(Client(address), key, "/dashboard")
    assert page.status == 200
    assert all(int(row["count"]) == 0 for row in _rows(page.text, "open-breaks"))
    assert _rows(page.text, "clearing") == []  # the platform's clearing book is not its own
    assert {row.get("account", account) for row in _rows(page.text, "exposure")} == {account}
    rows = _page(Client(address), key, "/dashboard/exposure.csv").rows()
    assert {row["account"] for row in rows} == {account}
    listed: Any = _page(Client(address), key, f"/dashboard/breaks/{r.AMOUNT_MISMATCH}")
    assert _rows(listed.text, "breaks") == []
