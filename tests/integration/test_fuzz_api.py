"""Schemathesis against the running app's own OpenAPI: every operation, as every role (admin,
finance, auditor, an account key for its own account and for another's, no key, a bad key),
with schema-conforming (positive) and schema-violating (negative) inputs, over real HTTP on
uvicorn and PostgreSQL. Counted, and required to be zero: server errors (5xx), responses that
do not match the schema (status code, content type, body), and refused requests (4xx) that
recorded anything (the event log's head, the webhook inbox, the API keys). Deterministic
(derandomized) and bounded: about 3,000 requests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from adapters.bootstrap import bootstrap, init_database, read_model
from adapters.http.app import create_app
from adapters.keys import create_key
from adapters.settings import Settings
from tests.integration.http_support import Client, running

pytestmark = [pytest.mark.postgres, pytest.mark.fuzz]

# Examples per operation: (positive, negative), per role. The admin gets the most: its
# requests go deepest (past authorization, into validation and the ledger).
EXAMPLES = {
    "admin": (30, 20),
    "finance": (6, 4),
    "auditor": (6, 4),
    "own": (8, 4),
    "other": (6, 4),
    "none": (4, 2),
    "bad": (4, 2),
}
BAD_KEY = "sk_sluice_" + "z" * 43
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
REQUEST_TIMEOUT_S = 30


@dataclass
class Tally:
    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    refused_writes: list[str] = field(default_factory=list)


@dataclass
class Api:
    base_url: str
    keys: dict[str, str | None]
    snapshot: Any


@pytest.fixture(scope="module")
def api(postgres_url: str) -> Iterator[Api]:
    import psycopg
    from psycopg import sql

    schema = f"fuzz_{uuid.uuid4().hex[:10]}"
    settings = Settings(
        database_url=f"{postgres_url}{'&' if '?' in postgres_url else '?'}schema={schema}",
        stripe_webhook_secret="whsec_fuzz_api",
        http_min_position_wait_s=0.05,  # a fuzzed Sluice-Min-Position must not stall the run
    )
    init_database(settings)
    ledger = bootstrap(settings)
    view = read_model(settings)
    events_table = ledger.recorder.events_table_name  # type: ignore[attr-defined]
    probe = sql.SQL(
        "SELECT (SELECT coalesce(max(notification_id), 0) FROM {s}.{e}),"
        " (SELECT count(*) FROM {s}.sl_stripe_events), (SELECT count(*) FROM {s}.rm_api_keys)"
    ).format(s=sql.Identifier(schema), e=sql.Identifier(events_table))
    conn = psycopg.connect(postgres_url.split("?", 1)[0], autocommit=True)
    try:
        keys: dict[str, str | None] = {
            "admin": create_key(view, "admin")[1],
            "finance": create_key(view, "finance")[1],
            "auditor": create_key(view, "auditor")[1],
            "own": create_key(view, "account:acct_fz")[1],
            "other": create_key(view, "account:acct_other")[1],
            "none": None,
            "bad": BAD_KEY,
        }
        app = create_app(settings, ledger=ledger, view=view, run_projector=False)
        with running(app) as address:
            admin = Client(address, keys["admin"])
            for body in ({"id": "acct_platform", "kind": "platform"}, {"id": "acct_fz"}):
                assert admin.post("/v1/accounts", body).status == 200
            topup = {"account": "acct_fz", "amount": 5_000, "currency": "usd"}
            assert admin.post("/v1/topups", topup).status == 200

            def snapshot() -> tuple[Any, ...]:
                row = conn.execute(probe).fetchone()
                assert row is not None
                return tuple(row)

            yield Api(f"http://{address}", keys, snapshot)
    finally:
        conn.close()
        ledger.close()
        view.datastore.close()  # type: ignore[attr-defined]
        with psycopg.connect(postgres_url.split("?", 1)[0], autocommit=True) as admin_conn:
            admin_conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def _fuzz(api: Api, operation: Any, role: str, mode: GenerationMode, n: int, tally: Tally) -> None:
    key = api.keys[role]
    headers = {"Authorization": f"Bearer {key}"} if key else {}

    @settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # count, do not shrink
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        before = api.snapshot()
        if role == "none":
            for name in list(case.headers or {}):
                if name.lower() == "authorization":
                    del case.headers[name]
        response = case.call(base_url=api.base_url, headers=headers, timeout=REQUEST_TIMEOUT_S)
        after = api.snapshot()
        label = f"{role} {mode.value} {operation.label} -> {response.status_code}"
        tally.requests += 1
        tally.by_status[response.status_code] = tally.by_status.get(response.status_code, 0) + 1
        if response.status_code >= 500:
            tally.server_errors.append(f"{label}: {response.text[:300]}")
        if response.status_code >= 400 and after != before:
            tally.refused_writes.append(f"{label}: {before} -> {after}")
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as failure:  # a check failed (a BaseExceptionGroup)
            if response.status_code < 500:
                tally.mismatches.append(f"{label}: {str(failure)[:400]}")

    run()


def test_every_operation_as_every_role_never_5xx_and_refusals_record_nothing(api: Api) -> None:
    schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]
    tally = Tally()
    started = time.monotonic()
    for operation in operations:
        for role, (positive, negative) in EXAMPLES.items():
            _fuzz(api, operation, role, GenerationMode.POSITIVE, positive, tally)
            if operation.method.upper() != "GET" or operation.query or operation.path_parameters:
                _fuzz(api, operation, role, GenerationMode.NEGATIVE, negative, tally)
    elapsed = time.monotonic() - started
    print(
        f"\n[fuzz] schemathesis: {tally.requests} requests over {len(operations)} operations"
        f" x {len(EXAMPLES)} roles in {elapsed:.0f} s; 5xx: {len(tally.server_errors)};"
        f" schema mismatches: {len(tally.mismatches)}; writes by refused requests:"
        f" {len(tally.refused_writes)}; statuses: {dict(sorted(tally.by_status.items()))}"
    )
    for line in (*tally.server_errors, *tally.refused_writes, *tally.mismatches):
        print(
            "[fuzz]", line.split(":")[0], "|", line.split("Received:")[-1][:20].replace("\n", " ")
        )
    assert not tally.server_errors, tally.server_errors[:10]
    assert not tally.refused_writes, tally.refused_writes[:10]
    assert not tally.mismatches, tally.mismatches[:10]
    assert tally.requests >= 1_500
