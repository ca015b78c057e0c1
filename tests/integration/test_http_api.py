"""The HTTP API end to end: a real uvicorn server on PostgreSQL (and a smoke run on SQLite).

One module-scoped server and "world" (every POST route used once, with fixed effective times)
serve the tests; tests that write more read the log head afterwards rather than assuming order.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from adapters.bootstrap import init_database
from adapters.http.app import create_app
from adapters.http.auth import POLICY
from adapters.settings import Settings
from ledger.application import Ledger
from tests.integration.http_support import (
    AUTO,
    Client,
    Reply,
    csv_equals_json,
    new_key,
    running,
)

pytestmark = pytest.mark.postgres

T0 = 1_767_603_600  # 2026-01-05T09:00:00Z, a Monday
DAY = 86_400
ROLES = ("admin", "finance", "auditor", "own", "other", "none", "bad")
BAD_KEY = "sk_sluice_" + "x" * 43


# Fixtures ------------------------------------------------------------------------------------


def _drop_schema(base_url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(base_url.split("?", 1)[0], autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@dataclass
class Env:
    address: str
    settings: Settings
    ledger: Ledger
    clients: dict[str, Client]

    @property
    def admin(self) -> Client:
        return self.clients["admin"]

    def head(self) -> int:
        return int(self.ledger.recorder.max_notification_id() or 0)

    def fresh(self) -> dict[str, str]:
        """Headers for a GET that must see every write so far."""
        return {"Sluice-Min-Position": str(self.head())}


@pytest.fixture(scope="module")
def env(postgres_url: str) -> Iterator[Env]:
    schema = f"http_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in postgres_url else "?"
    settings = Settings(
        database_url=f"{postgres_url}{separator}schema={schema}",
        stripe_webhook_secret="whsec_matrix_test",
    )
    try:
        init_database(settings)
        app = create_app(settings)
        with running(app) as address:
            keys: dict[str, str | None] = {
                "admin": new_key(settings, "admin"),
                "finance": new_key(settings, "finance"),
                "auditor": new_key(settings, "auditor"),
                "own": new_key(settings, "account:acct_a"),
                "other": new_key(settings, "account:acct_b"),
                "none": None,
                "bad": BAD_KEY,
            }
            clients = {role: Client(address, key) for role, key in keys.items()}
            yield Env(address, settings, app.state.sluice.ledger, clients)
    finally:
        _drop_schema(postgres_url, schema)


@dataclass
class Posted:
    route: str
    path: str
    body: Any
    key: str
    reply: Reply

    @property
    def json(self) -> dict[str, Any]:
        return dict(self.reply.json())


@dataclass
class World:
    posts: list[Posted] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)
    now: int = 0

    def first(self, route: str) -> Posted:
        return next(p for p in self.posts if p.route == route)


@pytest.fixture(scope="module")
def world(env: Env) -> World:
    w = World(now=int(time.time()))

    def post(route: str, path: str, body: Any) -> dict[str, Any]:
        key = f"world-{len(w.posts)}-{route}"
        reply = env.admin.post(path, body, idempotency_key=key)
        assert reply.status == 200, (route, body, reply.text)
        assert reply.headers["sluice-position"] == str(reply.json()["position"])
        assert "idempotent-replayed" not in reply.headers
        w.posts.append(Posted(route, path, body, key, reply))
        return dict(reply.json())

    post("create_account", "/v1/accounts", {"id": "acct_platform", "kind": "platform"})
    for account in ("acct_a", "acct_b", "acct_c"):
        post("create_account", "/v1/accounts", {"id": account, "country": "US"})
    post(
        "update_account",
        "/v1/accounts/acct_a",
        {
            "verification_status": "verified",
            "capabilities": {"card_payments": "active", "transfers": "active"},
            "charges_enabled": True,
            "payouts_enabled": True,
            "settings": {
                "payouts": {
                    "schedule": {
                        "interval": "weekly",
                        "weekly_anchor": "friday",
                        "delay_days": 2,
                        "minimum_amount": {"usd": 500},
                    }
                }
            },
        },
    )
    post(
        "update_account",
        "/v1/accounts/acct_b",
        {"charges_enabled": True, "payouts_enabled": True},
    )
    post("update_account", "/v1/accounts/acct_c", {"closed": True})
    settles = T0 + 2 * DAY
    w.ids["dest"] = post(
        "create_payment",
        "/v1/payments",
        {
            "charge_type": "destination",
            "amount": 10_000,
            "currency": "usd",
            "stripe_fee": 320,
            "application_fee_amount": 500,
            "account": "acct_a",
            "created": T0,
            "available_on": settles,
        },
    )["id"]
    w.ids["direct"] = post(
        "create_payment",
        "/v1/payments",
        {
            "charge_type": "direct",
            "amount": 5_000,
            "currency": "usd",
            "stripe_fee": 175,
            "application_fee_amount": 200,
            "account": "acct_b",
            "created": T0 + 60,
            "available_on": settles,
        },
    )["id"]
    split = post(
        "create_payment",
        "/v1/payments",
        {
            "charge_type": "separate",
            "amount": 20_000,
            "currency": "usd",
            "stripe_fee": 610,
            "split": [
                {"account": "acct_a", "share_bps": 5_000},
                {"account": "acct_b", "fixed_amount": 3_000},
            ],
            "created": T0 + 120,
            "available_on": settles,
        },
    )
    assert len(split["transfers"]) == 2
    w.ids["sep"] = post(
        "create_payment",
        "/v1/payments",
        {
            "charge_type": "separate",
            "amount": 8_000,
            "currency": "usd",
            "stripe_fee": 262,
            "transfer_group": "order_42",
            "created": T0 + 180,
            "available_on": settles,
        },
    )["id"]
    for day in range(3):  # more history for paging and statements
        post(
            "create_payment",
            "/v1/payments",
            {
                "charge_type": "destination",
                "amount": 1_000 + day,
                "currency": "usd",
                "stripe_fee": 59,
                "application_fee_amount": 100,
                "account": "acct_a",
                "created": T0 + (day + 1) * DAY,
                "available_on": T0 + (day + 3) * DAY,
            },
        )
    w.ids["topup"] = post(
        "create_topup",
        "/v1/topups",
        {"account": "acct_a", "amount": 5_000, "currency": "usd", "available_on": T0 + 5 * DAY},
    )["id"]
    for account in ("acct_platform", "acct_a", "acct_b"):
        post(
            "release_balance",
            f"/v1/balances/{account}/release",
            {"currency": "usd", "until": w.now},
        )
    w.ids["sourced"] = post(
        "create_transfer",
        "/v1/transfers",
        {
            "destination": "acct_b",
            "amount": 1_000,
            "currency": "usd",
            "source_transaction": w.ids["sep"],
        },
    )["id"]
    w.ids["unsourced"] = post(
        "create_transfer",
        "/v1/transfers",
        {"destination": "acct_a", "amount": 700, "currency": "usd", "transfer_group": "g1"},
    )["id"]
    dest_transfer = w.first("create_payment").json["transfer"]
    w.ids["dest_transfer"] = dest_transfer
    post("create_transfer_reversal", f"/v1/transfers/{dest_transfer}/reversals", {"amount": 1_000})
    post(
        "create_refund",
        "/v1/refunds",
        {
            "payment": w.ids["dest"],
            "amount": 2_000,
            "reverse_transfer": True,
            "refund_application_fee": True,
        },
    )
    post("create_refund", "/v1/refunds", {"payment": w.ids["sep"], "amount": 500})
    post("create_dispute", "/v1/disputes", {"payment": w.ids["direct"], "fee": 1_500})
    post("close_dispute", f"/v1/disputes/{w.ids['direct']}/close", {"won": True})
    payouts = {}
    for name, account, amount in (
        ("paid", "acct_a", 1_000),
        ("failed", "acct_a", 500),
        ("canceled", "acct_a", 200),
        ("pending", "acct_b", 300),
    ):
        payouts[name] = post(
            "create_payout",
            "/v1/payouts",
            {"account": account, "amount": amount, "currency": "usd"},
        )["id"]
        w.ids[f"payout_{name}"] = payouts[name]
    for payout, status in (
        ("paid", {"status": "in_transit"}),
        ("paid", {"status": "paid"}),
        ("failed", {"status": "failed", "failure_code": "account_closed"}),
        ("canceled", {"status": "canceled"}),
    ):
        post("update_payout_status", f"/v1/payouts/{payouts[payout]}/status", status)
    return w


# Happy paths ---------------------------------------------------------------------------------


def test_every_post_route_was_exercised_and_answered_with_ids(env: Env, world: World) -> None:
    posted = {p.route for p in world.posts}
    # The API key routes are admin-only too, but write no events (test_keys_api.py).
    keys = {"list_api_keys", "create_api_key", "revoke_api_key", "rotate_api_key"}
    writes = {name for name, access in POLICY.items() if access.roles == {"admin"}} - keys
    assert writes == posted
    positions = [p.json["position"] for p in world.posts]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    for p in world.posts:
        body = p.json
        assert body["livemode"] is False and isinstance(body["position"], int), body
        if p.route != "release_balance":
            assert isinstance(body["id"], str) and body["id"], body
    dest = world.first("create_payment").json
    # Sluice's own ids, never mistaken for Stripe's (ledger.ids: the sl_ brand).
    assert dest["id"].startswith("sl_py_") and dest["transfer"].startswith("sl_tr_")
    assert dest["application_fee"].startswith("sl_fee_")
    assert (dest["created"], dest["available_on"]) == (T0, T0 + 2 * DAY)
    refund = world.first("create_refund").json
    assert refund["id"].startswith("sl_re_") and refund["amount"] == 2_000
    assert refund["transfer_reversal"].startswith("sl_trr_")
    dispute = world.first("create_dispute").json
    assert (dispute["amount"], dispute["fee"]) == (5_000, 1_500)  # amount defaults to all of it
    transfer = world.first("create_transfer").json
    assert transfer["source_transaction"] == world.ids["sep"]
    assert transfer["transfer_group"] == "order_42"  # inherited from its charge
    release = world.first("release_balance").json
    assert release["object"] == "balance_release" and release["id"].startswith("sl_txn_")


def test_retrieve_account_reflects_updates(env: Env, world: World) -> None:
    reply = env.admin.get("/v1/accounts/acct_a")
    assert reply.status == 200, reply.text
    account = reply.json()
    assert account["object"] == "account" and account["kind"] == "connected"
    assert account["verification_status"] == "verified"
    assert account["capabilities"] == {"card_payments": "active", "transfers": "active"}
    assert account["charges_enabled"] is True and account["payouts_enabled"] is True
    assert account["settings"]["payouts"]["schedule"] == {
        "interval": "weekly",
        "delay_days": 2,
        "weekly_anchor": "friday",
        "monthly_anchor": None,
        "minimum_amount": {"usd": 500},
    }
    assert account["closed"] is False
    assert env.admin.get("/v1/accounts/acct_c").json()["closed"] is True
    missing = env.admin.get("/v1/accounts/acct_nope")
    assert missing.status == 404 and missing.error["code"] == "resource_missing"


def test_balance_statement_and_audit_agree(env: Env, world: World) -> None:
    fresh = env.fresh()
    balance = env.admin.get("/v1/balances/acct_a", headers=fresh)
    assert balance.status == 200, balance.text
    assert int(balance.headers["sluice-position"]) >= int(fresh["Sluice-Min-Position"])
    body = balance.json()
    assert body["object"] == "balance" and body["account"] == "acct_a"
    usd = {
        kind: next(x["amount"] for x in body[kind] if x["currency"] == "usd")
        for kind in ("available", "pending", "reserved")
    }
    assert usd["available"] > 0
    ledger_balance = env.ledger.get_balance("acct_a", "usd")
    assert ledger_balance is not None
    assert (usd["pending"], usd["available"]) == (
        ledger_balance.pending_minor,
        ledger_balance.available_minor,
    )
    statement = env.admin.get(
        f"/v1/accounts/acct_a/statement?currency=usd&from={T0 - DAY}&to={world.now + DAY}",
        headers=fresh,
    )
    assert statement.status == 200, statement.text
    st = statement.json()
    assert st["opening_balance"] == 0 and st["movements"]
    assert st["closing_balance"] == sum(m["net"] for m in st["movements"])
    assert st["closing_balance"] == usd["pending"] + usd["available"] + usd["reserved"]
    audit = env.admin.get("/v1/audit/balances/acct_a")
    assert audit.status == 200, audit.text
    replayed = audit.json()
    assert int(audit.headers["sluice-position"]) == replayed["position"] >= env.head()
    usd_books = next(b for b in replayed["balances"] if b["currency"] == "usd")
    assert (usd_books["pending"], usd_books["available"]) == (usd["pending"], usd["available"])
    # An hour in, only the destination charge (10_000 - 500 fee) and half the split had landed.
    early = env.admin.get(f"/v1/audit/balances/acct_a?as_of={T0 + 3600}").json()
    assert next(b for b in early["balances"] if b["currency"] == "usd")["pending"] == 9_500 + 8_500
    # Nothing had been recorded before the world was built.
    before = env.admin.get(f"/v1/audit/balances/acct_a?recorded_as_of={T0}").json()
    assert before["balances"] == [] and before["movements"] == []


def test_lists_revenue_and_audit_events(env: Env, world: World) -> None:
    fresh = env.fresh()
    bts = env.admin.get("/v1/balance_transactions?account=acct_a&limit=100", headers=fresh)
    assert bts.status == 200, bts.text
    listed = bts.json()
    assert listed["object"] == "list" and listed["url"] == "/v1/balance_transactions"
    assert listed["has_more"] is False
    assert {bt["account"] for bt in listed["data"]} == {"acct_a"}
    types = {bt["type"] for bt in listed["data"]}
    assert {"payment", "application_fee", "payment_refund", "topup", "payout"} <= types
    only = env.admin.get(
        f"/v1/balance_transactions?type=payout&currency=usd&created[gte]={T0}"
        f"&created[lt]={world.now + DAY}&limit=100",
        headers=fresh,
    ).json()["data"]
    assert only and {bt["type"] for bt in only} == {"payout"}
    by_source = env.admin.get(
        f"/v1/balance_transactions?source={world.ids['topup']}", headers=fresh
    ).json()["data"]
    assert [bt["type"] for bt in by_source] == ["topup"]
    payouts = env.admin.get("/v1/payouts?account=acct_a&limit=100", headers=fresh).json()
    statuses = {p["id"]: p["status"] for p in payouts["data"]}
    assert statuses[world.ids["payout_paid"]] == "paid"
    assert statuses[world.ids["payout_failed"]] == "failed"
    assert statuses[world.ids["payout_canceled"]] == "canceled"
    assert world.ids["payout_pending"] not in statuses
    failed = env.admin.get("/v1/payouts?status=failed", headers=fresh).json()["data"]
    assert [p["failure_code"] for p in failed] == ["account_closed"]
    revenue = env.admin.get("/v1/revenue?from=2026-01-01&to=2026-01-10", headers=fresh)
    assert revenue.status == 200, revenue.text
    days = revenue.json()["data"]
    assert [d["day"] for d in days] == ["2026-01-05", "2026-01-06", "2026-01-07", "2026-01-08"]
    assert days[0]["application_fees"] == 700 and days[1]["application_fees"] == 100
    events = env.admin.get("/v1/audit/events?limit=5")
    assert events.status == 200, events.text
    page = events.json()
    assert page["object"] == "list" and page["has_more"] is True and len(page["data"]) == 5
    after = page["data"][-1]["position"]
    nxt = env.admin.get(f"/v1/audit/events?after={after}&limit=5").json()
    assert nxt["data"][0]["position"] > after
    assert page["data"][0]["type"].endswith("ConnectedAccount.Opened")


def test_healthz_and_openapi(env: Env, world: World) -> None:
    # Liveness is public and says only "ok" and the mode; the details (head, positions) need a key.
    health = env.clients["none"].get("/healthz")
    assert health.status == 200, health.text
    assert health.json() == {"status": "ok", "livemode": False, "mode": "test"}
    assert env.clients["none"].get("/readyz").json() == {"status": "ready"}
    assert env.clients["none"].get("/v1/status").status == 401
    body = env.admin.get("/v1/status").json()
    assert body["head"] >= 1 and body["projector_running"] is True
    assert set(body["projections"]) == {
        "balances",
        "balance_transactions",
        "payouts",
        "revenue",
        "routing_holds",
        "reconciliation",
        "accounts",
        "payments",
    }
    assert body["held"] == {"payouts": 0, "routings": 0}
    spec = env.clients["none"].get("/openapi.json")
    assert spec.status == 200
    doc = spec.json()
    operations = {
        op["operationId"]: (method.upper(), path)
        for path, item in doc["paths"].items()
        for method, op in item.items()
    }
    assert set(operations) == set(POLICY)
    assert operations["create_payment"] == ("POST", "/v1/payments")
    assert operations["list_balance_transactions"] == ("GET", "/v1/balance_transactions")
    assert "PaymentCreate" in doc["components"]["schemas"]
    assert '"422"' not in spec.text  # validation errors are 400 envelopes
    post = doc["paths"]["/v1/payments"]["post"]
    assert {"name": "Idempotency-Key", "in": "header", "required": True}.items() <= (
        next(p for p in post["parameters"] if p["name"] == "Idempotency-Key").items()
    )
    assert post["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorEnvelope"
    }


# Bad input -------------------------------------------------------------------------------------

AMOUNTS_BAD: list[tuple[Any, str]] = [
    (-100, "amount_invalid"),
    (0, "amount_invalid"),
    (1.5, "parameter_invalid"),
    (100.0, "parameter_invalid"),
    ("100", "parameter_invalid"),
    (True, "parameter_invalid"),
    (None, "parameter_invalid"),
    (10**12, "amount_too_large"),
]


@dataclass
class Spec:
    route: str
    path: str
    body: dict[str, Any]
    required: tuple[str, ...] = ()
    amounts: tuple[str, ...] = ()  # required amounts: every bad value applies
    optional_amounts: tuple[str, ...] = ()  # null is allowed, zero is not
    currencies: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()  # unknown → 404
    objects: tuple[str, ...] = ()  # unknown payment/transfer → 404
    missing_path: str | None = None  # the same request about an object that does not exist
    extra: list[tuple[dict[str, Any], int, str]] = field(default_factory=list)


def _specs(world: World) -> list[Spec]:
    return [
        Spec(
            "create_account",
            "/v1/accounts",
            {"id": "acct_new", "country": "US", "default_currency": "usd"},
            required=("id",),
            currencies=("default_currency",),
            extra=[
                ({"id": "nope"}, 400, "parameter_invalid"),
                ({"id": "acct_a"}, 409, "account_exists"),
                ({"id": "acct_x", "country": "usa"}, 400, "parameter_invalid"),
                ({"id": "acct_x", "kind": "custom"}, 400, "parameter_invalid"),
                ({"id": 42}, 400, "parameter_invalid"),
                ({"id": "acct_\u0000x"}, 400, "parameter_invalid"),
                ({"id": "acct_ x"}, 400, "parameter_invalid"),
            ],
        ),
        Spec(
            "update_account",
            "/v1/accounts/acct_b",
            {},  # itself refused: nothing to update
            missing_path="/v1/accounts/acct_nope",
            extra=[
                ({}, 400, "parameter_missing"),
                ({"charges_enabled": "yes"}, 400, "parameter_invalid"),
                ({"verification_status": "great"}, 400, "parameter_invalid"),
                ({"capabilities": {"card_payments": "on"}}, 400, "parameter_invalid"),
                ({"closed": False}, 400, "parameter_invalid"),
                (
                    {"settings": {"payouts": {"schedule": {"delay_days": -1}}}},
                    400,
                    "parameter_invalid",
                ),
                (
                    {"settings": {"payouts": {"schedule": {"minimum_amount": {"usd": 1.5}}}}},
                    400,
                    "parameter_invalid",
                ),
                (
                    {"settings": {"payouts": {"schedule": {"minimum_amount": {"xyz": 1}}}}},
                    400,
                    "currency_unknown",
                ),
                # Several commands in one request: a late rejection must not leave the first.
                (
                    {
                        "charges_enabled": False,
                        "closed": True,
                        "settings": {"payouts": {"schedule": {"interval": "monthly"}}},
                    },
                    400,
                    "parameter_invalid",
                ),
            ],
        ),
        Spec(
            "create_payment",
            "/v1/payments",
            {
                "charge_type": "destination",
                "amount": 1_000,
                "currency": "usd",
                "account": "acct_a",
                "application_fee_amount": 100,
            },
            required=("charge_type", "amount", "currency"),
            amounts=("amount",),
            currencies=("currency",),
            accounts=("account",),
            extra=[
                ({"charge_type": "card"}, 400, "parameter_invalid"),
                ({"account": "acct_\u0000a"}, 400, "parameter_invalid"),
                ({"transfer_group": "line\nbreak"}, 400, "parameter_invalid"),
                ({"stripe_fee": -1}, 400, "amount_invalid"),
                ({"stripe_fee": 2_000}, 400, "amount_invalid"),
                ({"application_fee_amount": "1"}, 400, "parameter_invalid"),
                ({"transfer_data": {"amount": 10.5}}, 400, "parameter_invalid"),
                ({"account": "acct_c"}, 400, "account_closed"),
                ({"created": -5}, 400, "parameter_invalid"),
                ({"available_on": "tomorrow"}, 400, "parameter_invalid"),
                (
                    {"charge_type": "separate", "account": None, "application_fee_amount": 0}
                    | {"split": [{"account": "acct_a", "share_bps": 20_000}]},
                    400,
                    "split_rule_invalid",
                ),
                (
                    {"charge_type": "separate", "account": None, "application_fee_amount": 0}
                    | {"split": [{"account": "acct_a", "share_bps": 10, "x": 1}]},
                    400,
                    "parameter_unknown",
                ),
            ],
        ),
        Spec(
            "create_refund",
            "/v1/refunds",
            {"payment": world.ids["sep"], "amount": 100},
            required=("payment",),
            optional_amounts=("amount",),
            objects=("payment",),
            extra=[
                ({"amount": 1_000_000}, 400, "refund_exceeds_charge"),
                ({"reverse_transfer": "yes"}, 400, "parameter_invalid"),
                ({"reverse_transfer": True}, 400, "parameter_invalid"),
            ],
        ),
        Spec(
            "create_transfer",
            "/v1/transfers",
            {"destination": "acct_a", "amount": 100, "currency": "usd"},
            required=("destination", "amount", "currency"),
            amounts=("amount",),
            currencies=("currency",),
            accounts=("destination",),
            objects=("source_transaction",),
            extra=[
                ({"amount": 90_000_000}, 402, "insufficient_funds"),
                ({"destination": "acct_platform"}, 400, "parameter_invalid"),
                ({"currency": "eur", "source_transaction": world.ids["sep"]}, 400, ""),
            ],
        ),
        Spec(
            "create_transfer_reversal",
            f"/v1/transfers/{world.ids['unsourced']}/reversals",
            {"amount": 100},
            optional_amounts=("amount",),
            missing_path="/v1/transfers/tr_nope/reversals",
            extra=[({"amount": 10_000}, 400, "reversal_exceeds_transfer")],
        ),
        Spec(
            "create_payout",
            "/v1/payouts",
            {"account": "acct_a", "amount": 100, "currency": "usd"},
            required=("account", "amount", "currency"),
            amounts=("amount",),
            currencies=("currency",),
            accounts=("account",),
            extra=[
                ({"amount": 90_000_000}, 402, "insufficient_funds"),
                ({"account": "acct_c"}, 400, "account_closed"),
            ],
        ),
        Spec(
            "update_payout_status",
            f"/v1/payouts/{world.ids['payout_pending']}/status",
            {"status": "in_transit"},
            required=("status",),
            missing_path="/v1/payouts/po_nope/status",
            extra=[
                ({"status": "done"}, 400, "parameter_invalid"),
                ({"status": "failed"}, 400, "parameter_missing"),
                ({"status": "paid"}, 409, "invalid_state_transition"),
                ({"status": "paid", "failure_code": "x"}, 400, "parameter_invalid"),
                ({"status": "failed", "failure_code": 7}, 400, "parameter_invalid"),
                ({"status": "failed", "failure_code": "a\u0000b"}, 400, "parameter_invalid"),
            ],
        ),
        Spec(
            "create_dispute",
            "/v1/disputes",
            {"payment": world.ids["sep"], "fee": 1_500, "amount": 100},
            required=("payment", "fee"),
            optional_amounts=("amount",),
            objects=("payment",),
            extra=[
                ({"fee": -1}, 400, "amount_invalid"),
                ({"fee": 15.0}, 400, "parameter_invalid"),
                ({"payment": world.ids["direct"]}, 409, "invalid_state_transition"),
            ],
        ),
        Spec(
            "close_dispute",
            f"/v1/disputes/{world.ids['sep']}/close",
            {"won": True},
            required=("won",),
            missing_path="/v1/disputes/py_nope/close",
            extra=[
                ({"won": "true"}, 400, "parameter_invalid"),
                ({"won": 1}, 400, "parameter_invalid"),
                ({"won": True}, 409, "invalid_state_transition"),  # no open dispute
            ],
        ),
        Spec(
            "release_balance",
            "/v1/balances/acct_a/release",
            {"currency": "usd", "until": T0},
            required=("currency", "until"),
            currencies=("currency",),
            missing_path="/v1/balances/acct_nope/release",
            extra=[
                ({"until": -1}, 400, "parameter_invalid"),
                ({"until": "now"}, 400, "parameter_invalid"),
                ({"until": 1.5}, 400, "parameter_invalid"),
            ],
        ),
        Spec(
            "create_topup",
            "/v1/topups",
            {"account": "acct_a", "amount": 100, "currency": "usd"},
            required=("account", "amount", "currency"),
            amounts=("amount",),
            currencies=("currency",),
            accounts=("account",),
        ),
    ]


def _variants(spec: Spec) -> Iterator[tuple[str, str, dict[str, Any], Any, int, str]]:
    """(label, path, request kwargs, body, status, code) for every bad request of a route."""
    base = spec.body
    yield "no key", spec.path, {"idempotency_key": None}, base, 400, "idempotency_key_missing"
    yield "empty key", spec.path, {"idempotency_key": ""}, base, 400, "idempotency_key_invalid"
    yield (
        "long key",
        spec.path,
        {"idempotency_key": "k" * 256},
        base,
        400,
        "idempotency_key_invalid",
    )
    yield "bad json", spec.path, {"raw": b'{"amount": 1,'}, None, 400, "json_invalid"
    yield "array", spec.path, {"raw": b"[1, 2]"}, None, 400, "parameter_invalid"
    yield "string", spec.path, {"raw": b'"hello"'}, None, 400, "parameter_invalid"
    yield (  # form bodies are read (Stripe's encoding); this one is incomplete or unknown
        "form",
        spec.path,
        {"raw": b"amount=1", "content_type": "application/x-www-form-urlencoded"},
        None,
        400,
        "",
    )
    yield "extra field", spec.path, {}, base | {"bogus": 1}, 400, "parameter_unknown"
    yield "query param", spec.path + "?expand=x", {}, base, 400, "parameter_unknown"
    if spec.required:
        yield "no body", spec.path, {}, None, 400, "parameter_missing"
    for name in spec.required:
        body = {k: v for k, v in base.items() if k != name}
        yield f"missing {name}", spec.path, {}, body, 400, "parameter_missing"
    for name in spec.amounts + spec.optional_amounts:
        for value, code in AMOUNTS_BAD:
            if value is None and name in spec.optional_amounts:
                continue
            yield f"{name}={value!r}", spec.path, {}, base | {name: value}, 400, code
    for name in spec.currencies:
        for value in ("xyz", "USD", "", 840):
            code = "parameter_invalid" if not isinstance(value, str) or not value else ""
            yield (
                f"{name}={value!r}",
                spec.path,
                {},
                base | {name: value},
                400,
                code or ("currency_unknown"),
            )
    for name in spec.accounts:
        yield f"unknown {name}", spec.path, {}, base | {name: "acct_nope"}, 404, "account_not_found"
    for name in spec.objects:
        yield f"unknown {name}", spec.path, {}, base | {name: "py_nope"}, 404, ""
    if spec.missing_path:
        yield "unknown path object", spec.missing_path, {}, base, 404, ""
    for i, (patch, status, code) in enumerate(spec.extra):
        yield f"extra #{i} {patch}", spec.path, {}, base | patch, status, code


def test_bad_input_on_every_post_is_refused_and_records_nothing(env: Env, world: World) -> None:
    specs = _specs(world)
    assert {s.route for s in specs} == {p.route for p in world.posts}
    events_before = len(list(env.ledger.iter_events()))
    head = env.head()
    checked = 0
    for spec in specs:
        for label, path, kwargs, body, status, code in _variants(spec):
            reply = env.admin.request("POST", path, body=body, **{"idempotency_key": AUTO} | kwargs)
            where = f"{spec.route} {label}: {reply.status} {reply.text}"
            assert reply.status == status, where
            error = reply.error
            assert error["type"] in ("invalid_request_error", "idempotency_error"), where
            if code:
                assert error["code"] == code, where
            assert "Traceback" not in reply.text
            assert env.head() == head, f"{where}: something was recorded"
            checked += 1
    assert checked > 150
    assert len(list(env.ledger.iter_events())) == events_before
    # The account whose multi-command update was refused is unchanged.
    account = env.admin.get("/v1/accounts/acct_b").json()
    assert account["closed"] is False and account["charges_enabled"] is True


def test_account_update_is_all_or_nothing(env: Env, world: World) -> None:
    head = env.head()
    closed = env.admin.post("/v1/accounts/acct_c", {"payouts_enabled": True, "closed": True})
    assert closed.status == 400 and closed.error["code"] == "account_closed"
    late = env.admin.post(
        "/v1/accounts/acct_b",
        {"payouts_enabled": False, "settings": {"payouts": {"schedule": {"interval": "weekly"}}}},
    )
    assert late.status == 400 and late.error["param"] == "weekly_anchor", late.text
    assert env.head() == head
    account = env.admin.get("/v1/accounts/acct_b").json()
    assert account["payouts_enabled"] is True
    assert account["settings"]["payouts"]["schedule"]["interval"] == "daily"
    # One key, one set of changes: a key reused with more or fewer changes is a conflict.
    pending = {"verification_status": "pending"}
    both = pending | {"settings": {"payouts": {"schedule": {"delay_days": 3}}}}
    for first_body, second_body in ((pending, both), (both, pending)):
        key = f"update-{uuid.uuid4().hex}"
        first = env.admin.post("/v1/accounts/acct_b", first_body, idempotency_key=key)
        assert first.status == 200, first.text
        other = env.admin.post("/v1/accounts/acct_b", second_body, idempotency_key=key)
        assert other.status == 409 and other.error["code"] == "idempotency_conflict", other.text
        same = env.admin.post("/v1/accounts/acct_b", first_body, idempotency_key=key)
        assert same.status == 200 and same.json() == first.json()
        assert same.headers["idempotent-replayed"] == "true"
    schedule = env.admin.get("/v1/accounts/acct_b").json()["settings"]["payouts"]["schedule"]
    assert (schedule["interval"], schedule["delay_days"]) == ("daily", 3)


def test_unexpected_errors_are_500_without_a_traceback(
    env: Env, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(**_: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(env.ledger, "top_up", boom)
    reply = env.admin.post("/v1/topups", {"account": "acct_a", "amount": 100, "currency": "usd"})
    assert reply.status == 500
    assert reply.error["type"] == "api_error"
    assert "secret" not in reply.text and "Traceback" not in reply.text


def test_unknown_routes_methods_and_query_parameters(env: Env, world: World) -> None:
    for method, path, status, code in (
        ("GET", "/v1/nothing", 404, "route_not_found"),
        ("POST", "/v1/nothing", 404, "route_not_found"),
        ("DELETE", "/v1/payouts", 405, "method_not_allowed"),
        ("PUT", "/v1/accounts/acct_a", 405, "method_not_allowed"),
        ("GET", "/v1/payouts?acount=acct_a", 400, "parameter_unknown"),
        ("GET", "/v1/payouts?limit=0", 400, "parameter_invalid"),
        ("GET", "/v1/payouts?limit=101", 400, "parameter_invalid"),
        ("GET", "/v1/payouts?limit=ten", 400, "parameter_invalid"),
        ("GET", "/v1/payouts?status=lost", 400, "parameter_invalid"),
        ("GET", "/v1/payouts?starting_after=po_nope", 400, "parameter_invalid"),
        ("GET", "/v1/balance_transactions?created[gte]=yesterday", 400, "parameter_invalid"),
        ("GET", "/v1/balance_transactions?format=xml", 400, "parameter_invalid"),
        ("GET", "/v1/accounts/acct_a/statement", 400, "parameter_missing"),
        ("GET", "/v1/accounts/acct_a/statement?currency=xyz", 400, "currency_unknown"),
        ("GET", "/v1/accounts/acct_a/statement?currency=usd&from=10&to=5", 400, ""),
        ("GET", "/v1/accounts/acct_nope/statement?currency=usd", 404, "resource_missing"),
        ("GET", "/v1/balances/acct_nope", 404, "resource_missing"),
        ("GET", "/v1/revenue?from=2026-01-01", 400, "parameter_missing"),
        ("GET", "/v1/revenue?from=2026-13-01&to=2026-14-01", 400, "parameter_invalid"),
        ("GET", "/v1/revenue?from=2026-02-01&to=2026-01-01", 400, "parameter_invalid"),
        ("GET", "/v1/audit/events?limit=1001", 400, "parameter_invalid"),
        ("GET", "/v1/audit/events?after=99999999999999999999", 400, "parameter_invalid"),
        ("GET", "/v1/balance_transactions?account=acct_%00a", 400, "parameter_invalid"),
        ("GET", "/v1/balance_transactions?source=%00", 400, "parameter_invalid"),
        ("GET", "/v1/balances/acct_%00a", 400, "parameter_invalid"),
        ("GET", "/v1/audit/balances/acct_a?as_of=-1", 400, "parameter_invalid"),
    ):
        reply = env.admin.request(method, path)
        assert reply.status == status, (method, path, reply.text)
        if code:
            assert reply.error["code"] == code, (method, path, reply.text)
        else:
            assert reply.error
    huge = env.admin.post("/v1/topups", raw=b'{"account": "' + b"a" * 2_000_000 + b'"}')
    assert huge.status == 413 and huge.error["code"] == "body_too_large"
    bad_position = env.admin.get("/v1/payouts", headers={"Sluice-Min-Position": "soon"})
    assert bad_position.status == 400 and bad_position.error["param"] == "Sluice-Min-Position"


# Idempotency -----------------------------------------------------------------------------------


def _changed(p: Posted) -> dict[str, Any]:
    body = deepcopy(p.body)
    if p.route == "update_payout_status":
        return {"status": "canceled"} if body["status"] != "canceled" else {"status": "paid"}
    for name in ("amount", "fee", "until"):
        if name in body:
            return body | {name: body[name] + 1}
    if "won" in body:
        return body | {"won": not body["won"]}
    if p.route == "create_account":
        return body | {"country": "CA"}
    if "closed" in body:
        return body | {"charges_enabled": True}
    return body | {"verification_status": "rejected"}


def test_every_post_replays_its_first_response_and_refuses_other_params(
    env: Env, world: World
) -> None:
    head = env.head()
    for p in world.posts:
        again = env.admin.post(p.path, p.body, idempotency_key=p.key)
        assert again.status == 200, (p.route, again.text)
        assert again.json() == p.json, p.route
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["sluice-position"] == p.reply.headers["sluice-position"]
    assert env.head() == head
    for p in world.posts:
        conflict = env.admin.post(p.path, _changed(p), idempotency_key=p.key)
        assert conflict.status == 409, (p.route, conflict.text)
        assert conflict.error["type"] == "idempotency_error", conflict.text
        assert conflict.error["code"] == "idempotency_conflict"
    # One key, two routes: a conflict too.
    first = world.first("create_topup")
    other = env.admin.post(
        "/v1/payouts",
        {"account": "acct_a", "amount": 1, "currency": "usd"},
        idempotency_key=first.key,
    )
    assert other.status == 409 and other.error["code"] == "idempotency_conflict"
    assert env.head() == head


# Pagination and CSV ----------------------------------------------------------------------------


def _all_pages(client: Client, path: str, limit: int, headers: dict[str, str]) -> list[Any]:
    seen: list[Any] = []
    cursor = ""
    joiner = "&" if "?" in path else "?"
    for _ in range(100):
        page = client.get(f"{path}{joiner}limit={limit}{cursor}", headers=headers)
        assert page.status == 200, page.text
        body = page.json()
        assert len(body["data"]) <= limit
        seen += body["data"]
        if not body["has_more"]:
            return seen
        assert len(body["data"]) == limit
        cursor = f"&starting_after={body['data'][-1]['id']}"
    raise AssertionError("pagination did not end")


def test_pagination_walks_every_page_once(env: Env, world: World) -> None:
    fresh = env.fresh()
    whole = env.admin.get("/v1/balance_transactions?account=acct_a&limit=100", headers=fresh)
    everything = whole.json()["data"]
    assert len(everything) > 7
    for limit in (1, 3, 7):
        paged = _all_pages(env.admin, "/v1/balance_transactions?account=acct_a", limit, fresh)
        assert paged == everything
    default = env.admin.get("/v1/balance_transactions?account=acct_a", headers=fresh).json()
    assert default["data"] == everything[:10] and default["has_more"] == (len(everything) > 10)
    payouts = env.admin.get("/v1/payouts?limit=100", headers=fresh).json()["data"]
    assert _all_pages(env.admin, "/v1/payouts", 2, fresh) == payouts


def _iso(seconds: int | None) -> str:
    return "" if seconds is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _decimal(minor: int, currency: str) -> str:
    digits = {"usd": 2, "jpy": 0}[currency]
    sign, (whole, frac) = "-" if minor < 0 else "", divmod(abs(minor), 10**digits)
    return f"{sign}{whole}.{frac:0{digits}d}" if digits else f"{sign}{whole}"


def _finance_row_matches(row: dict[str, str], obj: dict[str, Any]) -> None:
    """A finance CSV row (adapters.export) against the API's JSON object of the same id."""
    assert row["id"] == obj["id"] and row["account"] == obj["account"]
    assert row["created"] == _iso(obj["created"]) and row["currency"] == obj["currency"]
    money = {"gross": "amount", "fee": "fee", "net": "net"}
    if obj["object"] == "payout":
        money = {"amount": "amount"}
    for column, key in money.items():
        assert int(row[f"{column}_minor"]) == obj[key], (column, row, obj)
        assert row[column] == _decimal(obj[key], obj["currency"]), (column, row, obj)


