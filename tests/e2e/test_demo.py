"""The README's promise, end to end: `sluice demo` books a marketplace through the Stripe
sandbox and its webhooks, the ledger balances and agrees with Stripe, and an auditor's
`sluice audit verify` finds the read models equal to a replay of the events."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DEMO_TIMEOUT_S = 300


def sluice(*args: str, cwd: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"SLUICE_DATABASE_URL": database_url, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )


def test_the_demo_balances_agrees_with_stripe_and_survives_an_audit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    demo = sluice("demo", "--seed", "3", cwd=tmp_path, database_url=url)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "ledger balanced: yes" in demo.stdout
    assert "stripe and ledger agree: yes" in demo.stdout
    assert "Payouts made by the workers" in demo.stdout
    assert "account_closed" in demo.stdout  # the bounced payout, returned to available
    verify = sluice("audit", "verify", cwd=tmp_path, database_url=url)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "read models equal a replay of the events: yes" in verify.stdout


def test_a_second_demo_moves_the_first_store_aside_and_deletes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    assert sluice("demo", cwd=tmp_path, database_url=url).returncode == 0
    again = sluice("demo", cwd=tmp_path, database_url=url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "moved to" in again.stdout
    assert (tmp_path / "demo.db.previous").exists()
    assert "stripe and ledger agree: yes" in again.stdout
