"""Command log lines of a real `sluice serve` process (SQLite store, real HTTP), parsed as JSON:
each command the ledger runs logs one line with its name, outcome, idempotency key and the
account and payout ids it touched, tied to the request that sent it; refusals name their code;
the access line carries the request's idempotency key and path ids; no line holds a secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_observability import ROOT, Served

CLI_TIMEOUT_S = 120


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env["SLUICE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'commands.db'}"
    env["SLUICE_LOG_FORMAT"] = "json"
    for args in (["db", "migrate"],):
        done = subprocess.run(
            [sys.executable, "-m", "adapters.cli", *args],
            cwd=ROOT, env=env, capture_output=True, timeout=CLI_TIMEOUT_S, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    s = Served(env, tmp_path / "serve.stderr")
    try:
        yield s
    finally:
        s.stop()


def admin_key(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "adapters.cli", "keys", "create", "--role", "admin"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=True,
    )  # fmt: skip
    return done.stdout.strip().splitlines()[-1]


def post(base: str, key: str, path: str, body: dict[str, Any], idem: str, rid: str) -> int:
    request = urllib.request.Request(
        f"{base}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Idempotency-Key": idem,
            "Request-Id": rid,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_command_lines_name_the_command_its_key_and_its_ids(served: Served) -> None:
    key = admin_key(served.env)
    base = served.start()
    account = {"id": "acct_logs", "kind": "connected"}
    assert post(base, key, "/v1/accounts", account, "idem-open", "req_open") == 200
    enabled = {"payouts_enabled": True, "verification_status": "verified"}
    assert post(base, key, "/v1/accounts/acct_logs", enabled, "idem-enable", "req_enable") == 200
    now = int(time.time())  # available at once
    topup = {"account": "acct_logs", "amount": 5_000, "currency": "usd", "available_on": now}
    assert post(base, key, "/v1/topups", topup, "idem-topup", "req_topup") == 200
    release = {"currency": "usd", "until": now}
    assert post(base, key, "/v1/balances/acct_logs/release", release, "idem-rel", "req_rel") == 200
    payout = {"account": "acct_logs", "amount": 1_000, "currency": "usd"}
    assert post(base, key, "/v1/payouts", payout, "idem-payout", "req_payout") == 200
    too_much = payout | {"amount": 1_000_000}
    assert post(base, key, "/v1/payouts", too_much, "idem-broke", "req_broke") == 402
    text = served.stderr.read_text()
    records = [json.loads(line) for line in served.lines()]  # every line is one JSON object
    commands = {r["request_id"]: r for r in records if r["event"] == "command"}

    opened = commands["req_open"]
    assert (opened["command"], opened["outcome"]) == ("open_account", "ok")
    assert (opened["idempotency_key"], opened["account_id"]) == ("idem-open", "acct_logs")
    assert opened["logger"] == "sluice.commands" and opened["duration_ms"] >= 0
    paid = commands["req_payout"]
    assert (paid["command"], paid["outcome"], paid["idempotency_key"]) == (
        "request_payout",
        "ok",
        "idem-payout",
    )
    assert paid["payout_id"]
    refused = commands["req_broke"]
    assert (refused["command"], refused["outcome"]) == ("request_payout", "refused")
    assert refused["error_code"] == "insufficient_funds"
    assert refused["idempotency_key"] == "idem-broke"

    access = [r for r in records if r["event"] == "http request" and r["request_id"] == "req_open"]
    assert access and access[0]["idempotency_key"] == "idem-open"
    assert key not in text and "Bearer" not in text  # the key never reaches a line
