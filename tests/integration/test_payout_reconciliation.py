"""Payout reconciliation against the Stripe sandbox, on PostgreSQL (issue 14, item 6): a payout
shows Stripe's id, arrival date, destination and failure as Stripe reports them, in the API (JSON
and CSV) and the CLI.

Real parts throughout: the sandbox over HTTP with the real ``stripe`` SDK, signed webhooks posted
to Sluice's own endpoint, a fresh PostgreSQL schema per test (the agreement machine's player).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from projections import queries
from tests.integration.test_reconcile import HISTORY
from tests.property.agreement_support import Config, Player, postgres_stores

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def player(postgres_url: str) -> Iterator[Player]:
    """One history for the whole module: manual payouts (one bounces) and automatic ones."""
    with Player(Config(seed=5), postgres_stores(postgres_url)) as played:
        for op in HISTORY:
            played.apply(op)
        played.projector.run_once()
        yield played


def stripe_payouts(player: Player) -> dict[str, dict[str, Any]]:
    """Every connected account's payouts as Stripe has them, by ``po_`` id."""
    gateway = player.folder.gateway
    return {
        found.id: found.data
        for label in ("A0", "A1", "A2")
        for found in gateway.list_payouts(account=player.accounts[label].id)
    }


def ledger_payouts(player: Player) -> list[dict[str, Any]]:
    return queries.list_payouts(player.view, limit=100).data


def test_every_payout_shows_stripes_id_arrival_destination_and_failure_as_stripe_reports_them(
    player: Player,
) -> None:
    at_stripe = stripe_payouts(player)
    mine = ledger_payouts(player)
    assert {p["stripe_payout_id"] for p in mine} == set(at_stripe), mine
    for payout in mine:
        theirs = at_stripe[payout["stripe_payout_id"]]
        destination = theirs["destination"]
        assert destination and destination.startswith("ba_")
        assert (payout["arrival_date"], payout["destination"]) == (
            theirs["arrival_date"],
            destination,
        )
        assert (payout["failure_code"], payout["failure_message"]) == (
            theirs["failure_code"],
            theirs["failure_message"],
        )
    failed = [p for p in mine if p["status"] == "failed"]
    assert failed and all(p["failure_code"] and p["failure_message"] for p in failed), failed
    automatic = [p for p in mine if at_stripe[p["stripe_payout_id"]]["automatic"]]
    manual = [p for p in mine if not at_stripe[p["stripe_payout_id"]]["automatic"]]
    assert automatic and all(p["id"] == p["stripe_payout_id"] for p in automatic)
    assert manual  # the player makes them at Stripe: an id of Stripe's too


def test_a_payout_event_folded_again_records_nothing_new(player: Player) -> None:
    at_stripe = stripe_payouts(player)
    for payout in ledger_payouts(player):
        before = player.ledger.get_payout(payout["id"])
        assert before is not None and before.reported is not None
        theirs = at_stripe[payout["stripe_payout_id"]]
        event = {
            "type": f"payout.{theirs['status']}",
            "livemode": False,
            "created": theirs["created"],
            "account": payout["account"],
            "data": {"object": {"id": theirs["id"], "object": "payout"}},
        }
        player.folder.fold(event)
        after = player.ledger.get_payout(payout["id"])
        assert after is not None and after.version == before.version, payout["id"]


def test_payouts_api_and_csv_and_cli_show_stripes_details(player: Player) -> None:
    from typer.testing import CliRunner

    from adapters.cli import app as cli
    from adapters.http.app import create_app
    from tests.integration.http_support import Client, new_key, running

    mine = {p["id"]: p for p in ledger_payouts(player)}
    app = create_app(player.settings, ledger=player.ledger, view=player.view, run_projector=False)
    with running(app) as address:
        client = Client(address).as_key(new_key(player.settings, "finance"))
        listed = client.get("/v1/payouts?limit=100").json()["data"]
        assert {p["id"]: p["stripe_payout_id"] for p in listed} == {
            i: p["stripe_payout_id"] for i, p in mine.items()
        }
        assert all(p["destination"] and p["arrival_date"] for p in listed)
        rows = client.get("/v1/payouts?format=csv").rows()
        assert {r["id"]: r["stripe_payout_id"] for r in rows} == {
            i: p["stripe_payout_id"] for i, p in mine.items()
        }
        assert {r["id"]: r["destination"] for r in rows} == {
            i: p["destination"] for i, p in mine.items()
        }
        failed = [r for r in rows if r["status"] == "failed"]
        assert failed and all(r["failure_message"] for r in failed)
        assert all(r["arrival_date"] for r in rows)
    env = {"SLUICE_DATABASE_URL": player.settings.database_url, "COLUMNS": "400"}
    shown = CliRunner().invoke(cli, ["payouts"], env=env)
    assert shown.exit_code == 0, shown.output
    for payout in mine.values():
        assert payout["stripe_payout_id"] in shown.output


def stripe_side(player: Player) -> dict[str, Any]:
    """Stripe's own itemization of every payout (``adapters.reconcile.payout_report``)."""
    from adapters.reconcile import payout_report

    return {
        row.payout: row
        for label in ("A0", "A1", "A2")
        for row in payout_report(
            player.ledger, player.folder.gateway, player.settings, player.accounts[label].id
        )
    }


def test_each_automatic_payouts_items_sum_exactly_to_its_amount_as_stripe_itemizes_them(
    player: Player,
) -> None:
    from projections.payout_items import DIFFERS, NOT_ITEMIZED, SUMS, payout_reconciliation

    theirs = stripe_side(player)
    report = payout_reconciliation(player.view)
    assert {row["stripe_payout_id"] for row in report} == set(theirs)
    automatic = [row for row in report if row["automatic"]]
    assert automatic and all(row["check"] == SUMS for row in automatic), automatic
    for row in automatic:
        stripe = theirs[row["stripe_payout_id"]]
        assert row["item_count"] > 0 and row["net"] == row["amount"] == stripe.amount
        # The ledger's own itemization: a platform's fee on a direct charge is its own row
        # (Stripe folds it into the charge's fee), so only the net is Stripe's figure.
        assert row["item_count"] >= stripe.items and row["net"] == stripe.net
        assert row["gross"] - row["fee"] == row["net"]
        assert all(item["gross"] - item["fee"] == item["net"] for item in row["items"])
        assert sum(item["net"] for item in row["items"]) == row["amount"]
        assert not row["flagged"] and row["difference"] == 0
    manual = [row for row in report if not row["automatic"]]
    assert manual and all(
        (row["check"], row["item_count"], row["flagged"]) == (NOT_ITEMIZED, 0, False)
        for row in manual
    )
    assert all(theirs[row["stripe_payout_id"]].items == 0 for row in manual)
    # One payout by Sluice's id or Stripe's: the same row.
    first = automatic[0]
    assert payout_reconciliation(player.view, payout_id=first["payout"]) == [first]
    assert payout_reconciliation(player.view, payout_id=first["stripe_payout_id"]) == [first]
    assert DIFFERS not in {row["check"] for row in report}
