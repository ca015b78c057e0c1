"""PostgreSQL frozen (SIGSTOP on every process of a private cluster) for longer than the
deadlines, under ``sluice serve`` with short deadlines: every request answers within its
deadline + 1 s (liveness and a bad key at once, readiness "stalled" within its timeout, the
rest 503 ``deadline_exceeded`` with Retry-After). After SIGCONT everything proceeds: the
write retried with its key is applied once, the webhook stored once, no transaction is left
open and the read models equal a replay of the events."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.bootstrap import bootstrap, read_model
from adapters.settings import Settings
from adapters.stripe import inbox
from tests.faults.support import (
    Serve,
    audit_verify,
    open_accounts,
    post,
    prepare_store,
    private_postgres,
    request,
    sluice_env,
    topups_recorded,
    wait_until,
)
from tests.integration.stripe_support import signature

pytestmark = [pytest.mark.postgres, pytest.mark.faults]

REQUEST_TIMEOUT_S = 2.0
READY_TIMEOUT_S = 1.0
# Longer than every deadline; SLUICE_FAULTS_STALL_S=30 replays the original 30 s probe.
STALL_S = float(os.environ.get("SLUICE_FAULTS_STALL_S", "8"))
SECOND_ROUND_AT_S = 4.0  # after the first round's connections were closed by their deadlines
SECRET = "whsec_stall_test"
BAD_KEY = "sk_sluice_" + "x" * 43


@dataclass
class Answer:
    round: int
    name: str
    status: int
    code: str
    latency_s: float
    retry_after: str | None


def _event() -> bytes:
    return json.dumps(
        {
            "id": f"evt_stall_{uuid.uuid4().hex[:12]}",
            "object": "event",
            "type": "charge.succeeded",
            "created": int(time.time()),
            "livemode": False,
            "data": {"object": {"id": "ch_stall", "object": "charge"}},
        }
    ).encode()


def test_a_frozen_postgres_answers_every_request_within_its_deadline(
    postgres_tools: None,
) -> None:
    with private_postgres() as pg:
        url = f"{pg.url}?schema=faults"
        key = prepare_store(url)
        env = sluice_env(
            SLUICE_DATABASE_URL=url,
            SLUICE_STRIPE_WEBHOOK_SECRET=SECRET,
            SLUICE_HTTP_REQUEST_TIMEOUT_S=str(REQUEST_TIMEOUT_S),
            SLUICE_HTTP_READY_TIMEOUT_S=str(READY_TIMEOUT_S),
            SLUICE_POSTGRES_POOL_WAIT_S='{"api": 1}',
            SLUICE_POSTGRES_STATEMENT_TIMEOUT_S='{"api": 1.5}',
            SLUICE_POSTGRES_CONNECT_TIMEOUT_S="2",
        )
        serve = Serve(env, projector=True).start()
        try:
            answers, retried = _stall(pg, serve.address, key)
        finally:
            serve.stop()
        _report(answers)
        settings = Settings(database_url=url)
        ledger = bootstrap(settings)
        try:
            recorded = topups_recorded(ledger)
            assert len(recorded) == 1 + len(retried), (len(recorded), retried)
            for write_key in retried:
                assert ledger.has_command(write_key)
        finally:
            ledger.close()
        view = read_model(settings)
        try:
            assert inbox.counts(view) == {inbox.PENDING: {"charge.succeeded": 1}}
        finally:
            view.datastore.close()
        idle = pg.sql(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE state LIKE %s AND application_name LIKE %s",
            ("idle in transaction%", "sluice-%"),
        )
        assert idle == [(0,)], idle
        audit_verify(env)


def _stall(pg: Any, address: str, key: str) -> tuple[list[Answer], list[str]]:
    """Warms the service up, freezes PostgreSQL, sends two rounds of requests, thaws it, and
    retries what was refused. Returns the answers and the retried write keys."""
    open_accounts(address, key, "acct_a")
    warm = post(address, "/v1/topups", _topup(), key, "warm-up")
    assert warm[0] == 200, warm
    event = _event()
    answers: list[Answer] = []
    lock = threading.Lock()
    writes: list[str] = []

    def send(round_no: int, name: str, method: str, path: str, **kwargs: Any) -> None:
        started = time.monotonic()
        status, headers, body = request(address, method, path, timeout=60, **kwargs)
        latency = time.monotonic() - started
        code = body["error"]["code"] if isinstance(body, dict) and "error" in body else ""
        with lock:
            answers.append(
                Answer(round_no, name, status, code, latency, headers.get("retry-after"))
            )

    def round_of(n: int) -> list[threading.Thread]:
        write_key = f"stall-write-{n}"
        writes.append(write_key)
        admin = {"Authorization": f"Bearer {key}"}
        calls: list[tuple[str, str, str, dict[str, Any]]] = [
            ("POST /v1/topups", "POST", "/v1/topups",
             {"body": _topup(), "headers": admin | {"Idempotency-Key": write_key}}),
            ("GET /v1/balances/acct_a", "GET", "/v1/balances/acct_a", {"headers": admin}),
            ("GET /v1/accounts/acct_a", "GET", "/v1/accounts/acct_a", {"headers": admin}),
            ("GET /healthz", "GET", "/healthz", {}),
            ("GET /readyz", "GET", "/readyz", {}),
            ("GET /v1/status", "GET", "/v1/status", {"headers": admin}),
            ("GET balance, bad key", "GET", "/v1/balances/acct_a",
             {"headers": {"Authorization": f"Bearer {BAD_KEY}"}}),
            ("GET balance, no key", "GET", "/v1/balances/acct_a", {}),
            ("POST /webhooks/stripe", "POST", "/webhooks/stripe",
             {"raw": event, "headers": {"Stripe-Signature": signature(event, SECRET)}}),
        ]  # fmt: skip
        threads = [
            threading.Thread(target=send, args=(n, name, method, path), kwargs=kwargs)
            for name, method, path, kwargs in calls
        ]
        for thread in threads:
            thread.start()
        return threads

    frozen_at = time.monotonic()
    pg.freeze()
    try:
        time.sleep(0.5)
        threads = round_of(1)
        time.sleep(max(0.0, SECOND_ROUND_AT_S - (time.monotonic() - frozen_at)))
        threads += round_of(2)
        for thread in threads:
            thread.join(STALL_S + 30)
        assert time.monotonic() - frozen_at < STALL_S, "the requests outlived the stall"
        time.sleep(max(0.0, STALL_S - (time.monotonic() - frozen_at)))
    finally:
        pg.thaw()
    _check_stalled(answers)

    # After SIGCONT: ready again, and everything refused goes through once.
    wait_until(lambda: request(address, "GET", "/readyz")[0] == 200, 30, "readiness")
    retried = []
    for write_key in writes:
        status, _, body = post(address, "/v1/topups", _topup(), key, write_key)
        assert status == 200, body
        retried.append(write_key)
        again = post(address, "/v1/topups", _topup(), key, write_key)
        assert again[0] == 200 and again[1].get("idempotent-replayed") == "true"
    status, _, body = request(
        address, "POST", "/webhooks/stripe", raw=event,
        headers={"Stripe-Signature": signature(event, SECRET)},
    )  # fmt: skip
    assert status == 200 and body["received"] is True, body
    status, _, body = request(
        address, "GET", "/v1/balances/acct_a", headers={"Authorization": f"Bearer {key}"}
    )
    assert status == 200, body
    return answers, retried


def _topup() -> dict[str, Any]:
    return {"account": "acct_a", "amount": 500, "currency": "usd"}


def _check_stalled(answers: list[Answer]) -> None:
    assert len(answers) == 18, answers
    for a in answers:
        if a.name == "GET /healthz":
            assert (a.status, a.latency_s < 1.0) == (200, True), a
        elif a.name == "GET balance, bad key":
            assert (a.status, a.code, a.latency_s < 1.0) == (401, "api_key_invalid", True), a
        elif a.name == "GET balance, no key":
            assert (a.status, a.latency_s < 1.0) == (401, True), a
        elif a.name == "GET /readyz":
            assert (a.status, a.code) == (503, "store_stalled"), a
            assert a.latency_s <= READY_TIMEOUT_S + 1.0, a
            assert a.retry_after, a
        else:
            assert a.status == 503 and a.code in ("deadline_exceeded", "store_unavailable"), a
            assert a.latency_s <= REQUEST_TIMEOUT_S + 1.0, a
            assert a.retry_after, a


def _report(answers: list[Answer]) -> None:
    lines = [f"\n[faults] PostgreSQL frozen {STALL_S:g} s; deadline {REQUEST_TIMEOUT_S:g} s"]
    for a in sorted(answers, key=lambda a: (a.round, a.name)):
        lines.append(
            f"[faults] round {a.round}  {a.name:<26} {a.status} {a.code or '-':<18}"
            f" {a.latency_s:6.3f} s  Retry-After: {a.retry_after or '-'}"
        )
    print("\n".join(lines))