def test_csv_streams_every_matching_row_finance_ready(env: Env, world: World) -> None:
    fresh = env.fresh()
    for path in (
        "/v1/balance_transactions?account=acct_a",
        "/v1/balance_transactions?currency=usd",
        "/v1/payouts",
    ):
        everything = _all_pages(env.admin, path, 7, fresh)  # JSON: newest first, in pages
        assert len(everything) > 1, path
        joiner = "&" if "?" in path else "?"
        by_param = env.admin.get(f"{path}{joiner}format=csv&limit=1", headers=fresh)
        by_accept = env.admin.get(f"{path}{joiner}limit=1", headers=fresh | {"Accept": "text/csv"})
        for reply in (by_param, by_accept):
            assert reply.status == 200, reply.text
            assert reply.headers["content-type"].startswith("text/csv")
            assert reply.headers["sluice-position"]
            rows = reply.rows()  # every row, not one page: oldest first
            assert [r["id"] for r in rows] == [o["id"] for o in reversed(everything)], path
            for row, obj in zip(rows, reversed(everything), strict=True):
                _finance_row_matches(row, obj)
    paris = env.admin.get("/v1/payouts?format=csv&tz=Europe/Paris", headers=fresh).rows()
    assert paris and all(r["created"].endswith(("+01:00", "+02:00")) for r in paris)
    bad_zone = env.admin.get("/v1/payouts?format=csv&tz=Mars/Olympus", headers=fresh)
    assert bad_zone.status == 400 and bad_zone.error["param"] == "tz"
    revenue = "/v1/revenue?from=2026-01-01&to=2027-01-01"
    csv_equals_json(
        env.admin.get(f"{revenue}&format=csv", headers=fresh).rows(),
        env.admin.get(revenue, headers=fresh).json()["data"],
    )
    statement_path = f"/v1/accounts/acct_a/statement?currency=usd&from={T0}&to={world.now + DAY}"
    statement = env.admin.get(statement_path, headers=fresh).json()
    as_csv = env.admin.get(statement_path, headers=fresh | {"Accept": "text/csv"})
    assert as_csv.status == 200, as_csv.text
    rows = as_csv.rows()
    assert [r["row"] for r in rows] == [
        "opening_balance",
        *(["movement"] * len(statement["movements"])),
        "closing_balance",
    ]
    assert int(rows[0]["balance_minor"]) == statement["opening_balance"]
    assert int(rows[-1]["balance_minor"]) == statement["closing_balance"]
    running = statement["opening_balance"]
    for row, movement in zip(rows[1:-1], statement["movements"], strict=True):
        _finance_row_matches(row, movement)
        running += movement["net"]
        assert int(row["balance_minor"]) == running
    assert int(as_csv.headers["sluice-opening-balance"]) == statement["opening_balance"]
    assert int(as_csv.headers["sluice-closing-balance"]) == statement["closing_balance"]
    empty = env.admin.get("/v1/payouts?account=acct_nobody&format=csv", headers=fresh)
    assert empty.text.splitlines()[0].startswith("id,account,created,updated,currency")
    assert empty.rows() == []
    events = env.clients["auditor"].get("/v1/audit/events?limit=3")
    csv_equals_json(
        env.clients["auditor"].get("/v1/audit/events?limit=3&format=csv").rows(),
        events.json()["data"],
    )


