"""Reconcile throughput: balance transactions checked per second, beside the rate of listing the
same balance transactions from the Stripe sandbox, measured in the same run.

Per run: a fresh sandbox and PostgreSQL schema; N destination charges (with an application fee,
to a handful of sellers, half available at once) played through the sandbox with Sluice's own
webhook endpoint and fold (the agreement machine's player), optionally with a fraction of the
webhooks lost. Then, timed: listing every account's balance transactions with the SDK
(auto-paginated, 100 a page: the baseline), and one `reconcile` pass over the same accounts
(listing, grouping, comparing, recording breaks, repairing lost webhooks, resolving). The ratio
is the transferable figure: what reconciling costs beyond reading Stripe.

    scripts/bench reconcile [--charges 300] [--sellers 5] [--lost 0,0.5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_common import fmt, render_rows  # noqa: E402

from adapters.reconcile import Reconciler  # noqa: E402
from tests.property.agreement_support import Config, Player, postgres_stores  # noqa: E402

DATABASE_URL = os.environ.get(
    "SLUICE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
DAY_S = 86_400


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--charges", type=int, default=300)
    parser.add_argument("--sellers", type=int, default=5)
    parser.add_argument(
        "--lost", default="0,0.5", help="comma-separated fractions of webhooks lost, one run each"
    )
    parser.add_argument("--quick", action="store_true", help="smoke-sized: 40 charges, 2 sellers")
    return parser.parse_args()


def play(player: Player, charges: int, sellers: int, lost: float) -> None:
    player.control("/_sandbox/webhooks/chaos", {"drop": lost, "seed": 7})
    for n in range(sellers):
        player.apply(
            ("account", {"label": f"A{n}", "delay_days": 2, "bank": "ok", "interval": "manual"})
        )
    for n in range(charges):
        card = "bypass" if n % 2 else "visa"
        params = {"label": f"C{n}", "to": f"A{n % sellers}", "amount": 10_000 + n * 10}
        player.apply(("destination_charge", {**params, "card": card, "application_fee": 500 + n}))
    player.apply(("advance", {"seconds": 3 * DAY_S}))


def list_all(player: Player) -> tuple[int, float]:
    """Every account's balance transactions through the SDK: (count, seconds)."""
    gateway = player.folder.gateway
    started = time.monotonic()
    count = sum(
        1
        for _, stripe_id, _ in player.holders()
        for _ in gateway.balance_transactions(account=stripe_id)
    )
    return count, time.monotonic() - started


def measure(charges: int, sellers: int, lost: float) -> dict[str, Any]:
    with Player(Config(seed=1), postgres_stores(DATABASE_URL)) as player:
        play(player, charges, sellers, lost)
        list_all(player)  # warm: the SDK's connection and the sandbox's first render
        listed, list_s = list_all(player)
        reconciler = Reconciler(
            player.ledger, player.view, player.folder.gateway, player.settings, folder=player.folder
        )
        report = reconciler.run()
        return {
            "lost": lost,
            "listed": listed,
            "list_rate": listed / list_s,
            "checked": report.checked,
            "reconcile_rate": report.checked / report.seconds,
            "found": sum(report.found.values()),
            "repaired": report.repaired,
            "open": sum(report.open.values()),
        }


def main() -> None:
    args = parse_args()
    charges, sellers = (40, 2) if args.quick else (args.charges, args.sellers)
    print(
        f"Sluice reconcile bench: {charges} destination charges to {sellers} sellers, "
        f"PostgreSQL, in-process sandbox over HTTP, load {os.getloadavg()}"
    )
    rows = []
    for lost in (float(x) for x in args.lost.split(",")):
        result = measure(charges, sellers, lost)
        ratio = result["reconcile_rate"] / result["list_rate"]
        rows.append(
            [
                f"{lost:.0%}",
                str(result["listed"]),
                fmt(result["list_rate"]),
                fmt(result["reconcile_rate"]),
                f"x{ratio:.3f}",
                f"{result['found']} / {result['repaired']} / {result['open']}",
            ]
        )
    print(
        render_rows(
            [
                "webhooks lost",
                "balance txns",
                "listed/s (baseline)",
                "checked/s (reconcile)",
                "ratio",
                "breaks found / repaired / open",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
