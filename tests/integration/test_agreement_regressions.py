"""Three known disagreements between Sluice and Stripe, each replayed end to end: the Stripe
sandbox driven with the real ``stripe`` SDK, its signed webhooks delivered over HTTP to Sluice's
``POST /webhooks/stripe``, the inbox folded, then, after every step, every account's ledger
balance (and read model) beside the sandbox's ``GET /v1/balance`` and no inbox row left failed
or parked (``tests/property/agreement_support.replay``; balance transactions are the agreement
property's business, see ``tests/property/test_agreement_with_stripe.py``).

Each test first checks that the sandbox does what the reproduction says (so a change of the
sandbox cannot turn a test green by itself), then that Sluice agrees. Amounts in cents (usd),
the sandbox's default fees (2.9 % + 30, dispute fee 1,500) and a platform delay of 2 days. On
SQLite and on PostgreSQL (a fresh schema per test).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.property.agreement_support import (
    DAY_S,
    HOUR_S,
    Config,
    Op,
    Player,
    StoreOpener,
    postgres_stores,
    replay,
    sqlite_stores,
)

CHECKS = ("balances", "inbox")
USD = Config(currency="usd")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> StoreOpener:
    if request.param == "sqlite":
        return sqlite_stores(tmp_path)
    return postgres_stores(request.getfixturevalue("postgres_url"))


def account(label: str, delay_days: int) -> Op:
    return (
        "account",
        {"label": label, "delay_days": delay_days, "bank": "ok", "interval": "manual"},
    )


def test_a_sourced_transfer_stripe_makes_past_a_negative_available_balance_is_recorded(
    stores: StoreOpener,
) -> None:
    """C4 refunded in full leaves the platform's available balance short once C4 and C5 have
    settled; a transfer sourced from C5 is still accepted by Stripe (source_transaction funds
    are not checked against available), taking available to -83. Sluice must record it, not
    refuse it with InsufficientFundsError and mark the event failed."""
    ops: list[Op] = [
        account("A", 4),
        ("separate_charge", {"label": "C4", "amount": 56_736, "card": "visa"}),
        ("separate_charge", {"label": "C5", "amount": 3_726, "card": "visa"}),
        ("refund", {"charge": "C4"}),
        ("advance", {"seconds": 8 * DAY_S}),
        ("transfer", {"label": "T", "to": "A", "amount": 1_996, "source": "C5"}),
    ]

    def sandbox_does_it(player: Player, op: Op, outcome: str) -> None:
        if op[0] == "transfer":
            assert outcome == "ok", f"the sandbox refused the transfer: {outcome}"
            # 55,061 + 3,588 (nets of C4 and C5) - 56,736 (refund) - 1,996 = -83
            assert player.stripe_balance(None) == (0, -83)

    replay(USD, ops, stores, categories=CHECKS, after_each=sandbox_does_it)


def test_a_transfer_sourced_from_a_settled_charge_is_available_at_once(
    stores: StoreOpener,
) -> None:
    """C9 (138, net 104) funds a transfer of 104 to A2 while pending; five days later C9 has
    settled, and a second transfer sourced from it (23 to A1) is available at once at Stripe.
    Sluice must book it available, not pending."""
    ops: list[Op] = [
        account("A1", 3),
        account("A2", 4),
        ("separate_charge", {"label": "C9", "amount": 138, "card": "visa"}),
        ("transfer", {"label": "T1", "to": "A2", "amount": 104, "source": "C9"}),
        ("advance", {"seconds": 5 * DAY_S}),
        ("transfer", {"label": "T2", "to": "A1", "amount": 23, "source": "C9"}),
    ]

    def sandbox_does_it(player: Player, op: Op, outcome: str) -> None:
        if op[1].get("label") == "T2":
            assert outcome == "ok", f"the sandbox refused the transfer: {outcome}"
            assert player.stripe_balance(player.accounts["A1"].id) == (0, 23)

    replay(USD, ops, stores, categories=CHECKS, after_each=sandbox_does_it)


@pytest.mark.parametrize("via", ["sandbox", "evidence"])
def test_a_won_dispute_whose_fee_stripe_keeps_returns_only_the_amount(
    stores: StoreOpener, via: str
) -> None:
    """The sandbox set to keep the dispute fee on a win (``dispute_fee_refunded_on_win=False``):
    the reinstatement returns the 10,000 disputed and not the 1,500 fee. Sluice must not give
    the fee back. Resolved by the sandbox's control route, or by Stripe's winning test evidence
    (an hour later in sandbox time)."""
    ops: list[Op] = [
        account("A", 2),
        ("separate_charge", {"label": "C", "amount": 10_000, "card": "dispute"}),
        ("resolve_dispute", {"charge": "C", "outcome": "won", "via": via}),
        ("advance", {"seconds": 2 * HOUR_S}),
    ]

    def sandbox_does_it(player: Player, op: Op, outcome: str) -> None:
        if op[0] == "advance":
            assert outcome == "ok"
            # pending: 10,000 - 320 (card fee); available: -10,000 - 1,500 + 10,000
            assert player.stripe_balance(None) == (9_680, -1_500)

    config = Config(currency="usd", dispute_fee_refunded_on_win=False)
    replay(config, ops, stores, categories=CHECKS, after_each=sandbox_does_it)