# Read your writes ------------------------------------------------------------------------------


def test_min_position_waits_for_the_projection(env: Env, world: World) -> None:
    created = env.admin.post(
        "/v1/payments",
        {"charge_type": "separate", "amount": 4_321, "currency": "usd", "stripe_fee": 100},
    )
    assert created.status == 200, created.text
    position = created.json()["position"]
    assert int(created.headers["sluice-position"]) == position
    source = created.json()["id"]
    seen = env.clients["finance"].get(
        f"/v1/balance_transactions?source={source}",
        headers={"Sluice-Min-Position": str(position)},
    )
    assert seen.status == 200
    assert int(seen.headers["sluice-position"]) >= position
    assert [bt["amount"] for bt in seen.json()["data"]] == [4_321]


def test_min_position_is_bounded_without_a_projector(env: Env, world: World) -> None:
    settings = env.settings.model_copy(update={"http_min_position_wait_s": 0.3})
    app = create_app(settings, ledger=env.ledger, run_projector=False)
    with running(app) as address:
        client = Client(address, env.admin.key)
        head = env.head()
        started = time.monotonic()
        reply = client.get(
            "/v1/balances/acct_a", headers={"Sluice-Min-Position": str(head + 1_000)}
        )
        waited = time.monotonic() - started
        assert reply.status == 200, reply.text
        assert 0.3 <= waited < 3
        assert int(reply.headers["sluice-position"]) <= head
        health = client.get("/v1/status").json()  # the details moved off public /healthz
        assert health["projector_running"] is False


