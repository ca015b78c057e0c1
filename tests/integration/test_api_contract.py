"""The API's contract: /openapi.json is valid OpenAPI, every route answers a documented model,
every parameter is described, closed vocabularies are enums — and a client generated from the
schema with openapi-python-client lists accounts and balances from a real server on PostgreSQL.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from adapters.bootstrap import init_database
from adapters.http import models
from adapters.http.app import create_app
from adapters.settings import Settings
from tests.integration.http_support import Client, new_key, running

pytestmark = pytest.mark.postgres

GENERATE_TIMEOUT_S = 120
T0 = 1_767_603_600  # 2026-01-05T09:00:00Z


@dataclass
class Env:
    address: str
    key: str
    admin: Client
    schema: dict[str, Any]
    head: int


def _drop_schema(base_url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(base_url.split("?", 1)[0], autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="module")
def env(postgres_url: str) -> Iterator[Env]:
    schema = f"contract_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in postgres_url else "?"
    settings = Settings(database_url=f"{postgres_url}{separator}schema={schema}")
    try:
        init_database(settings)
        with running(create_app(settings)) as address:
            key = new_key(settings, "admin")
            admin = Client(address, key)
            for path, body in (
                ("/v1/accounts", {"id": "acct_platform", "kind": "platform"}),
                (
                    "/v1/accounts",
                    {"id": "acct_shop", "name": "Shop & Co", "metadata": {"tier": "gold"}},
                ),
                ("/v1/accounts/acct_shop", {"charges_enabled": True}),
            ):
                assert admin.post(path, body).status == 200
            payment = {"charge_type": "direct", "account": "acct_shop", "currency": "usd"}
            reply = admin.post("/v1/payments", payment | {"amount": 4_200, "created": T0})
            assert reply.status == 200, reply.text
            spec = Client(address).get("/openapi.json")
            assert spec.status == 200
            yield Env(address, key, admin, spec.json(), int(reply.json()["position"]))
    finally:
        _drop_schema(postgres_url, schema)


def _operations(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def test_the_schema_is_valid_openapi(env: Env) -> None:
    validate(env.schema)  # raises OpenAPIValidationError with the failing part


def test_every_route_documents_the_model_of_its_answer(env: Env) -> None:
    components = env.schema["components"]["schemas"]
    for name, operation in _operations(env.schema):
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert set(ok) == {"$ref"}, (name, ok)  # never a bare "string" or an empty schema
        model = ok["$ref"].rsplit("/", 1)[-1]
        assert components[model]["type"] == "object", (name, model)
        assert components[model]["properties"], (name, model)
        # The model comes from models.RESPONSES, or from the route's own response_model.
        listed = models.RESPONSES.get(operation["operationId"])
        assert listed is None or listed.__name__ == model, (name, model)


def test_every_parameter_is_described(env: Env) -> None:
    for name, operation in _operations(env.schema):
        for param in operation.get("parameters", []):
            assert param.get("description"), (name, param["name"])


def test_closed_vocabularies_are_enums(env: Env) -> None:
    schemas = env.schema["components"]["schemas"]
    payout_status = schemas["Payout"]["properties"]["status"]
    assert set(payout_status["enum"]) == {
        "pending",
        "held",
        "in_transit",
        "paid",
        "failed",
        "canceled",
    }
    assert set(schemas["AccountListed"]["properties"]["kind"]["enum"]) == {"connected", "platform"}
    status = schemas["BalanceTransaction"]["properties"]["status"]
    assert set(status["enum"]) == {"pending", "available"}


def test_real_answers_fit_their_models(env: Env) -> None:
    fresh = {"Sluice-Min-Position": str(env.head)}
    for path, model in (
        ("/v1/accounts", models.AccountList),
        ("/v1/accounts/acct_shop", models.Account),
        ("/v1/balances/acct_shop", models.Balance),
        ("/v1/balance_transactions?account=acct_shop", models.BalanceTransactionList),
        ("/v1/payouts", models.PayoutList),
        ("/v1/status", models.ServiceStatus),
        ("/v1/tax_reports?year=2026", models.TaxReportList),
        ("/v1/revenue?from=2026-01-01&to=2026-02-01", models.RevenueList),
    ):
        reply = env.admin.get(path, headers=fresh)
        assert reply.status == 200, (path, reply.text)
        model.model_validate(reply.json())  # raises if an answer strays from its model


def _generate(spec_path: Path, out: Path) -> None:
    tool = Path(sys.executable).parent / "openapi-python-client"
    assert tool.exists(), "pip install -e .[dev] installs openapi-python-client"
    env = os.environ | {"PATH": f"{tool.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [
            str(tool),
            "generate",
            "--path",
            str(spec_path),
            "--output-path",
            str(out),
            "--meta",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=GENERATE_TIMEOUT_S,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_generated_client_lists_accounts_and_balances(env: Env, tmp_path: Path) -> None:
    import json

    spec_path = tmp_path / "openapi.json"
    spec_path.write_text(json.dumps(env.schema))
    package = f"sluice_client_{uuid.uuid4().hex[:8]}"
    _generate(spec_path, tmp_path / package)
    sys.path.insert(0, str(tmp_path))
    try:
        client_mod = importlib.import_module(package)
        list_accounts = importlib.import_module(f"{package}.api.accounts.list_accounts")
        retrieve_balance = importlib.import_module(f"{package}.api.reads.retrieve_balance")
        client = client_mod.AuthenticatedClient(
            base_url=f"http://{env.address}",
            token=env.key,
            raise_on_unexpected_status=True,
            headers={"Sluice-Min-Position": str(env.head)},
        )
        listed = list_accounts.sync(client=client, search="shop")
        assert type(listed).__name__ == "AccountList", listed
        assert [(a.id, a.name) for a in listed.data] == [("acct_shop", "Shop & Co")]
        assert listed.data[0].metadata.additional_properties == {"tier": "gold"}
        balance = retrieve_balance.sync(client=client, account_id="acct_shop")
        assert type(balance).__name__ == "Balance", balance
        pending = {(a.currency, a.amount) for a in balance.pending}
        direct = env.admin.get("/v1/balances/acct_shop").json()
        assert pending == {(a["currency"], a["amount"]) for a in direct["pending"]}
        assert pending and all(amount > 0 for _, amount in pending)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith(package)]:
            del sys.modules[name]
        shutil.rmtree(tmp_path / package, ignore_errors=True)
