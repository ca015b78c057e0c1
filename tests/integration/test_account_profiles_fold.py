"""Names, emails and metadata come from Stripe's account objects: the fold records them when an
account is first seen and whenever Stripe's copy changes (a change back included), through the
real SDK against the sandbox, on PostgreSQL; the accounts read model follows."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.bootstrap import projector
from projections.accounts import list_accounts
from stripe_sandbox import Sandbox
from tests.integration.stripe_support import fresh_store, sandbox_gateway, sandbox_settings

pytestmark = pytest.mark.postgres


def _profile(ledger: Any, account: str) -> tuple[Any, Any, Any]:
    found = ledger.get_account(account)
    assert found is not None
    return found.name, found.email, found.metadata


def test_the_fold_keeps_names_emails_and_metadata_as_stripe_has_them(postgres_url: str) -> None:
    with Sandbox(seed=71, webhook_delivery="manual") as sb:
        client = sb.client()
        account = str(
            client.v1.accounts.create(
                {
                    "country": "US",
                    "email": "hi@kiln.example",
                    "business_profile": {"name": "Kiln"},
                    "metadata": {"tier": "gold"},
                }
            ).id
        )
        with fresh_store(postgres_url, **sandbox_settings(sb)) as store:
            folder = store.folder(sandbox_gateway(sb, timeout_s=10, max_network_retries=0))
            folder.sync_account(account)
            assert _profile(store.ledger, account) == ("Kiln", "hi@kiln.example", {"tier": "gold"})
            folder.sync_account(account)  # nothing changed at Stripe: nothing recorded
            head = store.ledger.recorder.max_notification_id()
            folder.sync_account(account)
            assert store.ledger.recorder.max_notification_id() == head

            update: dict[str, Any] = {"business_profile": {"name": "Kiln & Clay"}}
            client.v1.accounts.update(account, update | {"metadata": {"tier": ""}})
            folder.sync_account(account)
            assert _profile(store.ledger, account) == ("Kiln & Clay", "hi@kiln.example", {})
            client.v1.accounts.update(account, {"business_profile": {"name": "Kiln"}})
            client.v1.accounts.update(account, {"metadata": {"tier": "gold"}})
            folder.sync_account(account)  # back to the first profile: recorded again
            assert _profile(store.ledger, account) == ("Kiln", "hi@kiln.example", {"tier": "gold"})

            projector(store.ledger, store.settings, ["accounts"]).catch_up("accounts")
            page = list_accounts(store.view, metadata={"tier": "gold"}, search="kiln")
            assert [(a["id"], a["name"]) for a in page.data] == [(account, "Kiln")]