# Roles -----------------------------------------------------------------------------------------

# Expected status per route for: admin, finance, auditor, account key of acct_a (own), account
# key of acct_b (other). The request is always about acct_a. No key and a bad key: 401.
MATRIX = """
healthz                    200 200 200 200 200
readyz                     200 200 200 200 200
service_status             200 200 200 403 403
create_account             200 403 403 403 403
update_account             200 403 403 403 403
create_payment             200 403 403 403 403
create_refund              200 403 403 403 403
create_transfer            200 403 403 403 403
create_transfer_reversal   200 403 403 403 403
create_payout              200 403 403 403 403
update_payout_status       200 403 403 403 403
create_dispute             200 403 403 403 403
close_dispute              200 403 403 403 403
release_balance            200 403 403 403 403
create_topup               200 403 403 403 403
list_api_keys              200 403 403 403 403
create_api_key             200 403 403 403 403
revoke_api_key             200 403 403 403 403
rotate_api_key             200 403 403 403 403
list_accounts              200 200 200 200 200
retrieve_tax_report        200 200 200 200 404
retrieve_account           200 200 200 200 404
retrieve_balance           200 200 200 200 404
list_balance_transactions  200 200 200 200 404
list_payouts               200 200 200 200 404
list_payments              200 200 200 200 404
retrieve_statement         200 200 200 200 404
retrieve_revenue           200 200 200 403 403
retrieve_balance_change_report 200 200 200 200 404
list_seller_summaries      200 200 200 200 404
retrieve_payout_reconciliation_report 200 200 200 200 404
list_reconciliation_breaks 200 200 200 403 403
reconciliation_clearing    200 200 200 403 403
retrieve_risk_exposure     200 200 200 403 403
reconciliation_balances    409 409 409 403 403
audit_balances             200 403 200 403 403
audit_events               200 403 200 403 403
audit_checkpoints          200 403 200 403 403
audit_inclusion_proof      404 403 404 403 403
audit_account_proof        404 403 404 403 403
audit_consistency_proof    404 403 404 403 403
stripe_webhook             400 400 400 400 400
"""


