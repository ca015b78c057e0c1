"""``WebhookIngest``, the lean path that answers ``POST /webhooks/stripe`` ahead of the generic
routing: it serves those requests itself, and answers every delivery, good or bad, exactly as
the FastAPI route behind the generic middlewares does (status, error code and message, the
request id, the metrics label)."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from adapters.bootstrap import init_database
from adapters.http.app import BODY_SIZE_MAX, create_app
from adapters.http.webhooks import WebhookIngest
from adapters.settings import Settings
from tests.integration.http_support import running
from tests.integration.stripe_support import signature

SECRET = "whsec_ingest_test"


def app_at(tmp_path: Path, name: str, secret: str = SECRET) -> FastAPI:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / name}.db", stripe_webhook_secret=secret
    )
    init_database(settings)
    return create_app(settings, run_projector=False)


def generic(app: FastAPI) -> FastAPI:
    """The same app with the webhook left to the generic middlewares and FastAPI's route."""
    app.user_middleware = [m for m in app.user_middleware if m.cls is not WebhookIngest]
    return app


@pytest.fixture
def addresses(tmp_path: Path) -> Iterator[dict[str, str]]:
    with (
        running(app_at(tmp_path, "lean")) as lean,
        running(generic(app_at(tmp_path, "generic"))) as slow,
        running(app_at(tmp_path, "nosecret", secret="")) as unset,
    ):
        yield {"lean": lean, "generic": slow, "unset": unset}


def post(
    address: str, body: Any, headers: dict[str, str], path: str = "/webhooks/stripe"
) -> tuple[int, dict[str, str], dict[str, Any]]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        chunked = not isinstance(body, bytes)
        conn.request("POST", path, body=body, headers=headers, encode_chunked=chunked)
        response = conn.getresponse()
        text = response.read()
        found = {k.lower(): v for k, v in response.getheaders()}
        return response.status, found, json.loads(text) if text else {}
    finally:
        conn.close()


def event(n: int) -> bytes:
    return json.dumps(
        {"id": f"evt_ingest{n}", "object": "event", "type": "payout.paid",
         "created": int(time.time()), "livemode": False,
         "data": {"object": {"id": f"po_{n}", "object": "payout"}}}
    ).encode()  # fmt: skip


def cases() -> dict[str, tuple[Any, dict[str, str]]]:
    good = event(1)
    signed = {"Stripe-Signature": signature(good, SECRET), "Content-Type": "application/json"}
    not_event = b'{"hello": 1}'
    latin = b"\xff\xfe not utf-8"
    big = b"x" * (BODY_SIZE_MAX + 1)
    return {
        "stored": (good, signed),
        "duplicate": (good, signed),
        "unparseable stored": (
            b'{"id": "evt_odd1", "type": 5}',
            {"Stripe-Signature": signature(b'{"id": "evt_odd1", "type": 5}', SECRET)},
        ),
        "no signature": (good, {}),
        "forged": (good, {"Stripe-Signature": signature(good, "whsec_other")}),
        "stale": (good, {"Stripe-Signature": signature(good, SECRET, int(time.time()) - 3600)}),
        "future": (good, {"Stripe-Signature": signature(good, SECRET, int(time.time()) + 3600)}),
        "garbled header": (good, {"Stripe-Signature": "nonsense"}),
        "not an event": (not_event, {"Stripe-Signature": signature(not_event, SECRET)}),
        "not utf-8": (latin, {"Stripe-Signature": "t=1,v1=00"}),
        "declared too large": (big, {"Stripe-Signature": "t=1,v1=00"}),
        "streamed too large": (iter([big[:500_000], big[500_000:]]), {"Stripe-Signature": "t=1"}),
    }


def test_every_delivery_is_answered_as_the_generic_route_answers_it(
    addresses: dict[str, str],
) -> None:
    answers: dict[str, dict[str, tuple[int, Any]]] = {"lean": {}, "generic": {}}
    for which, answered in answers.items():
        for name, (body, headers) in cases().items():
            status, found, reply = post(addresses[which], body, headers)
            assert found["request-id"].startswith("req_"), (which, name)
            if "error" in reply:
                assert status // 100 == 4, (which, name, reply)
                assert set(reply["error"]) == {"type", "code", "message", "param"}
            answered[name] = (status, reply)
    assert answers["lean"] == answers["generic"]
    codes = {name: a[1].get("error", {}).get("code") for name, a in answers["lean"].items()}
    assert codes == {
        "stored": None, "duplicate": None, "unparseable stored": None,
        "no signature": "signature_missing", "forged": "signature_invalid",
        "stale": "signature_stale", "future": "signature_future",
        "garbled header": "signature_invalid", "not an event": "payload_invalid",
        "not utf-8": "payload_invalid", "declared too large": "body_too_large",
        "streamed too large": "body_too_large",
    }  # fmt: skip
    assert answers["lean"]["stored"][1]["duplicate"] is False
    assert answers["lean"]["duplicate"][1]["duplicate"] is True


def test_other_methods_paths_and_a_missing_secret_are_answered_alike(
    addresses: dict[str, str],
) -> None:
    good = event(2)
    status, _, reply = post(addresses["unset"], good, {"Stripe-Signature": "t=1,v1=00"})
    assert (status, reply["error"]["code"]) == (503, "webhook_secret_missing")
    for which in ("lean", "generic"):
        host, port = addresses[which].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("GET", "/webhooks/stripe")
        assert conn.getresponse().status == 405
        conn.close()


def test_the_lean_path_answers_without_the_generic_chain(tmp_path: Path) -> None:
    """POST /webhooks/stripe never reaches the middlewares and routes inside WebhookIngest;
    anything else goes on to them. Its answers carry the route's metrics label."""
    import asyncio

    app = app_at(tmp_path, "direct")
    reached: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    lean = WebhookIngest(inner, fastapi_app=app, max_bytes=BODY_SIZE_MAX)

    async def call(method: str, path: str) -> tuple[int, dict[str, Any]]:
        scope = {
            "type": "http", "method": method, "path": path, "root_path": "", "app": app,
            "headers": [(b"content-type", b"application/json")], "query_string": b"",
        }  # fmt: skip
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await lean(scope, receive, send)
        return int(sent[0]["status"]), scope

    status, scope = asyncio.run(call("POST", "/webhooks/stripe"))
    assert status == 400 and reached == []  # no signature: answered by the lean path
    assert scope["route"].path == "/webhooks/stripe"
    assert asyncio.run(call("GET", "/webhooks/stripe"))[0] == 204
    assert asyncio.run(call("POST", "/v1/payments"))[0] == 204
    assert reached == ["/webhooks/stripe", "/v1/payments"]
