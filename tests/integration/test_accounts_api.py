"""Finding accounts and reporting on them over HTTP: names, emails and metadata on accounts,
``GET /v1/accounts`` (search, flags, ``metadata[key]=value``, pages, account keys), form-encoded
bodies, and the tax report — a real uvicorn server on a real PostgreSQL schema."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest

from adapters.bootstrap import init_database
from adapters.http.app import create_app
from adapters.http.models import AccountList, TaxReportList
from adapters.settings import Settings
from tests.integration.http_support import Client, csv_equals_json, new_key, running

pytestmark = pytest.mark.postgres

JAN_2025 = 1_736_000_000  # 2025-01-04
MAR_2025 = 1_741_000_000  # 2025-03-03
FORM = "application/x-www-form-urlencoded"


@dataclass
class Env:
    admin: Client
    finance: Client
    seller: Client  # an account key of acct_alpha
    head: int = 0

    def fresh(self) -> dict[str, str]:
        return {"Sluice-Min-Position": str(self.head)}


def _drop_schema(base_url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(base_url.split("?", 1)[0], autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="module")
def env(postgres_url: str) -> Iterator[Env]:
    schema = f"accounts_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in postgres_url else "?"
    settings = Settings(database_url=f"{postgres_url}{separator}schema={schema}")
    try:
        init_database(settings)
        app = create_app(settings)
        with running(app) as address:
            env = Env(
                Client(address, new_key(settings, "admin")),
                Client(address, new_key(settings, "finance")),
                Client(address, new_key(settings, "account:acct_alpha")),
            )
            _world(env)
            yield env
    finally:
        _drop_schema(postgres_url, schema)


def _post(env: Env, path: str, body: dict[str, object]) -> dict[str, object]:
    reply = env.admin.post(path, body)
    assert reply.status == 200, (path, body, reply.text)
    env.head = max(env.head, int(reply.json()["position"]))
    return dict(reply.json())


def _world(env: Env) -> None:
    _post(env, "/v1/accounts", {"id": "acct_platform", "kind": "platform"})
    _post(
        env,
        "/v1/accounts",
        {
            "id": "acct_alpha",
            "name": "Alpine Outfitters",
            "email": "ops@alpine.example",
            "metadata": {"tier": "gold", "region": "eu"},
        },
    )
    # Stripe's form encoding, nested metadata and all.
    form = urlencode(
        {
            "id": "acct_beta",
            "name": "Bonsai Tea",
            "country": "JP",
            "default_currency": "jpy",
            "metadata[tier]": "silver",
            "metadata[region]": "apac",
        }
    ).encode()
    reply = env.admin.post("/v1/accounts", raw=form, content_type=FORM)
    assert reply.status == 200, reply.text
    env.head = max(env.head, int(reply.json()["position"]))
    _post(env, "/v1/accounts", {"id": "acct_gamma"})
    _post(env, "/v1/accounts/acct_alpha", {"charges_enabled": True, "payouts_enabled": True})
    direct = {"charge_type": "direct", "account": "acct_alpha", "currency": "usd"}
    paid = _post(env, "/v1/payments", direct | {"amount": 10_000, "created": JAN_2025})
    _post(env, "/v1/payments", direct | {"amount": 2_500, "created": MAR_2025})
    _post(env, "/v1/refunds", {"payment": paid["id"], "amount": 1_000})


def _list(client: Client, env: Env, **query: str) -> list[str]:
    reply = client.get(f"/v1/accounts?{urlencode(query)}", headers=env.fresh())
    assert reply.status == 200, reply.text
    body = AccountList.model_validate(reply.json())  # the documented model holds
    return [a.id for a in body.data]


def test_accounts_are_listed_newest_first_with_their_names_emails_and_metadata(env: Env) -> None:
    reply = env.finance.get("/v1/accounts", headers=env.fresh())
    assert reply.status == 200, reply.text
    data = reply.json()["data"]
    assert [a["id"] for a in data] == ["acct_gamma", "acct_beta", "acct_alpha", "acct_platform"]
    alpha = data[2]
    assert alpha["name"] == "Alpine Outfitters" and alpha["email"] == "ops@alpine.example"
    assert alpha["metadata"] == {"region": "eu", "tier": "gold"}
    assert alpha["charges_enabled"] is True and data[0]["charges_enabled"] is False
    assert data[1]["metadata"] == {"region": "apac", "tier": "silver"}  # sent form-encoded
    assert env.finance.get("/v1/accounts/acct_alpha").json()["name"] == "Alpine Outfitters"


def test_search_matches_name_email_id_and_metadata_case_insensitively(env: Env) -> None:
    assert _list(env.finance, env, search="alpine") == ["acct_alpha"]
    assert _list(env.finance, env, search="OPS@ALPINE") == ["acct_alpha"]
    assert _list(env.finance, env, search="silver") == ["acct_beta"]
    assert _list(env.finance, env, search="CCT_B") == ["acct_beta"]
    assert _list(env.finance, env, search="%") == []  # a wildcard is a character here
    assert _list(env.finance, env, search="nothing like it") == []


def test_flags_and_metadata_filters_must_all_hold(env: Env) -> None:
    assert _list(env.finance, env, charges_enabled="true") == ["acct_alpha"]
    assert _list(env.finance, env, payouts_enabled="false") == [
        "acct_gamma",
        "acct_beta",
        "acct_platform",
    ]
    assert _list(env.finance, env, **{"metadata[tier]": "gold"}) == ["acct_alpha"]
    both = {"metadata[tier]": "silver", "metadata[region]": "apac"}
    assert _list(env.finance, env, **both) == ["acct_beta"]
    assert _list(env.finance, env, **{"metadata[tier]": "silver", "metadata[region]": "eu"}) == []


def test_the_list_comes_as_csv_with_the_same_rows(env: Env) -> None:
    as_json = env.finance.get("/v1/accounts?limit=100", headers=env.fresh()).json()["data"]
    rows = env.finance.get("/v1/accounts?limit=100&format=csv").rows()
    csv_equals_json(rows, as_json)


def test_pages_follow_starting_after(env: Env) -> None:
    first = env.finance.get("/v1/accounts?limit=2", headers=env.fresh()).json()
    assert [a["id"] for a in first["data"]] == ["acct_gamma", "acct_beta"] and first["has_more"]
    second = env.finance.get("/v1/accounts?limit=2&starting_after=acct_beta").json()
    assert [a["id"] for a in second["data"]] == ["acct_alpha", "acct_platform"]
    assert not second["has_more"]


def test_an_account_key_lists_only_its_own_account(env: Env) -> None:
    assert _list(env.seller, env) == ["acct_alpha"]
    assert _list(env.seller, env, search="bonsai") == []
    assert env.seller.get("/v1/accounts?starting_after=acct_beta").status == 404


def test_bad_list_queries_are_400_with_a_code(env: Env) -> None:
    for query, param in (
        ("limit=0", "limit"),
        ("charges_enabled=maybe", "charges_enabled"),
        ("metadata=tier", "metadata"),
        ("starting_after=acct_nosuch", "starting_after"),
        ("colour=red", "colour"),
    ):
        reply = env.finance.get(f"/v1/accounts?{query}")
        assert reply.status in (400, 404), (query, reply.text)
        assert reply.error["param"] == param, (query, reply.text)


def test_an_update_merges_metadata_and_an_empty_value_removes_a_key(env: Env) -> None:
    body = {"metadata": {"tier": "", "owner": "kim"}, "email": "kim@gamma.example"}
    _post(env, "/v1/accounts/acct_gamma", body)
    gamma = env.finance.get("/v1/accounts/acct_gamma").json()
    assert gamma["metadata"] == {"owner": "kim"} and gamma["email"] == "kim@gamma.example"
    form = urlencode({"metadata[owner]": "", "metadata[desk]": "3"}).encode()
    reply = env.admin.post("/v1/accounts/acct_gamma", raw=form, content_type=FORM)
    assert reply.status == 200, reply.text
    env.head = int(reply.json()["position"])
    assert _list(env.finance, env, **{"metadata[desk]": "3"}) == ["acct_gamma"]
    assert _list(env.finance, env, **{"metadata[owner]": "kim"}) == []


def test_form_bodies_are_typed_like_json_and_refused_like_json(env: Env) -> None:
    form = urlencode({"account": "acct_alpha", "amount": "100", "currency": "usd"}).encode()
    reply = env.admin.post("/v1/topups", raw=form, content_type=FORM)
    assert reply.status == 200, reply.text
    assert reply.json()["amount"] == 100
    bad = urlencode({"account": "acct_alpha", "amount": "ten", "currency": "usd"}).encode()
    refused = env.admin.post("/v1/topups", raw=bad, content_type=FORM)
    assert refused.status == 400, refused.text
    assert refused.error["param"] == "amount"
    unknown = urlencode({"id": "acct_delta", "colour": "red"}).encode()
    assert env.admin.post("/v1/accounts", raw=unknown, content_type=FORM).status == 400


def test_the_tax_report_sums_a_year_per_month_in_json_and_csv(env: Env) -> None:
    reply = env.finance.get("/v1/tax_reports?year=2025&account=acct_alpha", headers=env.fresh())
    assert reply.status == 200, reply.text
    report = TaxReportList.model_validate(reply.json()).data[0]
    assert (report.gross_volume, report.refunds, report.payments) == (12_500, 0, 2)
    months = {m.month: (m.gross_volume, m.payments) for m in report.months if m.payments}
    assert months == {1: (10_000, 1), 3: (2_500, 1)}
    assert report.name == "Alpine Outfitters" and report.currency == "usd"
    rows = env.finance.get("/v1/tax_reports?year=2025&account=acct_alpha&format=csv").rows()
    assert len(rows) == 13 and rows[-1]["month"] == "year"
    assert rows[-1]["gross_volume"] == "12500" and rows[0]["gross_volume"] == "10000"
    assert env.finance.get("/v1/tax_reports?year=2024&account=acct_alpha").json()["data"] == []
    # The refund took effect when it was made (now): it counts in the year it was made.
    year = time.gmtime().tm_year
    now = env.finance.get(f"/v1/tax_reports?year={year}&account=acct_alpha").json()["data"][0]
    assert (now["gross_volume"], now["refunds"], now["payments"]) == (0, 1_000, 0)


def test_the_tax_report_refuses_bad_years_and_hides_other_accounts(env: Env) -> None:
    assert env.finance.get("/v1/tax_reports?year=nineteen").error["param"] == "year"
    assert env.finance.get("/v1/tax_reports").error["param"] == "year"
    assert env.seller.get("/v1/tax_reports?year=2025&account=acct_beta").status == 404
    mine = env.seller.get("/v1/tax_reports?year=2025").json()["data"]
    assert {r["account"] for r in mine} == {"acct_alpha"}
    nosuch = env.finance.get("/v1/tax_reports?year=2025&account=acct_nosuch")
    assert nosuch.status == 404 and nosuch.error["param"] == "account"
