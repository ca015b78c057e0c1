"""One time axis (issue 15): the demo runs on the sandbox's clock, so an auditor's replay of the
events as of any instant of the run (`sluice audit replay --as-of`) shows what Stripe's
`GET /v1/balance` showed at that instant, for every account and currency; and every payout's
timeline moves forward in time, in the ledger and in the payouts read model alike."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters.bootstrap import bootstrap, init_database, read_model
from adapters.cli import app
from adapters.demo import Demo, DemoRun, sandbox_and_webhooks
from adapters.http.app import create_app
from adapters.settings import Settings
from projections.runner import Projector

SEED = 3
INSTANTS_CHECKED = 4  # the first, last and two between: each is one CLI replay per account


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, DemoRun, Any]:
    url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'demo.db'}"
    settings = Settings(database_url=url)
    init_database(settings)
    ledger, view = bootstrap(settings), read_model(settings)
    with sandbox_and_webhooks(
        settings, lambda s: create_app(s, ledger=ledger, view=view, run_projector=False)
    ) as (sandbox, wired):
        run = Demo(ledger, view, wired, SEED).play(sandbox)
    Projector(ledger, view, ["payouts"]).run_once()
    yield url, run, (ledger, view)
    ledger.close()


def _replay(url: str, account: str, at: datetime) -> dict[str, Any]:
    result = CliRunner().invoke(
        app,
        [
            *("audit", "replay", "--account", account, "--as-of", at.isoformat()),
            *("--format", "json", "--database-url", url),
        ],
    )
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output))


def test_a_replay_as_of_any_instant_of_the_demo_matches_stripes_balance_then(
    demo_run: tuple[str, DemoRun, Any],
) -> None:
    url, run, _ = demo_run
    assert run.agree, run.agreement  # the end of the run, as `sluice demo` checks it
    instants = sorted({at for at, *_ in run.stripe_balances})
    assert len(instants) >= INSTANTS_CHECKED
    step = (len(instants) - 1) / (INSTANTS_CHECKED - 1)
    chosen = sorted({instants[round(i * step)] for i in range(INSTANTS_CHECKED)})
    compared = 0
    for at in chosen:
        stripe = {(a, cur): (p, av) for t, a, cur, p, av in run.stripe_balances if t == at}
        for account in sorted({a for a, _ in stripe}):
            replayed = _replay(url, account, at)
            mine = {b["currency"]: (b["pending"], b["available"]) for b in replayed["balances"]}
            for (holder, currency), (pending, available) in stripe.items():
                if holder != account:
                    continue
                got = mine.get(currency, (0, 0))
                assert got == (pending, available), (
                    f"{account} {currency} as of {at.isoformat()}: replay (pending, available)"
                    f" {got}, Stripe {(pending, available)}"
                )
                compared += 1
    # Balances that moved between the instants were compared, not only zeros.
    assert compared >= INSTANTS_CHECKED * 5
    assert len({v for *_, p, a in run.stripe_balances for v in (p, a)}) > 5


def test_every_payout_timeline_of_the_demo_moves_forward(
    demo_run: tuple[str, DemoRun, Any],
) -> None:
    _, run, (ledger, view) = demo_run
    assert run.payouts
    outcomes = set()
    for payout_id in run.payouts:
        payout = ledger.get_payout(payout_id)
        instants = [at for _, at in payout.history]
        assert instants == sorted(instants), f"{payout_id}: {payout.history}"
        with view.read() as tx:
            tx.execute("SELECT timeline FROM rm_payouts WHERE id = %s", (payout_id,))
            row = tx.one()
        steps = json.loads(row["timeline"])
        assert [s["at"] for s in steps] == sorted(s["at"] for s in steps), steps
        assert steps[0]["status"] == "pending"
        assert not any(s["status"] == "pending" for s in steps[1:] if s.get("reason_code") is None)
        outcomes.add(steps[-1]["status"])
    assert {"paid", "failed"} <= outcomes  # the bounced payout is among them


def test_sluice_minted_ids_are_branded_and_stripes_are_kept_as_stripes(
    demo_run: tuple[str, DemoRun, Any],
) -> None:
    _, run, (ledger, _) = demo_run
    for payout_id in run.payouts:
        payout = ledger.get_payout(payout_id)
        assert payout.payout_id.startswith("sl_po_")
        assert payout.stripe_payout_id is None or payout.stripe_payout_id.startswith("po_")
