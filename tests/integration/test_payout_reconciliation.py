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


def test_balance_transactions_by_payout_and_the_report_are_served_as_json_and_csv_by_role(
    player: Player,
) -> None:
    from adapters.http.app import create_app
    from projections.payout_items import payout_reconciliation
    from tests.integration.http_support import Client, new_key, running

    report = payout_reconciliation(player.view)
    auto = next(row for row in report if row["automatic"])
    manual = next(row for row in report if not row["automatic"])
    other = next(row for row in report if row["account"] != auto["account"])
    app = create_app(player.settings, ledger=player.ledger, view=player.view, run_projector=False)
    with running(app) as address:
        anonymous = Client(address)
        finance = anonymous.as_key(new_key(player.settings, "finance"))
        # What the automatic payout settled and its own debit: they net to zero.
        for asked in (auto["payout"], auto["stripe_payout_id"]):
            listed = finance.get(f"/v1/balance_transactions?payout={asked}").json()
            assert listed["has_more"] is False
            ids = {bt["id"] for bt in listed["data"]}
            assert {item["id"] for item in auto["items"]} < ids
            assert sum(bt["net"] for bt in listed["data"]) == 0
            assert [bt["type"] for bt in listed["data"]].count("payout") == 1
        rows = finance.get(f"/v1/balance_transactions?payout={auto['payout']}&format=csv").rows()
        assert {row["id"] for row in rows} == ids
        bad_zone = f"/v1/balance_transactions?payout={auto['payout']}&format=csv&tz=Mars/Base"
        assert finance.get(bad_zone).status == 400
        only = finance.get(f"/v1/balance_transactions?payout={auto['payout']}&type=payout").json()
        assert [bt["type"] for bt in only["data"]] == ["payout"]
        mine = finance.get(f"/v1/balance_transactions?payout={manual['stripe_payout_id']}").json()
        assert [bt["type"] for bt in mine["data"]][-1] == "payout"
        assert all(bt["source"] == manual["payout"] for bt in mine["data"])
        missing = finance.get("/v1/balance_transactions?payout=po_nothing")
        assert missing.status == 404 and missing.error["param"] == "payout"
        # The report: JSON as the read model says, CSV one row per item and one per payout.
        path = "/v1/reports/payout_reconciliation"
        assert finance.get(f"{path}?payout={auto['stripe_payout_id']}").json()["data"] == [auto]
        assert len(finance.get(path).json()["data"]) == len(report)
        csv_rows = finance.get(f"{path}?account={auto['account']}&format=csv").rows()
        summary = [r for r in csv_rows if r["row"] == "payout" and r["payout"] == auto["payout"]]
        assert [(r["net"], r["payout_amount"], r["check"], r["flagged"]) for r in summary] == [
            (str(auto["net"]), str(auto["amount"]), "sums", "false")
        ]
        items = [r for r in csv_rows if r["row"] == "item" and r["payout"] == auto["payout"]]
        assert sum(int(r["net"]) for r in items) == auto["amount"]
        assert finance.get(f"{path}?from=abc").status == 400
        # Roles: the seller sees its own payouts only; no key is refused.
        assert anonymous.get(path).status == 401
        seller = anonymous.as_key(new_key(player.settings, f"account:{auto['account']}"))
        seen = seller.get(path).json()["data"]
        assert seen and {row["account"] for row in seen} == {auto["account"]}
        assert seller.get(f"{path}?payout={other['payout']}").status == 404
        assert seller.get(f"/v1/balance_transactions?payout={other['payout']}").status == 404
        assert seller.get(f"/v1/balance_transactions?payout={auto['payout']}").status == 200
        for role in ("auditor", "admin"):
            client = anonymous.as_key(new_key(player.settings, role))
            assert client.get(f"{path}?payout={auto['payout']}").json()["data"] == [auto]


def test_a_payout_settling_a_movement_the_ledger_lacks_is_flagged_until_reconciled(
    postgres_url: str,
) -> None:
    import csv
    import io
    import json

    from typer.testing import CliRunner

    from adapters.cli import app as cli
    from adapters.reconcile import Reconciler
    from projections.payout_items import DIFFERS, SUMS, payout_reconciliation

    runner = CliRunner()
    with Player(Config(seed=5), postgres_stores(postgres_url)) as played:
        cut = next(n for n, op in enumerate(HISTORY) if op[0] == "advance")
        for op in HISTORY[:cut]:
            played.apply(op)
        seller = played.accounts["A1"].id  # a daily schedule: paid out automatically
        played.control(
            "/_sandbox/drift/balance_transactions",
            {"type": "adjustment", "amount": 1_234, "account": seller},
        )
        for op in HISTORY[cut:]:
            played.apply(op)
        played.projector.run_once()
        env = {"SLUICE_DATABASE_URL": played.settings.database_url, "COLUMNS": "400"}
        flagged = [r for r in payout_reconciliation(played.view, account=seller) if r["flagged"]]
        assert [(r["check"], r["difference"]) for r in flagged] == [(DIFFERS, 1_234)]
        shown = runner.invoke(cli, ["reconcile", "payouts", "--account", seller], env=env)
        assert shown.exit_code == 1 and "differs by" in shown.output, shown.output
        Reconciler(
            played.ledger, played.view, played.folder.gateway, played.settings, folder=played.folder
        ).run()
        played.projector.run_once()
        report = payout_reconciliation(played.view, account=seller)
        assert report and all(r["check"] == SUMS for r in report if r["automatic"]), report
        shown = runner.invoke(cli, ["reconcile", "payouts", "--account", seller], env=env)
        assert shown.exit_code == 0 and "differs" not in shown.output, shown.output
        as_csv = runner.invoke(
            cli, ["reconcile", "payouts", "--account", seller, "--format", "csv"], env=env
        )
        rows = list(csv.DictReader(io.StringIO(as_csv.output)))
        assert {r["row"] for r in rows} == {"item", "payout"}
        assert [r["check"] for r in rows if r["row"] == "payout"] == [r["check"] for r in report]
        as_json = runner.invoke(
            cli,
            ["reconcile", "payouts", "--payout", report[0]["payout"], "--format", "json"],
            env=env,
        )
        assert json.loads(as_json.output) == [report[0]]
