"""Payments carry their metadata as Stripe reports it: charges made at the Stripe sandbox with
metadata on their PaymentIntent, folded from signed webhooks,
listed by ``GET /v1/payments`` and found with ``metadata[key]=value`` filters; an account key
lists only the payments that land with it.

Real parts throughout: the sandbox over HTTP with the real ``stripe`` SDK, PostgreSQL, the
agreement machine's player folding every webhook.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.http_support import Client, new_key, running
from tests.property.agreement_support import Config, Player, postgres_stores

pytestmark = pytest.mark.postgres


@pytest.fixture
def player(postgres_url: str) -> Iterator[Player]:
    with Player(Config(seed=7), postgres_stores(postgres_url)) as played:
        yield played


def _charge(player: Player, amount: int, **extra: object) -> str:
    intent = player._pay(amount, "visa", **extra)
    player.settle()
    return str(intent.latest_charge)


def test_payments_are_listed_with_their_metadata_and_found_by_it(player: Player) -> None:
    from adapters.http.app import create_app

    player.apply(("account", {"label": "A0", "delay_days": 2, "bank": "ok", "interval": "manual"}))
    seller = player.accounts["A0"].id
    gold = _charge(player, 5_000, metadata={"order": "1001", "tier": "gold"})
    plain = _charge(player, 6_000)
    sold = _charge(player, 7_000, metadata={"order": "1002"}, transfer_data={"destination": seller})
    player.projector.run_once()
    app = create_app(player.settings, ledger=player.ledger, view=player.view, run_projector=False)
    with running(app) as address:
        finance = Client(address, new_key(player.settings, "finance"))
        listed = finance.get("/v1/payments?limit=100").json()["data"]
        assert [p["id"] for p in listed] == [sold, plain, gold]
        by_id = {p["id"]: p for p in listed}
        assert by_id[gold]["metadata"] == {"order": "1001", "tier": "gold"}
        assert by_id[sold]["metadata"] == {"order": "1002"} and by_id[plain]["metadata"] == {}
        assert by_id[sold]["account"] == seller and by_id[sold]["charge_type"] == "destination"
        found = finance.get("/v1/payments?metadata[tier]=gold").json()["data"]
        assert [p["id"] for p in found] == [gold]
        both = finance.get("/v1/payments?metadata[tier]=gold&metadata[order]=1002").json()
        assert both["data"] == []
        first = finance.get("/v1/payments?limit=1").json()
        assert first["has_more"] is True and [p["id"] for p in first["data"]] == [sold]
        after = finance.get(f"/v1/payments?limit=100&starting_after={sold}").json()["data"]
        assert [p["id"] for p in after] == [plain, gold]
        wrong = finance.get("/v1/payments?metadata=tier")
        assert wrong.status == 400 and wrong.error["param"] == "metadata"
        rows = finance.get("/v1/payments?format=csv&metadata[order]=1001").rows()
        assert [row["id"] for row in rows] == [gold]
        own = finance.as_key(new_key(player.settings, f"account:{seller}"))
        assert [p["id"] for p in own.get("/v1/payments").json()["data"]] == [sold]
        assert own.get(f"/v1/payments?starting_after={gold}").status == 404
