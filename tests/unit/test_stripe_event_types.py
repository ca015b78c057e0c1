"""The event types Sluice subscribes to are the ones its fold handles, and Stripe's own names."""

from __future__ import annotations

import re
import typing

from stripe.params._webhook_endpoint_create_params import WebhookEndpointCreateParams

from adapters.bootstrap import bootstrap
from adapters.settings import Settings
from adapters.stripe import setup
from adapters.stripe.folding import NOTHING_TO_FOLD, Folder
from adapters.stripe.gateway import StripeClientGateway


def _handled_types() -> set[str]:
    """The handler table of a real Folder (building one calls nothing outside)."""
    settings = Settings(database_url="memory://", stripe_api_key="sk_test_unit")
    folder = Folder(bootstrap(settings), StripeClientGateway("sk_test_unit"), settings)
    return set(folder.handlers)


def _stripe_event_types() -> set[str]:
    """Every event type stripe-python 16 lets an endpoint enable (its typed parameters)."""
    (literal,) = typing.get_args(WebhookEndpointCreateParams.__annotations__["enabled_events"])
    return set(typing.get_args(literal))


def test_the_subscribed_event_types_are_exactly_those_the_fold_handles() -> None:
    assert set(setup.FOLDED_EVENT_TYPES) == _handled_types()
    assert list(setup.FOLDED_EVENT_TYPES) == sorted(set(setup.FOLDED_EVENT_TYPES))
    assert not set(setup.FOLDED_EVENT_TYPES) & NOTHING_TO_FOLD


def test_every_subscribed_event_type_is_one_stripe_knows() -> None:
    assert len(_stripe_event_types()) > 100  # the SDK's list was read, not an empty tuple
    assert set(setup.FOLDED_EVENT_TYPES) <= _stripe_event_types()


def test_each_endpoint_gets_the_events_stripe_sends_it() -> None:
    platform, connect = set(setup.PLATFORM_EVENT_TYPES), set(setup.CONNECT_EVENT_TYPES)
    assert platform | connect == set(setup.FOLDED_EVENT_TYPES)
    # Events about connected accounts come from them (Connect); the platform's own are ignored.
    assert {"account.updated", "capability.updated"} <= connect - platform
    # Transfers, application fees and top-ups happen on the platform's account only.
    assert {"transfer.created", "application_fee.created", "topup.succeeded"} <= platform - connect
    # Direct charges and connected accounts' payouts come on Connect; the platform's on its own.
    assert {"charge.succeeded", "payout.paid", "balance.available"} <= platform & connect


def test_the_going_live_guide_lists_the_event_types_setup_registers() -> None:
    """An operator who registers the endpoints by hand reads the README: it must name exactly
    the event types `sluice stripe setup` registers, per endpoint."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    guide = readme.split("## Going live", 1)[1].split("\n## ", 1)[0]
    platform = guide.split("the platform endpoint takes", 1)[1].split(";", 1)[0]
    connect = guide.split("(`connect=true`) takes", 1)[1].split(".\n", 1)[0]
    for listed, registered in (
        (platform, setup.PLATFORM_EVENT_TYPES),
        (connect, setup.CONNECT_EVENT_TYPES),
    ):
        assert re.findall(r"`([a-z_.]+)`", listed) == list(registered)
