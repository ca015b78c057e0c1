"""Law: whatever history happens and whichever webhooks are lost, after `reconcile` every clearing
book is zero and every account agrees with Stripe.

Random histories (the agreement machine's player and operations: charges of the three types,
sourced transfers, refunds reversing transfers, payouts, days passing) are played
through the sandbox over HTTP with a random fraction of webhooks dropped for good (the sandbox's
drift mode); then one `reconcile` pass, and the agreement machine's own comparison (balances,
balance transactions, payouts, timing) must find nothing. PostgreSQL, a fresh schema per example;
30 examples (each plays a whole history), under a minute in all.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ledger import reconciliation as r
from projections import reconciliation as recon_view
from tests.integration.test_reconcile import AGREEMENT, drop, problems, reconcile
from tests.property.agreement_support import Config, Op, Player, postgres_stores

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

EXAMPLES = 30  # about a second each: a history of up to 15 operations, a fresh sandbox and schema
DAY_S = 86_400
ACCOUNTS: list[Op] = [
    ("account", {"label": "A0", "delay_days": 2, "bank": "ok", "interval": "manual"}),
    ("account", {"label": "A1", "delay_days": 3, "bank": "ok", "interval": "daily"}),
]
amounts = st.integers(1_000, 60_000).map(lambda n: n // 10 * 10)
sellers = st.sampled_from(["A0", "A1"])
charges = st.integers(0, 5).map(lambda n: f"C{n}")


def _charge(kind: str, n: int, draw: Any) -> Op:
    label, amount = f"C{n}", draw(amounts)
    card = draw(st.sampled_from(["visa", "visa", "bypass"]))
    if kind == "separate":
        return ("separate_charge", {"label": label, "amount": amount, "card": card})
    fee = draw(st.integers(0, amount // 10))
    if kind == "destination":
        params = {"label": label, "to": draw(sellers), "amount": amount, "card": card}
        return ("destination_charge", {**params, "application_fee": fee})
    params = {"label": label, "on": draw(sellers), "amount": amount, "card": card}
    return ("direct_charge", {**params, "application_fee": fee})


@st.composite
def histories(draw: Any) -> list[Op]:
    ops: list[Op] = list(ACCOUNTS)
    made = 0
    for _ in range(draw(st.integers(4, 12))):
        kind = draw(
            st.sampled_from(
                ["separate", "destination", "direct", "transfer", "refund", "advance", "payout"]
            )
        )
        if kind in ("separate", "destination", "direct"):
            ops.append(_charge(kind, made, draw))
            made += 1
        elif kind == "transfer":
            params = {"label": f"T{len(ops)}", "to": draw(sellers), "amount": draw(amounts) // 4}
            ops.append(("transfer", {**params, "source": draw(charges)}))
        elif kind == "refund":
            refund = {"charge": draw(charges), "amount": draw(amounts) // 10}
            ops.append(("refund", {**refund, "reverse_transfer": draw(st.booleans())}))
        elif kind == "advance":
            ops.append(("advance", {"seconds": draw(st.integers(1, 4)) * DAY_S}))
        else:
            params = {"label": f"P{len(ops)}", "account": draw(sellers)}
            ops.append(("payout", {**params, "amount": draw(amounts) // 10}))
    ops.append(("advance", {"seconds": draw(st.integers(0, 6)) * DAY_S}))
    return ops


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    history=histories(),
    lost=st.floats(0.05, 0.6),
    seed=st.integers(0, 2**16),
)
def test_after_reconcile_every_clearing_book_is_zero_and_every_account_agrees(
    postgres_url: str, history: list[Op], lost: float, seed: int
) -> None:
    with Player(Config(seed=seed % 97), postgres_stores(postgres_url)) as player:
        drop(player, lost, seed=seed)
        for op in history:
            player.apply(op)
        report = reconcile(player)
        event(f"breaks found: {'some' if report.found else 'none'}")
        left = problems(player)
        assert left == {}, f"{report}\n{player.report(player.findings(), AGREEMENT)}"
        assert all(v == 0 for v in recon_view.clearing_books(player.view).values()), report
        assert recon_view.all_breaks(player.view, status=r.OPEN) == [], report