def _expected() -> dict[str, dict[str, int]]:
    table = {}
    for line in MATRIX.strip().splitlines():
        name, *codes = line.split()
        expected = dict(zip(ROLES[:5], map(int, codes), strict=True))
        # healthz and readyz are public; the webhook authenticates by signature (none sent
        # here: 400).
        unauthenticated = {"healthz": 200, "readyz": 200, "stripe_webhook": 400}.get(name, 401)
        table[name] = expected | {"none": unauthenticated, "bad": unauthenticated}
    return table


def _matrix_requests(env: Env, world: World) -> dict[str, tuple[str, str, Any]]:
    """A valid request per route, about acct_a; the admin runs each once."""
    admin = env.admin

    def made(path: str, body: Any) -> dict[str, Any]:
        reply = admin.post(path, body)
        assert reply.status == 200, reply.text
        return dict(reply.json())

    now = int(time.time())
    charge = {"charge_type": "separate", "currency": "usd", "available_on": T0, "created": T0}
    payment = made("/v1/payments", charge | {"amount": 3_000})["id"]
    disputed = made("/v1/payments", charge | {"amount": 900})["id"]
    undisputed = made("/v1/payments", charge | {"amount": 800})["id"]
    made("/v1/disputes", {"payment": disputed, "fee": 0})
    made("/v1/balances/acct_platform/release", {"currency": "usd", "until": now})
    payout = made("/v1/payouts", {"account": "acct_a", "amount": 100, "currency": "usd"})["id"]
    doomed = made("/v1/keys", {"role": "finance", "label": "matrix: revoked"})["id"]
    rotated = made("/v1/keys", {"role": "auditor", "label": "matrix: rotated"})["id"]
    usd = {"currency": "usd"}
    return {
        "healthz": ("GET", "/healthz", None),
        "readyz": ("GET", "/readyz", None),
        "service_status": ("GET", "/v1/status", None),
        "create_account": ("POST", "/v1/accounts", {"id": "acct_matrix"}),
        "update_account": ("POST", "/v1/accounts/acct_a", {"verification_status": "verified"}),
        "create_payment": ("POST", "/v1/payments", charge | {"amount": 1_234}),
        "create_refund": ("POST", "/v1/refunds", {"payment": payment, "amount": 100}),
        "create_transfer": (
            "POST",
            "/v1/transfers",
            usd | {"destination": "acct_a", "amount": 100, "source_transaction": payment},
        ),
        "create_transfer_reversal": (
            "POST",
            f"/v1/transfers/{world.ids['unsourced']}/reversals",
            {"amount": 100},
        ),
        "create_payout": ("POST", "/v1/payouts", usd | {"account": "acct_a", "amount": 100}),
        "update_payout_status": ("POST", f"/v1/payouts/{payout}/status", {"status": "in_transit"}),
        "create_dispute": ("POST", "/v1/disputes", {"payment": undisputed, "fee": 1_500}),
        "close_dispute": ("POST", f"/v1/disputes/{disputed}/close", {"won": False}),
        "release_balance": ("POST", "/v1/balances/acct_a/release", usd | {"until": now}),
        "create_topup": ("POST", "/v1/topups", usd | {"account": "acct_a", "amount": 100}),
        "list_api_keys": ("GET", "/v1/keys", None),
        "create_api_key": ("POST", "/v1/keys", {"role": "finance", "label": "matrix"}),
        "revoke_api_key": ("POST", f"/v1/keys/{doomed}/revoke", None),
        "rotate_api_key": ("POST", f"/v1/keys/{rotated}/rotate", {"grace": 60}),
        "list_accounts": ("GET", "/v1/accounts?search=acct", None),
        "retrieve_tax_report": ("GET", "/v1/tax_reports?year=2026&account=acct_a", None),
        "retrieve_account": ("GET", "/v1/accounts/acct_a", None),
        "retrieve_balance": ("GET", "/v1/balances/acct_a", None),
        "list_balance_transactions": ("GET", "/v1/balance_transactions?account=acct_a", None),
        "list_payouts": ("GET", "/v1/payouts?account=acct_a", None),
        "list_payments": ("GET", "/v1/payments?account=acct_a&metadata[order]=1", None),
        "retrieve_statement": ("GET", "/v1/accounts/acct_a/statement?currency=usd", None),
        "retrieve_revenue": ("GET", "/v1/revenue?from=2026-01-01&to=2026-02-01", None),
        "retrieve_balance_change_report": (
            "GET",
            "/v1/reports/balance_change?account=acct_a",
            None,
        ),
        "list_seller_summaries": ("GET", "/v1/reports/seller_summaries?account=acct_a", None),
        "retrieve_payout_reconciliation_report": (
            "GET",
            "/v1/reports/payout_reconciliation?account=acct_a",
            None,
        ),
        "list_reconciliation_breaks": ("GET", "/v1/reconciliation/breaks", None),
        "reconciliation_clearing": ("GET", "/v1/reconciliation/clearing?account=acct_a", None),
        "retrieve_risk_exposure": ("GET", "/v1/risk/exposure?account=acct_a", None),
        # No Stripe here: the agreement needs Stripe's balances, and says so (409).
        "reconciliation_balances": ("GET", "/v1/reconciliation/balances?account=acct_a", None),
        "audit_balances": ("GET", "/v1/audit/balances/acct_a", None),
        "audit_events": ("GET", "/v1/audit/events?limit=3", None),
        # No checkpoint is made here: the proofs answer 404 to whoever may ask for them.
        "audit_checkpoints": ("GET", "/v1/audit/checkpoints", None),
        "audit_inclusion_proof": ("GET", "/v1/audit/proofs/inclusion?position=1", None),
        "audit_account_proof": ("GET", "/v1/audit/proofs/accounts/acct_a", None),
        "audit_consistency_proof": ("GET", "/v1/audit/proofs/consistency?first=1&second=2", None),
        "stripe_webhook": ("POST", "/webhooks/stripe", {"id": "evt_unsigned"}),
    }


ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
}


