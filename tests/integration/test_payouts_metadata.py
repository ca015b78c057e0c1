"""Payouts carry their metadata as Stripe reports it: payouts made at the Stripe sandbox with
metadata, folded from signed webhooks, listed by ``GET /v1/payouts`` (JSON and CSV) and found
with ``metadata[key]=value`` filters; an account key lists only its own payouts.

Real parts throughout: the sandbox over HTTP with the real ``stripe`` SDK, PostgreSQL, the
agreement machine's player folding every webhook.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.integration.http_support import Client, new_key, running
from tests.property.agreement_support import Config, Player, postgres_stores

pytestmark = pytest.mark.postgres

DAY_S = 86_400


@pytest.fixture
def player(postgres_url: str) -> Iterator[Player]:
    with Player(Config(seed=11), postgres_stores(postgres_url)) as played:
        yield played


def _payout(player: Player, label: str, amount: int, **extra: object) -> str:
    """A payout made at Stripe on the account's balance (not Sluice's own), then folded."""
    body = {"amount": amount, "currency": player.config.currency, **extra}
    made = player.client.v1.payouts.create(body, {"stripe_account": player.accounts[label].id})
    player.settle()
    return str(made.id)


def _funded(player: Player) -> None:
    # The platform's own charge covers Stripe's fees on the destination charges.
    player.apply(("separate_charge", {"label": "C0", "amount": 20_000, "card": "visa"}))
    for label in ("A0", "A1"):
        account = {"label": label, "delay_days": 2, "bank": "ok", "interval": "manual"}
        player.apply(("account", account))
        charge = {"label": f"C{label}", "to": label, "amount": 20_000, "card": "visa"}
        player.apply(("destination_charge", charge))
    player.apply(("advance", {"seconds": 4 * DAY_S}))


def test_payouts_are_listed_with_their_metadata_and_found_by_it(player: Player) -> None:
    from adapters.http.app import create_app

    _funded(player)
    gold = _payout(player, "A0", 3_000, metadata={"batch": "b-7", "tier": "gold"})
    plain = _payout(player, "A0", 2_000)
    other = _payout(player, "A1", 1_000, metadata={"tier": "gold"})
    player.projector.run_once()
    assert player.fold_errors == []
    app = create_app(player.settings, ledger=player.ledger, view=player.view, run_projector=False)
    with running(app) as address:
        finance = Client(address, new_key(player.settings, "finance"))
        listed = {p["id"]: p for p in finance.get("/v1/payouts?limit=100").json()["data"]}
        assert set(listed) == {gold, plain, other}
        assert listed[gold]["metadata"] == {"batch": "b-7", "tier": "gold"}
        assert listed[plain]["metadata"] == {} and listed[other]["metadata"] == {"tier": "gold"}
        found = finance.get("/v1/payouts?metadata[tier]=gold").json()["data"]
        assert sorted(p["id"] for p in found) == sorted([gold, other])
        both = finance.get("/v1/payouts?metadata[tier]=gold&metadata[batch]=b-7").json()
        assert [p["id"] for p in both["data"]] == [gold]
        assert finance.get("/v1/payouts?metadata[tier]=silver").json()["data"] == []
        wrong = finance.get("/v1/payouts?metadata=tier")
        assert wrong.status == 400 and wrong.error["param"] == "metadata"
        assert wrong.error["code"] == "parameter_invalid"
        rows = finance.get("/v1/payouts?format=csv&metadata[batch]=b-7").rows()
        assert [row["id"] for row in rows] == [gold]
        assert json.loads(rows[0]["metadata"]) == {"batch": "b-7", "tier": "gold"}
        everything = {r["id"]: r["metadata"] for r in finance.get("/v1/payouts?format=csv").rows()}
        assert everything[plain] == "{}" and set(everything) == {gold, plain, other}
        seller = player.accounts["A1"].id
        own = finance.as_key(new_key(player.settings, f"account:{seller}"))
        mine = own.get("/v1/payouts?metadata[tier]=gold").json()["data"]
        assert [p["id"] for p in mine] == [other]
        assert [r["id"] for r in own.get("/v1/payouts?format=csv&metadata[tier]=gold").rows()] == [
            other
        ]


def test_a_payout_event_folded_again_records_its_metadata_once(player: Player) -> None:
    _funded(player)
    made = _payout(player, "A0", 3_000, metadata={"tier": "gold"})
    before = player.ledger.get_payout(made)
    assert before is not None and before.reported_metadata == {"tier": "gold"}
    event = {
        "type": "payout.updated",
        "livemode": False,
        "created": player.now(),
        "account": player.accounts["A0"].id,
        "data": {"object": {"id": made, "object": "payout"}},
    }
    player.folder.fold(event)
    after = player.ledger.get_payout(made)
    assert after is not None and after.version == before.version
