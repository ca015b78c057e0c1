"""`sluice sandbox` configured from a settings file and `--set`, run as its own process and
driven with the real stripe SDK over HTTP; bad settings stop it with one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import stripe
from typer.testing import CliRunner

from adapters.cli import app
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
# A fresh interpreter imports the sandbox (uvicorn, starlette) in a second or two; on a shared
# 2-core machine allow ten times that before calling the start a failure.
STARTUP_TIMEOUT_S = 20.0
POLL_S = 0.1
STOP_TIMEOUT_S = 10.0
SETTINGS_TOML = """\
platform_settlement_currencies = ["usd", "jpy"]
dispute_fee_refunded_on_win = false
webhook_retry_delays_s = [10, 20]

[processing_fees]
usd = "250+20"
jpy = { percent_bps = 360, fixed_minor = 0 }

[chaos]
duplicate = 0.5
reorder = true
seed = 4
"""


def sluice(*args: str) -> list[str]:
    return [sys.executable, "-m", "adapters.cli", *args]


def get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return dict(json.load(response))


@contextmanager
def sandbox_process(*args: str) -> Iterator[str]:
    """Runs `sluice sandbox --port N …` and yields its base URL once it answers."""
    port = free_port()
    process = subprocess.Popen(
        sluice("sandbox", "--port", str(port), *args),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"the sandbox exited {process.returncode}: {process.communicate()[0]}")
            try:
                get(base_url + "/_sandbox/info")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the sandbox did not answer within {STARTUP_TIMEOUT_S} s")
                time.sleep(POLL_S)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)


def charge_fee(base_url: str, amount: int, currency: str) -> int:
    """Stripe's fee on a card charge, from its balance transaction (real SDK, over HTTP)."""
    key = get(base_url + "/_sandbox/info")["secret_key"]
    client = stripe.StripeClient(key, base_addresses={"api": base_url}, max_network_retries=0)
    intent = client.v1.payment_intents.create(
        {"amount": amount, "currency": currency, "payment_method": "pm_card_visa", "confirm": True}
    )
    charge = client.v1.charges.retrieve(str(intent.latest_charge))
    return int(client.v1.balance_transactions.retrieve(str(charge.balance_transaction)).fee)


def test_the_sandbox_takes_its_fees_and_chaos_from_a_settings_file(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.toml"
    path.write_text(SETTINGS_TOML)
    with sandbox_process("--settings-file", str(path)) as base_url:
        assert charge_fee(base_url, 1000, "usd") == 25 + 20  # 2.5% + 20
        assert charge_fee(base_url, 1000, "jpy") == 36  # 3.6% + 0
        chaos = get(base_url + "/_sandbox/webhooks/chaos")
    assert (chaos["duplicate"], chaos["reorder"], chaos["seed"]) == (0.5, True, 4)


def test_set_options_win_over_the_settings_file(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.toml"
    path.write_text(SETTINGS_TOML)
    args = ("--settings-file", str(path), "--set", "processing_fees=usd=100+7")
    with sandbox_process(*args, "--set", "chaos.duplicate=0") as base_url:
        assert charge_fee(base_url, 1000, "usd") == 10 + 7
        chaos = get(base_url + "/_sandbox/webhooks/chaos")
    assert (chaos["duplicate"], chaos["reorder"]) == (0.0, True)  # the file's reorder stays


@pytest.mark.parametrize(
    ("args", "file_text", "said"),
    [
        (["--set", "colour=red"], None, "error colour: no such sandbox setting"),
        (
            ["--set", "processing_fees=usd=abc"],
            None,
            "error processing_fees: cannot read 'usd=abc'",
        ),
        (["--set", "chaos.duplicate=2"], None, "error chaos.duplicate: a probability"),
        (["--set", "seed"], None, "error --set: expected NAME=VALUE, got 'seed'"),
        ([], 'payout_transit_days = "soon"', "error payout_transit_days: cannot read 'soon'"),
        ([], "webhook_delivery = 3", "error webhook_delivery: expected str, got 3"),
        ([], "[chaos]\nwobble = 1", "error chaos.wobble: unknown"),
        ([], "seed = ", "error settings file "),
    ],
    ids=[
        "unknown name",
        "bad fee",
        "bad chaos",
        "no value",
        "bad file value",
        "wrong file type",
        "unknown chaos",
        "bad toml",
    ],
)
def test_bad_settings_stop_the_sandbox_with_one_line_naming_them(
    tmp_path: Path, args: list[str], file_text: str | None, said: str
) -> None:
    if file_text is not None:
        path = tmp_path / "sandbox.toml"
        path.write_text(file_text)
        args = [*args, "--settings-file", str(path)]
    # In-process (a fresh interpreter per case costs seconds); the next test runs the process.
    ran = CliRunner().invoke(app, ["sandbox", "--port", str(free_port()), *args])
    assert ran.exit_code == 2, ran.output
    assert ran.output.strip().startswith(said), ran.output
    assert len(ran.output.strip().splitlines()) == 1, ran.output


def test_the_sandbox_process_exits_2_with_the_setting_named(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.toml"
    path.write_text('payout_transit_days = "soon"\n')
    ran = subprocess.run(
        sluice("sandbox", "--port", str(free_port()), "--settings-file", str(path)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,  # the exit status is what is tested
        timeout=STARTUP_TIMEOUT_S * 3,  # it must stop at once; this only bounds a hang
    )
    output = (ran.stdout + ran.stderr).strip()
    assert ran.returncode == 2, output
    assert output.startswith("error payout_transit_days: cannot read 'soon'"), output
    assert len(output.splitlines()) == 1, output