def test_role_matrix_every_route_every_role(env: Env, world: World) -> None:
    expected = _expected()
    assert set(expected) == set(POLICY)  # the table under test and this one cover the same routes
    requests = _matrix_requests(env, world)
    assert set(requests) == set(POLICY)
    checked = 0
    for name in POLICY:
        method, path, body = requests[name]
        for role in (*ROLES[1:], "admin"):  # the admin last: it is the one that writes
            head = env.head()
            reply = env.clients[role].request(
                method,
                path,
                body=body,
                idempotency_key=f"matrix-{name}-{role}" if method == "POST" else None,
            )
            want = expected[name][role]
            assert reply.status == want, (name, role, reply.status, reply.text)
            if want >= 400:
                assert reply.error["type"] == ERROR_TYPES[want], (name, role, reply.text)
                assert env.head() == head, (name, role, "a refused request recorded something")
            checked += 1
    assert checked == len(POLICY) * len(ROLES)


def test_refused_before_the_body_is_read(env: Env, world: World) -> None:
    for role, status in (("none", 401), ("bad", 401), ("finance", 403), ("own", 403)):
        reply = env.clients[role].post("/v1/payments", raw=b"{not json", idempotency_key=None)
        assert reply.status == status, (role, reply.text)
        reply = env.clients[role].post("/v1/payments", {"amount": "x"}, idempotency_key=None)
        assert reply.status == status, (role, reply.text)
        # A body that cannot even be decoded: still the key is checked first.
        reply = env.clients[role].post("/v1/payments", raw=b"\xff\xfe\x00", idempotency_key=None)
        assert reply.status == status, (role, reply.text)


