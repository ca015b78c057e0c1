"""A command line belongs to the request that sent the command: group commit records other
requests' commands in one thread's batch, and their lines must not carry that thread's
request id or idempotency key."""

from __future__ import annotations

import io
import json

import structlog

from adapters import logs
from ledger.engine import CommandResult
from ledger.errors import InsufficientFundsError


def _line(result: CommandResult | None, **bound: str) -> dict[str, object]:
    stream = io.StringIO()
    logs.configure("json", "INFO", process="test", stream=stream)
    tokens = structlog.contextvars.bind_contextvars(**bound)
    try:
        logs.log_command("request_payout", result, "ok", 0.004)
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
    parsed: dict[str, object] = json.loads(stream.getvalue().strip().splitlines()[-1])
    return parsed


def test_a_request_s_own_command_carries_its_request_id_and_ids() -> None:
    own = CommandResult("request_payout", "k1", ids={"payout": "sl_po_1", "account": "acct_a"})
    line = _line(own, request_id="req_1", idempotency_key="k1")
    assert line["request_id"] == "req_1" and line["idempotency_key"] == "k1"
    assert (line["payout_id"], line["account_id"], line["command"]) == (
        "sl_po_1",
        "acct_a",
        "request_payout",
    )


def test_a_sub_key_of_the_request_is_its_own() -> None:
    line = _line(CommandResult("update_account", "k1/update"), request_id="r", idempotency_key="k1")
    assert line["request_id"] == "r" and line["idempotency_key"] == "k1/update"


def test_another_request_s_command_in_the_same_batch_has_no_request_id() -> None:
    theirs = CommandResult("request_payout", "k2", ids={"payout": "sl_po_2"})
    line = _line(theirs, request_id="req_1", idempotency_key="k1")
    assert "request_id" not in line and line["idempotency_key"] == "k2"


def test_a_failed_batch_names_no_request_or_key() -> None:
    line = _line(None, request_id="req_1", idempotency_key="k1")
    assert "request_id" not in line and "idempotency_key" not in line


def test_a_refusal_names_its_code() -> None:
    refused = CommandResult("request_payout", "k3", error=InsufficientFundsError("short"))
    line = _line(refused)
    assert line["error_code"] == "insufficient_funds" and line["idempotency_key"] == "k3"
