"""Onboarding requirements end to end: the sandbox produces them as Stripe's test mode does (a new
account is disabled until its initial fields are provided or it is onboarded; fields still due at
their deadline become past due), they gate charges, transfers and payouts at the sandbox, the fold
records them in the ledger, Sluice's own payouts pause while they are past due, and the API shows
them as the sandbox has them. Real SDK, real HTTP, real signed webhooks, PostgreSQL."""

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
from adapters.stripe.folding import Folder
from ledger.instants import from_seconds
from ledger.payout_policy import PAUSED, decide_payout
from projections.accounts import list_accounts
from stripe_sandbox import Sandbox
from tests.integration.http_support import Client, new_key, running
from tests.integration.stripe_support import (
    Store,
    bank,
    fold_all,
    fresh_settings,
    fresh_store,
    sandbox_gateway,
    sandbox_settings,
)
from tests.integration.test_stripe_fidelity import undeclared

DAY_S = 86_400
INITIAL = ["business_type", "external_account", "tos_acceptance.date", "tos_acceptance.ip"]


def control(sb: Sandbox, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"{sb.base_url}{path}",
        data=json.dumps(body or {}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def new_seller(client: Any) -> str:
    return str(client.v1.accounts.create({"type": "custom", "country": "US"}).id)


def destination_charge(client: Any, seller: str) -> Any:
    return client.v1.payment_intents.create(
        {
            "amount": 2_000,
            "currency": "usd",
            "payment_method": "pm_card_bypassPending",
            "confirm": True,
            "transfer_data": {"destination": seller},
        }
    )


# --- the sandbox -----------------------------------------------------------------------------


def test_a_new_account_is_disabled_with_its_initial_fields_due_in_the_sdks_own_classes() -> None:
    with Sandbox(seed=91, webhook_delivery="manual", onboarding_required=True) as sb:
        client = sb.client()
        account = client.v1.accounts.retrieve(new_seller(client))
        assert isinstance(account, stripe.Account)
        assert isinstance(account.requirements, stripe.Account.Requirements)
        assert undeclared(account) == []
        requirements = account.requirements
        assert requirements.currently_due == INITIAL
        assert requirements.past_due == INITIAL
        assert requirements.eventually_due == INITIAL
        assert requirements.disabled_reason == "requirements.past_due"
        assert (account.charges_enabled, account.payouts_enabled) == (False, False)
        assert account.capabilities.to_dict() == {
            "card_payments": "inactive",
            "transfers": "inactive",
        }


def test_without_onboarding_required_a_new_account_is_enabled_at_once() -> None:
    with Sandbox(seed=92, webhook_delivery="manual") as sb:
        client = sb.client()
        account = client.v1.accounts.create({"country": "US", "external_account": bank()})
        assert account.requirements.currently_due == []
        assert account.requirements.disabled_reason is None
        assert (account.charges_enabled, account.payouts_enabled) == (True, True)


def test_a_disabled_account_takes_no_charge_transfer_or_payout_until_its_fields_are_provided() -> (
    None
):
    with Sandbox(seed=93, webhook_delivery="manual", onboarding_required=True) as sb:
        client = sb.client()
        seller = new_seller(client)
        with pytest.raises(stripe.InvalidRequestError, match="capabilities enabled: transfers"):
            destination_charge(client, seller)
        with pytest.raises(stripe.InvalidRequestError, match="cannot currently make live charges"):
            client.v1.payment_intents.create(
                {
                    "amount": 1_000,
                    "currency": "usd",
                    "payment_method": "pm_card_visa",
                    "confirm": True,
                },
                {"stripe_account": seller},
            )
        with pytest.raises(stripe.InvalidRequestError, match="capabilities enabled: transfers"):
            client.v1.transfers.create({"amount": 100, "currency": "usd", "destination": seller})

        # Providing the fields, as a platform collecting them would, satisfies them one by one.
        updated = client.v1.accounts.update(
            seller,
            {
                "business_type": "individual",
                "tos_acceptance": {"date": sb.clock.now(), "ip": "::1"},
            },
        )
        assert updated.requirements.past_due == ["external_account"]
        assert updated.requirements.disabled_reason == "requirements.past_due"
        updated = client.v1.accounts.update(seller, {"external_account": bank()})
        assert updated.requirements.currently_due == []
        assert updated.requirements.disabled_reason is None
        assert (updated.charges_enabled, updated.payouts_enabled) == (True, True)
        assert updated.capabilities.to_dict() == {"card_payments": "active", "transfers": "active"}
        assert destination_charge(client, seller).status == "succeeded"
        payout = client.v1.payouts.create(
            {"amount": 500, "currency": "usd"}, {"stripe_account": seller}
        )
        assert payout.status == "pending"


def test_fields_still_due_at_the_deadline_become_past_due_and_disable_the_account() -> None:
    with Sandbox(seed=94, webhook_delivery="manual", onboarding_required=True) as sb:
        client = sb.client()
        seller = new_seller(client)
        control(sb, f"/_sandbox/accounts/{seller}/onboard")
        client.v1.accounts.update(seller, {"external_account": bank()})
        deadline = sb.clock.now() + DAY_S
        due = control(
            sb,
            f"/_sandbox/accounts/{seller}/requirements",
            {"currently_due": ["individual.verification.document"], "current_deadline": deadline},
        )
        assert due["requirements"]["eventually_due"] == ["individual.verification.document"]
        assert (due["charges_enabled"], due["payouts_enabled"]) == (True, True)
        sb.advance(DAY_S - 1, deliver=False)
        assert client.v1.accounts.retrieve(seller).requirements.past_due == []
        sb.advance(1, deliver=False)
        account = client.v1.accounts.retrieve(seller)
        assert account.requirements.past_due == ["individual.verification.document"]
        assert account.requirements.disabled_reason == "requirements.past_due"
        assert (account.charges_enabled, account.payouts_enabled) == (False, False)
        with pytest.raises(stripe.InvalidRequestError, match="not enabled") as refused:
            client.v1.payouts.create({"amount": 1, "currency": "usd"}, {"stripe_account": seller})
        assert refused.value.code == "payouts_not_allowed"
        events = client.v1.events.list(
            {"type": "account.updated", "limit": 100}, {"stripe_account": seller}
        ).data
        assert all(isinstance(e.data.object, stripe.Account) for e in events)
        assert all(undeclared(e.data.object) == [] for e in events)
        latest = events[0].data.previous_attributes.to_dict()
        assert latest["requirements"]["past_due"] == []
        assert latest["charges_enabled"] is True


def test_the_sandbox_refuses_requirements_it_does_not_know() -> None:
    with Sandbox(seed=95, webhook_delivery="manual", onboarding_required=True) as sb:
        seller = new_seller(sb.client())
        with pytest.raises(urllib.error.HTTPError) as refused:
            control(sb, f"/_sandbox/accounts/{seller}/requirements", {"disabled_reason": "bored"})
        assert refused.value.code == 400
        with pytest.raises(urllib.error.HTTPError):
            control(sb, f"/_sandbox/accounts/{sb.platform_account_id}/onboard")


# --- the fold and the API --------------------------------------------------------------------


def _requirements(ledger: Any, account: str) -> dict[str, Any]:
    found = ledger.get_account(account)
    assert found is not None
    return dict(found.requirements)


@pytest.mark.postgres
def test_the_fold_records_requirements_as_stripe_has_them_and_only_when_they_change(
    postgres_url: str,
) -> None:
    with Sandbox(seed=96, webhook_delivery="manual", onboarding_required=True) as sb:
        client = sb.client()
        seller = new_seller(client)
        with fresh_store(postgres_url, **sandbox_settings(sb)) as store:
            folder = Folder(
                store.ledger, sandbox_gateway(sb, max_network_retries=0), store.settings
            )
            folder.sync_account(seller)
            recorded = _requirements(store.ledger, seller)
            assert recorded["currently_due"] == INITIAL
            assert recorded["disabled_reason"] == "requirements.past_due"
            head = store.ledger.recorder.max_notification_id()
            folder.sync_account(seller)  # nothing changed at Stripe: nothing recorded
            assert store.ledger.recorder.max_notification_id() == head
            account = store.ledger.get_account(seller)
            day = from_seconds(sb.clock.now()).date()
            assert decide_payout(account, None, "usd", day).reason == PAUSED

            projector(store.ledger, store.settings, ["accounts"]).catch_up("accounts")
            listed = list_accounts(store.view, search=seller).data[0]["requirements"]
            assert listed["past_due"] == INITIAL
            assert listed["payouts_paused"] == "disabled by Stripe: requirements.past_due"

            control(sb, f"/_sandbox/accounts/{seller}/onboard")
            folder.sync_account(seller)
            assert _requirements(store.ledger, seller)["currently_due"] == []
            assert _requirements(store.ledger, seller)["disabled_reason"] is None
            projector(store.ledger, store.settings, ["accounts"]).catch_up("accounts")
            listed = list_accounts(store.view, search=seller).data[0]["requirements"]
            assert listed == {
                "currently_due": [],
                "past_due": [],
                "eventually_due": [],
                "disabled_reason": None,
                "current_deadline": None,
                "payouts_paused": None,
            }


@pytest.mark.postgres
def test_requirements_reach_the_api_through_signed_webhooks_and_pause_sluices_payouts(
    postgres_url: str,
) -> None:
    with (
        Sandbox(seed=97, webhook_delivery="manual", onboarding_required=True) as sb,
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
            api = Client(address, new_key(config, "admin"))
            store = Store(config, sluice.ledger, sluice.view)
            folder = store.folder(sandbox_gateway(sb))

            seller = new_seller(client)
            client.v1.accounts.update(
                seller,
                {
                    "business_type": "company",
                    "tos_acceptance": {"date": sb.clock.now(), "ip": "::1"},
                    "external_account": bank(),
                },
            )
            destination_charge(client, seller)
            deadline = sb.clock.now() + 2 * DAY_S
            control(
                sb,
                f"/_sandbox/accounts/{seller}/requirements",
                {"currently_due": ["company.tax_id"], "current_deadline": deadline},
            )
            sb.flush()
            assert not any(r.errors for r in fold_all(folder, store.view))

            shown = api.get(f"/v1/accounts/{seller}")
            assert shown.status == 200, shown.text
            at_stripe = client.v1.accounts.retrieve(seller).requirements
            assert shown.json()["requirements"] == {
                "currently_due": at_stripe.currently_due,
                "past_due": at_stripe.past_due,
                "eventually_due": at_stripe.eventually_due,
                "disabled_reason": at_stripe.disabled_reason,
                "current_deadline": deadline,
                "payouts_paused": None,
            }
            asked = api.post("/v1/payouts", {"account": seller, "amount": 100, "currency": "usd"})
            assert asked.status == 200, asked.text

            sb.advance(2 * DAY_S)  # the deadline passes: past due, disabled
            sb.flush()
            assert not any(r.errors for r in fold_all(folder, store.view))
            shown = api.get(f"/v1/accounts/{seller}").json()
            assert shown["requirements"]["past_due"] == ["company.tax_id"]
            assert shown["requirements"]["disabled_reason"] == "requirements.past_due"
            assert shown["payouts_enabled"] is False
            assert "requirements.past_due" in shown["requirements"]["payouts_paused"]
            refused = api.post("/v1/payouts", {"account": seller, "amount": 100, "currency": "usd"})
            assert refused.status == 400, refused.text
            assert refused.error["code"] == "payouts_disabled"

            # The accounts list and `sluice accounts` show them from the read model.
            projector(sluice.ledger, config, ["accounts"]).catch_up("accounts")
            listed = api.get(f"/v1/accounts?search={seller}")
            assert listed.status == 200, listed.text
            assert listed.json()["data"][0]["requirements"] == shown["requirements"]
            url = config.database_url
            shown_by_cli = CliRunner().invoke(
                cli_app,
                ["accounts", "--search", seller, "--format", "json", "--database-url", url],
            )
            assert shown_by_cli.exit_code == 0, shown_by_cli.output
            rows = json.loads(shown_by_cli.output)
            assert rows[0]["requirements"] == shown["requirements"]