def test_account_keys_see_only_their_own_account(env: Env, world: World) -> None:
    fresh = env.fresh()
    own, other = env.clients["own"], env.clients["other"]
    mine = own.get("/v1/balance_transactions?limit=100", headers=fresh).json()["data"]
    assert mine and {bt["account"] for bt in mine} == {"acct_a"}
    theirs = other.get("/v1/balance_transactions?limit=100", headers=fresh).json()["data"]
    assert theirs and {bt["account"] for bt in theirs} == {"acct_b"}
    assert {p["account"] for p in own.get("/v1/payouts", headers=fresh).json()["data"]} == {
        "acct_a"
    }
    as_csv = own.get("/v1/payouts?limit=100&format=csv", headers=fresh).rows()
    assert {row["account"] for row in as_csv} == {"acct_a"}
    for path in (
        "/v1/balances/acct_b",
        "/v1/accounts/acct_b",
        "/v1/accounts/acct_b/statement?currency=usd",
        "/v1/balance_transactions?account=acct_b",
        "/v1/payouts?account=acct_b",
        "/v1/accounts/acct_nope",  # existing or not, the same answer
    ):
        reply = own.get(path)
        assert reply.status == 404, (path, reply.text)
        assert reply.error["code"] == "resource_missing"
    # Another account's object as a cursor is no cursor at all.
    reply = own.get(f"/v1/balance_transactions?starting_after={theirs[0]['id']}")
    assert reply.status == 400 and reply.error["param"] == "starting_after"
    assert own.get("/v1/revenue?from=2026-01-01&to=2026-02-01").status == 403
    assert own.get("/v1/audit/events").status == 403


