"""The agreement property's checks can fail: each kind of disagreement, made on purpose after a
small history that agrees, is caught and reported as its own kind (so a green machine means
Sluice agrees, not that nothing was compared)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adapters.stripe import inbox
from tests.property.agreement_support import (
    DAY_S,
    BalanceDisagreement,
    Config,
    Disagreement,
    InboxDisagreement,
    Op,
    PayoutDisagreement,
    Player,
    TimingDisagreement,
    TransactionDisagreement,
    sqlite_stores,
)

HISTORY: list[Op] = [
    ("account", {"label": "A0", "delay_days": 2, "bank": "ok", "interval": "manual"}),
    (
        "destination_charge",
        {"label": "C0", "to": "A0", "amount": 10_000, "card": "visa", "application_fee": 1_000},
    ),
    ("advance", {"seconds": 3 * DAY_S}),
    ("payout", {"label": "P0", "account": "A0", "amount": 2_000}),
]


@pytest.fixture
def player(tmp_path: Path) -> Iterator[Player]:
    with Player(Config(currency="usd"), sqlite_stores(tmp_path)) as played:
        for op in HISTORY:
            assert played.apply(op).startswith("ok"), played.history[-1]
        played.assert_agrees()
        yield played


def sql(player: Player, statement: str) -> None:
    with player.view.write(None) as tx:
        tx.execute(statement)


def a_charge_sluice_never_hears_of(player: Player) -> None:
    for endpoint in player.endpoints:
        player.client.v1.webhook_endpoints.update(str(endpoint.id), {"disabled": True})
    player.apply(("separate_charge", {"label": "C1", "amount": 5_000, "card": "visa"}))


def a_read_model_balance_off_by_one(player: Player) -> None:
    sql(player, "UPDATE rm_balances SET available = available + 1")


def an_event_sluice_gave_up_on(player: Player) -> None:
    with player.view.read() as tx:
        tx.execute("SELECT event_id FROM sl_stripe_events LIMIT 1")
        row = tx.one()
    assert row is not None
    inbox.mark(player.view, row["event_id"], inbox.FAILED, "refused", "made up")


def a_fee_moved_into_the_amount(player: Player) -> None:
    sql(player, "UPDATE rm_balance_transactions SET amount = amount - fee, fee = 0 WHERE fee > 0")


def a_payout_shown_paid_too_early(player: Player) -> None:
    sql(player, "UPDATE rm_payouts SET status = 'paid'")


def available_funds_shown_pending(player: Player) -> None:
    sql(player, "UPDATE rm_balance_transactions SET status = 'pending' WHERE type = 'charge'")


BREAKS: dict[str, tuple[Callable[[Player], None], type[Disagreement], str]] = {
    "unheard_charge": (a_charge_sluice_never_hears_of, BalanceDisagreement, "sandbox GET"),
    "read_model": (a_read_model_balance_off_by_one, BalanceDisagreement, "read model"),
    "inbox": (an_event_sluice_gave_up_on, InboxDisagreement, "made up"),
    "transactions": (a_fee_moved_into_the_amount, TransactionDisagreement, "(amount, fees, net)"),
    "payouts": (a_payout_shown_paid_too_early, PayoutDisagreement, "'paid'"),
    "timing": (available_funds_shown_pending, TimingDisagreement, "pending"),
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_each_kind_of_disagreement_is_caught(player: Player, name: str) -> None:
    breaks, kind, shown = BREAKS[name]
    breaks(player)
    with pytest.raises(kind) as caught:
        player.assert_agrees()
    report = str(caught.value)
    assert shown in report
    assert "the history so far, as a regression case" in report
    assert "('payout', {'label': 'P0'" in report
