"""The same marketplace twice: once with a well-behaved Stripe sandbox, once with Sluice's
Stripe calls failing (500s before and after the sandbox acted, timeouts before and after) and
the sandbox's webhook chaos at its worst (every event delivered eleven times, reordered,
delayed). Both end with the same ledger, and in both the ledger agrees with Stripe's balances.

The faults come from a proxy between Sluice and the sandbox (``stripe_proxy``); the sandbox
itself is not changed."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.http.app import create_app
from adapters.stripe import inbox
from adapters.stripe.folding import SPLIT_METADATA_KEY
from adapters.stripe.gateway import StripeClientGateway
from stripe_sandbox import Sandbox
from tests.faults.stripe_proxy import (
    E500_AFTER,
    E500_BEFORE,
    PASS,
    TIMEOUT_AFTER,
    TIMEOUT_BEFORE,
    always_pass,
    stripe_proxy,
)
from tests.integration.http_support import running
from tests.integration.stripe_support import (
    BANK_OK,
    DAY_S,
    PLATFORM,
    Target,
    fresh_settings,
    inbox_rows,
    ledger_balance,
    ledger_state,
    nonzero,
    open_store,
    sandbox_gateway,
    sandbox_settings,
    stripe_balance,
)

pytestmark = [pytest.mark.postgres, pytest.mark.faults]

SEED = 29
# Every third call fails, in turn each way; never two in a row, so a call retried by the SDK
# (max_network_retries=2) gets through, and Sluice's own retries (parked events) see the rest.
FAULTS = (E500_BEFORE, TIMEOUT_AFTER, E500_AFTER, TIMEOUT_BEFORE)
CHAOS = {"duplicate": 1.0, "duplicate_count": 10, "reorder": True, "delay_seconds": 600}
STRIPE_TIMEOUT_S = 1.0
SETTLE_ROUNDS = 12  # deliver-and-fold rounds until nothing is left (each is bounded)


def faulty(n: int, method: str, path: str) -> str:
    return FAULTS[(n // 3) % len(FAULTS)] if n % 3 == 0 else PASS


@dataclass
class Outcome:
    state: Any
    stripe_agrees: dict[str, bool]
    injected: dict[str, int]
    deliveries: int
    unique_events: int


def _control(sb: Sandbox, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        f"{sb.base_url}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _marketplace(postgres_url: str, *, broken: bool) -> Outcome:
    with (
        Sandbox(seed=SEED, webhook_delivery="manual") as sb,
        stripe_proxy(
            sb.base_url, plan=faulty if broken else always_pass, hang_s=STRIPE_TIMEOUT_S + 1
        ) as proxy,
        fresh_settings(
            postgres_url,
            **sandbox_settings(sb, stripe_api_base=proxy.base_url),
            stripe_timeout_s=STRIPE_TIMEOUT_S,
            stripe_max_network_retries=2,
        ) as settings,
        open_store(settings) as store,
    ):
        app = create_app(settings, ledger=store.ledger, view=store.view, run_projector=False)
        with running(app) as address:
            client = sb.client()
            secrets = [
                client.v1.webhook_endpoints.create(
                    {
                        "url": f"http://{address}/webhooks/stripe",
                        "enabled_events": ["*"],
                        "connect": connect,
                    }
                ).secret
                for connect in (False, True)
            ]
            settings.stripe_webhook_secret = ",".join(str(s) for s in secrets)
            if broken:
                _control(sb, "/_sandbox/webhooks/chaos", {**CHAOS, "seed": 3})
            target = Target("sandbox", client, sandbox_gateway(sb), sb)
            seller, other = target.account(BANK_OK), target.account(BANK_OK)
            dest = target.pay(
                10_000, application_fee_amount=800, transfer_data={"destination": seller}
            )
            target.pay(3_000, "pm_card_bypassPending", transfer_data={"destination": other})
            split = [
                {"account": seller, "share_bps": 6000},
                {"account": other, "fixed_amount": 1000},
            ]
            target.pay(
                5_000,
                transfer_group="order-faults",
                metadata={SPLIT_METADATA_KEY: json.dumps(split)},
            )
            client.v1.refunds.create(
                {"charge": dest.latest_charge, "amount": 2_500, "reverse_transfer": True}
            )
            # Sluice's gateway goes through the proxy: folding re-fetches objects and routes
            # the split's transfers with it.
            gateway = StripeClientGateway(
                sb.secret_key,
                api_base=proxy.base_url,
                timeout_s=STRIPE_TIMEOUT_S,
                max_network_retries=2,
            )
            folder = store.folder(gateway)
            _settle(sb, folder, store.view)
            sb.advance(3 * DAY_S)  # past available_on (and past the chaos' delay)
            _settle(sb, folder, store.view)
            statuses = {r["status"] for r in inbox_rows(store.view).values()}
            assert statuses <= {inbox.PROCESSED, inbox.IGNORED}, statuses
            attempts = json.loads(
                urllib.request.urlopen(f"{sb.base_url}/_sandbox/webhooks/attempts").read()
            )["attempts"]
            agrees = {
                account: nonzero(ledger_balance(store.ledger, account or PLATFORM))
                == nonzero(stripe_balance(client, account))
                for account in (None, seller, other)
            }
            return Outcome(
                ledger_state(store.ledger),
                {str(k): v for k, v in agrees.items()},
                dict(proxy.injected),
                len(attempts),
                len({a["event"] for a in attempts}),
            )


def _settle(sb: Sandbox, folder: Any, view: Any) -> None:
    """Delivers what is due and folds until nothing is left to deliver or fold."""
    for _ in range(SETTLE_ROUNDS):
        flushed = sb.flush()
        report = folder.process(view)
        if not flushed["attempted"] and not inbox.due(view, 1) and not report.processed:
            return
    raise AssertionError("the marketplace did not settle")


def test_stripe_faults_and_webhook_chaos_end_in_the_same_ledger(postgres_url: str) -> None:
    clean = _marketplace(postgres_url, broken=False)
    broken = _marketplace(postgres_url, broken=True)
    assert set(broken.injected) - {PASS}, broken.injected  # faults were injected
    assert broken.deliveries > 5 * broken.unique_events  # and the chaos duplicated
    assert all(clean.stripe_agrees.values()), clean.stripe_agrees
    assert all(broken.stripe_agrees.values()), broken.stripe_agrees
    a, b = clean.state, broken.state
    assert (a.balances, a.totals, a.per_currency) == (b.balances, b.totals, b.per_currency)
    assert (a.payments, a.refunds) == (b.payments, b.refunds)
    assert len(a.transfers) == len(b.transfers)
    print(
        f"\n[faults] sandbox faults: injected {broken.injected}; webhook deliveries"
        f" {broken.deliveries} for {broken.unique_events} events (clean run:"
        f" {clean.deliveries}); same ledger: yes"
    )