# SQLite ----------------------------------------------------------------------------------------


def test_sqlite_smoke(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'sluice.db'}")
    init_database(settings)
    admin_key = new_key(settings, "admin")
    own_key = new_key(settings, "account:acct_s")
    with running(create_app(settings)) as address:
        admin = Client(address, admin_key)
        for body in ({"id": "acct_platform", "kind": "platform"}, {"id": "acct_s"}):
            assert admin.post("/v1/accounts", body).status == 200
        enabled = admin.post("/v1/accounts/acct_s", {"charges_enabled": True})
        assert enabled.status == 200, enabled.text
        payment = {
            "charge_type": "destination",
            "amount": 2_500,
            "currency": "usd",
            "account": "acct_s",
            "application_fee_amount": 250,
            "created": T0,
        }
        paid = admin.post("/v1/payments", payment, idempotency_key="sqlite-pay")
        assert paid.status == 200, paid.text
        again = admin.post("/v1/payments", payment, idempotency_key="sqlite-pay")
        assert again.json() == paid.json() and again.headers["idempotent-replayed"] == "true"
        wait = {"Sluice-Min-Position": str(paid.json()["position"])}
        balance = Client(address, own_key).get("/v1/balances/acct_s", headers=wait)
        assert balance.status == 200, balance.text
        assert balance.json()["pending"] == [{"amount": 2_250, "currency": "usd"}]
        listed = admin.get("/v1/balance_transactions?account=acct_s", headers=wait)
        exported = admin.get("/v1/balance_transactions?account=acct_s&format=csv", headers=wait)
        listed_data = listed.json()["data"]
        assert [r["id"] for r in exported.rows()] == [bt["id"] for bt in reversed(listed_data)]
        for row, bt in zip(exported.rows(), reversed(listed_data), strict=True):
            _finance_row_matches(row, bt)
        assert Client(address, None).get("/v1/balances/acct_s").status == 401
        assert admin.post("/v1/payments", {"amount": 1}).status == 400
        assert admin.get("/v1/audit/events?limit=2").json()["has_more"] is True
        assert Client(address, None).get("/healthz").json()["status"] == "ok"
