"""Risk end to end: reserves the sandbox places and releases on their date (Stripe's Reserves API
objects, parsed by the real SDK's own classes), folded from signed webhooks into the ledger's
reserved book, never paid out while held, the ledger agreeing with the sandbox's balances all
along; and who covers each seller's negative balance (controller.losses.payments), with the
platform's exposure per seller from the API and the CLI. Real SDK, real HTTP, PostgreSQL."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
import stripe
from typer.testing import CliRunner

from adapters.bootstrap import projector
from adapters.cli import app as cli_app
from adapters.http.app import create_app
from adapters.reconcile import Reconciler
from adapters.stripe.folding import SLUICE_PAYOUT_METADATA_KEY
from adapters.stripe.gateway import idempotency_key
from ledger.instants import from_seconds
from ledger.risk import reserve_aggregate_id
from stripe_sandbox import Sandbox
from tests.integration.http_support import Client, new_key, running
from tests.integration.stripe_support import (
    Store,
    bank,
    fold_all,
    fresh_settings,
    ledger_balance,
    nonzero,
    sandbox_gateway,
    sandbox_settings,
    stripe_balance,
)
from tests.integration.test_stripe_fidelity import undeclared

DAY_S = 86_400


def control(sb: Sandbox, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        f"{sb.base_url}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def seller(client: Any, kind: str) -> str:
    params = {"type": kind, "country": "US", "external_account": bank()}
    params["settings"] = {"payouts": {"schedule": {"interval": "manual"}}}
    return str(client.v1.accounts.create(params).id)


def pay_to(client: Any, account: str, amount: int) -> Any:
    return client.v1.payment_intents.create(
        {
            "amount": amount,
            "currency": "usd",
            "payment_method": "pm_card_bypassPending",
            "confirm": True,
            "transfer_data": {"destination": account},
        }
    )


def fetch(client: Any, path: str, account: str) -> Any:
    """Reserves have no SDK service (a preview): the raw request, parsed by the SDK."""
    response = client.raw_request("get", path, stripe_account=account)
    return client.deserialize(response, api_mode="V1")


# --- the sandbox -----------------------------------------------------------------------------


def test_a_reserve_holds_funds_until_the_day_after_its_date_in_the_sdks_own_classes() -> None:
    with Sandbox(seed=81, webhook_delivery="manual") as sb:
        client = sb.client()
        account = seller(client, "custom")
        pay_to(client, account, 10_000)
        before = stripe_balance(client, account)["usd"]
        release_after = sb.clock.now() + 2 * DAY_S + 5
        hold = control(
            sb,
            f"/_sandbox/accounts/{account}/reserves",
            {"amount": 2_500, "release_after": release_after},
        )
        assert stripe_balance(client, account)["usd"] == (before[0], before[1] - 2_500)
        found = fetch(client, f"/v1/reserve/holds/{hold['id']}", account)
        assert isinstance(found, stripe.reserve.Hold)
        assert undeclared(found) == []
        # "scheduled_release: midnight UTC of the day after release_after" (Hold.ReleaseSchedule)
        scheduled = found.release_schedule.scheduled_release
        assert scheduled == release_after - release_after % DAY_S + DAY_S

        sb.advance(scheduled - sb.clock.now() - 1, deliver=False)
        assert stripe_balance(client, account)["usd"] == (before[0], before[1] - 2_500)
        sb.advance(1, deliver=False)
        assert stripe_balance(client, account)["usd"] == before
        released = fetch(client, f"/v1/reserve/holds/{hold['id']}", account)
        assert released.amount_releasable == 0
        release_id = released.release_details[0].reserve_release
        release = fetch(client, f"/v1/reserve/releases/{release_id}", account)
        assert isinstance(release, stripe.reserve.Release)
        assert undeclared(release) == []
        assert (release.amount, release.reserve_hold) == (2_500, hold["id"])

        txns = client.v1.balance_transactions.list({"limit": 10}, {"stripe_account": account})
        kinds = {(t.type, t.amount, t.source) for t in txns.data}
        assert ("reserve_hold", -2_500, hold["id"]) in kinds
        assert ("reserve_release", 2_500, release_id) in kinds
        assert all(undeclared(t) == [] for t in txns.data)
        events = client.v1.events.list({"limit": 20}, {"stripe_account": account}).data
        reserve_events = [e for e in events if e.type.startswith("reserve.")]
        assert [e.type for e in reserve_events] == [
            "reserve.hold.updated",
            "reserve.release.created",
            "reserve.hold.created",
        ]
        assert all(undeclared(e.data.object) == [] for e in reserve_events)


def test_the_sandbox_holds_no_more_than_is_available() -> None:
    with Sandbox(seed=82, webhook_delivery="manual") as sb:
        client = sb.client()
        account = seller(client, "custom")
        pay_to(client, account, 1_000)
        with pytest.raises(urllib.error.HTTPError) as refused:
            control(sb, f"/_sandbox/accounts/{account}/reserves", {"amount": 1_001})
        assert refused.value.code == 400
        assert stripe_balance(client, account)["usd"][1] == 1_000


# --- end to end ------------------------------------------------------------------------------


def _agree(client: Any, store: Store, accounts: list[str]) -> None:
    for account in accounts:
        assert nonzero(ledger_balance(store.ledger, account)) == nonzero(
            stripe_balance(client, account)
        ), account


@pytest.mark.postgres
def test_reserves_and_exposure_end_to_end_the_ledger_agreeing_with_the_sandbox(
    postgres_url: str,
) -> None:
    with (
        Sandbox(seed=83, webhook_delivery="manual") as sb,
        fresh_settings(postgres_url, **sandbox_settings(sb)) as config,
    ):
        app = create_app(config, run_projector=False)
        sluice = app.state.sluice
        with running(app) as address:
            client = sb.client()
            url = f"http://{address}/webhooks/stripe"
            hooks = [
                client.v1.webhook_endpoints.create({"url": url, "enabled_events": ["*"]}),
                client.v1.webhook_endpoints.create(
                    {"url": url, "enabled_events": ["*"], "connect": True}
                ),
            ]
            config.stripe_webhook_secret = ",".join(str(h.secret) for h in hooks)
            # One time axis: what Sluice records itself (its payout) takes Stripe's clock.
            sluice.ledger.clock = lambda: from_seconds(sb.clock.now())
            api = Client(address, new_key(config, "finance"))
            admin = Client(address, new_key(config, "admin"))
            store = Store(config, sluice.ledger, sluice.view)
            folder = store.folder(sandbox_gateway(sb))

            held = seller(client, "custom")  # the platform covers its losses
            owing = seller(client, "custom")
            covered = seller(client, "standard")  # Stripe covers its losses
            accounts = [held, owing, covered]
            pay_to(client, held, 10_000)
            for account in (owing, covered):  # a direct charge, disputed: available < 0
                client.v1.payment_intents.create(
                    {
                        "amount": 3_000,
                        "currency": "usd",
                        "payment_method": "pm_card_createDispute",
                        "confirm": True,
                    },
                    {"stripe_account": account},
                )
            hold = control(
                sb,
                f"/_sandbox/accounts/{held}/reserves",
                {"amount": 4_000, "release_after": sb.clock.now() + 3 * DAY_S},
            )
            sb.flush()
            assert not any(r.errors for r in fold_all(folder, store.view))
            _agree(client, store, accounts)
            reserved = store.ledger.get_balance(held, "usd")
            assert (reserved.available_minor, reserved.reserved_minor) == (6_000, 4_000)

            # Reserved funds are never paid out: Sluice pays out what is available, no more.
            too_much = {"account": held, "amount": 6_001, "currency": "usd"}
            refused = admin.post("/v1/payouts", too_much)
            assert refused.status == 402, refused.text
            asked = admin.post("/v1/payouts", too_much | {"amount": 6_000})
            assert asked.status == 200, asked.text
            sluice_id = str(asked.json()["id"])  # sent to Stripe as the payout worker does
            sandbox_gateway(sb).create_payout(
                account=held,
                amount=6_000,
                currency="usd",
                idempotency_key=idempotency_key("payout", sluice_id),
                metadata={SLUICE_PAYOUT_METADATA_KEY: sluice_id},
            )

            read_models = projector(sluice.ledger, config, ["accounts", "balances"])
            for name in ("accounts", "balances"):
                read_models.catch_up(name)
            shown = api.get("/v1/risk/exposure")
            assert shown.status == 200, shown.text
            rows = {r["account"]: r for r in shown.json()["data"]}
            owed = -stripe_balance(client, owing)["usd"][1]
            assert owed > 0
            assert rows[owing]["losses_covered_by"] == "application"
            assert rows[owing]["platform_exposure"] == owed
            assert rows[covered]["losses_covered_by"] == "stripe"
            assert rows[covered]["platform_exposure"] == 0
            assert rows[covered]["negative_balance"] > 0
            assert (rows[held]["reserved"], rows[held]["platform_exposure"]) == (4_000, 0)
            assert shown.json()["total_platform_exposure"] == [{"currency": "usd", "amount": owed}]
            by_cli = CliRunner().invoke(
                cli_app, ["risk", "--format", "json", "--database-url", config.database_url]
            )
            assert by_cli.exit_code == 0, by_cli.output
            assert json.loads(by_cli.output) == shown.json()
            own = Client(address, new_key(config, f"account:{held}"))
            assert own.get("/v1/risk/exposure").status == 403

            sb.advance(4 * DAY_S)  # the reserve's date passes: Stripe releases it
            sb.flush()
            assert not any(r.errors for r in fold_all(folder, store.view))
            released = store.ledger.get_balance(held, "usd")
            assert released.reserved_minor == 0
            assert released.available_minor == 4_000
            _agree(client, store, accounts)
            reserve = store.ledger.repository.get(reserve_aggregate_id(hold["id"]))
            assert (reserve.held_minor, list(reserve.releases.values())) == (0, [4_000])

            # Every balance transaction Stripe booked, the reserve's included, matches one of
            # the ledger's: reconciliation finds no break.
            report = Reconciler(
                sluice.ledger, sluice.view, sandbox_gateway(sb), config, folder=folder
            ).run(accounts)
            assert (dict(report.found), report.errors) == ({}, [])
            [release_id] = reserve.releases
            rows = api.get(f"/v1/balance_transactions?account={held}&limit=100").json()["data"]
            booked = {(r["type"], r["amount"], r["source"]) for r in rows}
            assert ("reserve_hold", -4_000, hold["id"]) in booked
            assert ("reserve_release", 4_000, release_id) in booked
