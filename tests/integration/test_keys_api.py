"""The admin routes for API keys through the real HTTP server on PostgreSQL: a key's secret is
in its creation's answer and nowhere else, a revoked key gets 401 on the very next request to
the server that revoked it and within the key refresh on another, a rotation's old key works
through its grace, and an Idempotency-Key never makes two keys."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from adapters.bootstrap import init_database
from adapters.http.app import create_app
from adapters.http.models import ApiKey, ApiKeyCreated, ApiKeyList
from adapters.settings import Settings
from tests.integration.http_support import Client, new_key, running
from tests.support import drop_postgres_schema

pytestmark = pytest.mark.postgres

REFRESH_S = 0.5  # the other server's key refresh: a revoked key stops there within it
STOPS_WITHIN_S = REFRESH_S + 2.0  # plus a reload's own time on a loaded machine
POLL_S = 0.05
GRACE_S = 4


@dataclass
class Servers:
    settings: Settings
    one: str  # the server the admin talks to
    other: str  # a second server on the same store
    admin: Client


@pytest.fixture(scope="module")
def servers(postgres_url: str) -> Iterator[Servers]:
    name = f"keysapi_{uuid.uuid4().hex[:12]}"
    settings = Settings(database_url=f"{postgres_url}?schema={name}", http_key_refresh_s=REFRESH_S)
    try:
        init_database(settings)
        with (
            running(create_app(settings, run_projector=False)) as one,
            running(create_app(settings, run_projector=False)) as other,
        ):
            admin = Client(one, new_key(settings, "admin"))
            yield Servers(settings, one, other, admin)
    finally:
        drop_postgres_schema(postgres_url, name)


def _works(address: str, key: str) -> int:
    return Client(address, key).get("/v1/status").status


def _wait_status(address: str, key: str, want: int, within_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        if _works(address, key) == want:
            return time.monotonic() - started
        time.sleep(POLL_S)
    raise AssertionError(f"the key did not answer {want} within {within_s}s")


def test_a_created_key_is_shown_once_and_never_listed(servers: Servers) -> None:
    created = servers.admin.post("/v1/keys", {"role": "finance", "label": "books"})
    assert created.status == 200, created.text
    body = ApiKeyCreated.model_validate(created.json())
    assert body.secret.startswith("sk_sluice_") and body.state == "active"
    assert (body.role, body.label, body.replaces) == ("finance", "books", None)
    assert _works(servers.one, body.secret) == 200  # works at once, on both servers
    assert _works(servers.other, body.secret) == 200
    listed = servers.admin.get("/v1/keys")
    assert listed.status == 200
    page = ApiKeyList.model_validate(listed.json())
    assert body.id in {k.id for k in page.data}
    assert body.secret not in listed.text and "secret" not in listed.text
    assert "key_hash" not in listed.text


def test_a_revoked_key_fails_at_once(servers: Servers) -> None:
    created = servers.admin.post("/v1/keys", {"role": "auditor"}).json()
    secret = created["secret"]
    assert _works(servers.other, secret) == 200  # the other server has it cached
    revoked = servers.admin.post(f"/v1/keys/{created['id']}/revoke")
    assert revoked.status == 200, revoked.text
    info = ApiKey.model_validate(revoked.json())
    assert info.state == "revoked" and info.revoked is not None
    # The server that revoked it reloaded before answering: the very next request is refused.
    refused = Client(servers.one, secret).get("/v1/status")
    assert refused.status == 401 and refused.error["code"] == "api_key_invalid"
    # Another server refuses it within its refresh.
    assert _wait_status(servers.other, secret, 401, STOPS_WITHIN_S) <= STOPS_WITHIN_S
    again = servers.admin.post(f"/v1/keys/{created['id']}/revoke")  # idempotent
    assert again.status == 200 and again.json()["revoked"] == info.revoked


def test_a_rotated_key_works_through_its_grace_then_stops(servers: Servers) -> None:
    old = servers.admin.post("/v1/keys", {"role": "finance", "label": "rotating"}).json()
    rotated = servers.admin.post(f"/v1/keys/{old['id']}/rotate", {"grace": GRACE_S})
    assert rotated.status == 200, rotated.text
    new = ApiKeyCreated.model_validate(rotated.json())
    assert (new.replaces, new.role, new.label) == (old["id"], "finance", "rotating")
    assert _works(servers.one, new.secret) == 200
    assert _works(servers.one, old["secret"]) == 200  # in its grace
    listed = {k["id"]: k for k in servers.admin.get("/v1/keys").json()["data"]}
    assert listed[old["id"]]["state"] == "grace"
    assert listed[old["id"]]["replaced_by"] == new.id
    _wait_status(servers.one, old["secret"], 401, GRACE_S + STOPS_WITHIN_S)
    assert _works(servers.one, new.secret) == 200
    twice = servers.admin.post(f"/v1/keys/{old['id']}/rotate", {"grace": 0})
    assert twice.status == 409 and twice.error["code"] == "api_key_not_rotatable"


def test_one_idempotency_key_never_makes_two_keys(servers: Servers) -> None:
    idem = f"create-{uuid.uuid4().hex}"
    first = servers.admin.post("/v1/keys", {"role": "auditor"}, idempotency_key=idem)
    assert first.status == 200, first.text
    count = len(servers.admin.get("/v1/keys").json()["data"])
    again = servers.admin.post("/v1/keys", {"role": "auditor"}, idempotency_key=idem)
    assert again.status == 409 and again.error["code"] == "idempotency_conflict"
    assert first.json()["id"] in again.error["message"]
    assert first.json()["secret"] not in again.text
    assert len(servers.admin.get("/v1/keys").json()["data"]) == count


def test_unknown_keys_and_bad_roles_are_refused_plainly(servers: Servers) -> None:
    missing = servers.admin.post("/v1/keys/key_0000000000000000/revoke")
    assert missing.status == 404 and missing.error["code"] == "resource_missing"
    missing = servers.admin.post("/v1/keys/key_0000000000000000/rotate", {"grace": 0})
    assert missing.status == 404
    bad = servers.admin.post("/v1/keys", {"role": "superuser"})
    assert bad.status == 400 and bad.error["param"] == "role"
    long_grace = servers.admin.post("/v1/keys/key_0000000000000000/rotate", {"grace": 10**9})
    assert long_grace.status == 400


def test_only_an_admin_key_manages_keys(servers: Servers) -> None:
    finance = Client(servers.one, new_key(servers.settings, "finance"))
    assert finance.get("/v1/keys").status == 403
    assert finance.post("/v1/keys", {"role": "admin"}).status == 403
