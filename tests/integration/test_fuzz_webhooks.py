"""``POST /webhooks/stripe`` under fuzzing, on a real uvicorn server and PostgreSQL: hypothesis
signs random and malformed event bodies (and some with stale or future timestamps) and posts
them. Never a 5xx; a refused request stores nothing; a validly signed event is always stored,
folded later if Sluice can parse it, else kept as ``unparseable`` with its reason (and answered
200, so Stripe stops retrying); the inbox never hands an unparseable event to the folder.

Also the probes this route once answered 500: a chunked body over the size limit, and seven
signed but malformed events."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.http.app import create_app
from adapters.stripe import inbox
from tests.integration.http_support import running
from tests.integration.stripe_support import (
    Store,
    fresh_settings,
    inbox_rows,
    inbox_total,
    open_store,
    post_webhook,
    signature,
)

pytestmark = [pytest.mark.postgres, pytest.mark.fuzz]

SECRET = "whsec_fuzz"
TOLERANCE_S = 300
EXAMPLES = 300  # hypothesis examples (each a signed HTTP POST); ~8 s here


@dataclass
class Site:
    address: str
    store: Store


@pytest.fixture(scope="module")
def site(postgres_url: str) -> Iterator[Site]:
    with (
        fresh_settings(
            postgres_url, stripe_webhook_secret=SECRET, stripe_webhook_tolerance_s=TOLERANCE_S
        ) as config,
        open_store(config) as store,
    ):
        app = create_app(config, ledger=store.ledger, view=store.view, run_projector=False)
        with running(app) as address:
            yield Site(address, store)


def _row(site: Site, event_id: str) -> dict[str, Any] | None:
    return inbox_rows(site.store.view).get(event_id)


# Strategies -------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
BAD_TEXT = st.sampled_from(["", "a\x00b", "x" * 300, "with space", "é", "\n"])
CREATED = st.integers(min_value=0, max_value=4_000_000_000) | st.sampled_from(
    [-1, 10**20, "1700000000", 1.5, True, None]
)
HEX = st.uuids().map(lambda u: u.hex)
ACCOUNT = st.none() | st.just("acct_fuzz") | BAD_TEXT | st.just({"id": "acct_1"}) | st.just([1])


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": draw(
            HEX.map(lambda h: f"evt_{h[:16]}")
            | HEX.map(lambda h: f"evt_\x00{h[:8]}")
            | st.just("evt_" + "y" * 300)
            | HEX.map(lambda h: f"ch_{h[:8]}")
            | st.integers()
        ),
        "object": "event",
        "type": draw(st.sampled_from(["charge.succeeded", "payout.paid", "x.y"]) | BAD_TEXT),
        "created": draw(CREATED),
        "livemode": draw(st.just(False) | st.just("no") | st.none()),
        "data": draw(
            st.just({"object": {"id": "ch_fuzz", "object": "charge"}}) | JSON | st.just([])
        ),
    }
    if draw(st.booleans()):
        event["account"] = draw(ACCOUNT)
    for name in draw(st.lists(st.sampled_from(sorted(event)), max_size=2)):
        event.pop(name, None)
    if draw(st.booleans()):
        event.update(draw(st.dictionaries(st.text(max_size=6), JSON, max_size=3)))
    return event


def _deep(depth: int) -> bytes:
    return (
        f'{{"id": "evt_deep_{uuid.uuid4().hex[:8]}", "object": "event", "type": "x.y",'
        f' "created": 1, "data": {{"object": ' + "[" * depth + "]" * depth + "}}"
    ).encode()


BODIES = (
    events().map(lambda e: json.dumps(e).encode())
    | st.binary(max_size=64)
    | JSON.map(lambda v: json.dumps(v).encode())
    | st.sampled_from([_deep(40), _deep(5_000), b'{"id": "evt_x"', b"\xff\xfe{}"])
)
WHEN = st.sampled_from(["now", "now", "now", "stale", "future"])


# The fuzz test ------------------------------------------------------------------------------------


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=BODIES, when=WHEN)
def test_signed_random_bodies_never_5xx_and_are_stored_or_refused(
    site: Site, body: bytes, when: str
) -> None:
    now = int(time.time())
    at = {"now": now, "stale": now - TOLERANCE_S - 60, "future": now + 3600}[when]
    before = inbox_total(site.store.view)
    reply = post_webhook(site.address, body, signature(body, SECRET, at))
    after = inbox_total(site.store.view)
    assert reply.status < 500, (reply.status, reply.body, body[:200])
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:  # not UTF-8: no Stripe event, whatever its signature
        assert reply.status == 400 and reply.body["error"]["code"] == "payload_invalid"
        assert after == before
        return
    if when != "now":
        assert reply.status == 400 and after == before, reply.body
        code = reply.body["error"]["code"]
        assert code == ("signature_stale" if when == "stale" else "signature_future"), code
        return
    if reply.status == 400:
        assert reply.body["error"]["code"] == "payload_invalid", reply.body
        assert after == before, "a refused body was stored"
        return
    assert reply.status == 200, reply.body
    row = _row(site, reply.body["id"])
    assert row is not None, "a 200 without a stored event: dropped silently"
    if reply.body["duplicate"]:
        pass  # an event id seen before: the first delivery's row stands
    elif "reason" in reply.body:
        assert row["status"] == inbox.UNPARSEABLE and row["last_error"], row
    else:
        assert row["status"] == inbox.PENDING, row
    assert after == before + (0 if reply.body["duplicate"] else 1)
    unparseable = {
        r["event_id"] for r in inbox_rows(site.store.view).values() if r["status"] == "unparseable"
    }
    assert not unparseable & {e.event_id for e in inbox.due(site.store.view, 10_000)}


# The probes that once answered 500 --------------------------------------------------------------


def _event(**fields: Any) -> dict[str, Any]:
    return {
        "id": f"evt_probe_{uuid.uuid4().hex[:12]}",
        "object": "event",
        "type": "charge.succeeded",
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": {"id": "ch_probe", "object": "charge"}},
        **fields,
    }


PROBES = {
    "deep_nesting": _deep(100_000),
    "created_not_an_integer": json.dumps(_event(created="yesterday")).encode(),
    "created_out_of_range": json.dumps(_event(created=10**30)).encode(),
    "account_is_an_object": json.dumps(_event(account={"id": "acct_1"})).encode(),
    "nul_in_type": json.dumps(_event(type="charge.\x00succeeded")).encode(),
    "nul_in_id": json.dumps(_event(id=f"evt_\x00{uuid.uuid4().hex[:8]}")).encode(),
    "data_not_an_object": json.dumps(_event(data="nothing")).encode(),
}


@pytest.mark.parametrize("probe", list(PROBES))
def test_a_signed_malformed_event_is_stored_unparseable_and_answered_200(
    site: Site, probe: str
) -> None:
    body = PROBES[probe]
    before = inbox_total(site.store.view)
    reply = post_webhook(site.address, body, signature(body, SECRET))
    assert reply.status == 200, reply.body
    assert reply.body["status"] == "unparseable" and reply.body["reason"], reply.body
    row = _row(site, reply.body["id"])
    assert row is not None and row["status"] == inbox.UNPARSEABLE and row["last_error"]
    assert inbox_total(site.store.view) == before + 1
    again = post_webhook(site.address, body, signature(body, SECRET))  # Stripe's retry
    assert again.status == 200 and again.body["duplicate"] is True
    assert inbox_total(site.store.view) == before + 1
    assert inbox.counts(site.store.view)[inbox.UNPARSEABLE]  # counted by status


def test_a_chunked_body_over_the_limit_is_a_413_without_a_signature(site: Site) -> None:
    host, port = site.address.rsplit(":", 1)
    chunk = b"x" * 65_536
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(
            "POST",
            "/webhooks/stripe",
            body=iter([chunk] * 17),  # 1.1 MB, no Content-Length: Transfer-Encoding: chunked
            headers={"Stripe-Signature": "t=1,v1=00", "Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 413, body
    assert body["error"]["code"] == "body_too_large"


def test_a_signature_from_the_future_is_refused(site: Site) -> None:
    body = json.dumps(_event()).encode()
    before = inbox_total(site.store.view)
    reply = post_webhook(site.address, body, signature(body, SECRET, int(time.time()) + 3600))
    assert reply.status == 400 and reply.body["error"]["code"] == "signature_future"
    assert inbox_total(site.store.view) == before
