"""The auditor's proof routes (adapters/http/proofs.py) on a real server, SQLite store.

``mount`` does what create_app will do once the router is mounted there (the lines are in
adapters/http/proofs.py's docstring): the routes join the policy table, the authentication
middleware's routes and the app, with the same dependencies as the other GET routes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI

from adapters.http import errors, proofs
from adapters.http.app import create_app
from adapters.http.auth import POLICY, Access, Authenticate, authorize
from adapters.http.support import reject_unknown_query
from adapters.proof_verifier import verify_document
from tests.integration.http_support import Client, new_key, running
from tests.integration.merkle_support import Books, books_on

AUDITORS = frozenset({"admin", "auditor"})


def mount(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in proofs.ROUTE_NAMES:
        monkeypatch.setitem(POLICY, name, Access(AUDITORS))
    for middleware in app.user_middleware:
        if middleware.cls is Authenticate:  # type: ignore[comparison-overlap]
            routes: list[Any] = middleware.kwargs["routes"]  # type: ignore[assignment]
            routes.extend(proofs.router.routes)
    app.include_router(
        proofs.router,
        dependencies=[Depends(authorize), Depends(reject_unknown_query)],
        responses=errors.COMMON_ERRORS,
    )


@pytest.fixture
def served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Books, dict[str, Client]]]:
    with books_on("sqlite", tmp_path) as books:
        for op, amount in (("charge", 5_000), ("transfer", 1_000), ("topup", 300)):
            books.apply(op, amount)
        app = create_app(books.settings, ledger=books.ledger, view=books.view, run_projector=False)
        mount(app, monkeypatch)
        roles = ("admin", "auditor", "finance", "account:acct_a")
        keys = {role: new_key(books.settings, role) for role in roles}
        with running(app) as address:
            clients = {role: Client(address, key) for role, key in keys.items()}
            clients["none"] = Client(address)
            yield books, clients


def ok(reply: Any) -> Any:
    assert reply.status == 200, reply.text
    return reply.json()


def test_checkpoints_and_every_proof_verify_offline(
    served: tuple[Books, dict[str, Client]],
) -> None:
    books, clients = served
    auditor = clients["auditor"]
    assert ok(auditor.get("/v1/audit/checkpoints")) == {
        "object": "list", "data": [], "has_more": False, "url": "/v1/audit/checkpoints",
    }  # fmt: skip
    reply = auditor.get("/v1/audit/proofs/inclusion?position=1")
    assert reply.status == 404 and reply.error["code"] == "resource_missing"
    first = books.checkpointer.checkpoint()
    books.apply("charge", 2_000)
    second = books.checkpointer.checkpoint()
    assert len(ok(auditor.get("/v1/audit/checkpoints?limit=100"))["data"]) == 2
    page = ok(auditor.get("/v1/audit/checkpoints?limit=1"))
    assert [c["tree_size"] for c in page["data"]] == [second.tree_size] and page["has_more"]
    page = ok(auditor.get(f"/v1/audit/checkpoints?starting_after={second.tree_size}"))
    assert page["data"] == [first.as_json()] and not page["has_more"]
    key = books.key.public_key()
    for path in (
        "/v1/audit/proofs/inclusion?position=2",
        f"/v1/audit/proofs/inclusion?position=2&checkpoint={first.tree_size}",
        f"/v1/audit/proofs/inclusion?position={books.head()}",
        "/v1/audit/proofs/accounts/acct_platform",
        "/v1/audit/proofs/accounts/acct_a?as_of=1893456000",
        f"/v1/audit/proofs/consistency?first={first.tree_size}&second={second.tree_size}",
        f"/v1/audit/proofs/consistency?first={second.tree_size}&second={second.tree_size}",
    ):
        document = ok(clients["admin"].get(path))
        assert verify_document(json.loads(json.dumps(document)), key), path


def test_only_auditors_and_admins_and_errors_are_envelopes(
    served: tuple[Books, dict[str, Client]],
) -> None:
    books, clients = served
    books.checkpointer.checkpoint()
    path = "/v1/audit/proofs/inclusion?position=2"
    for role, status in (("finance", 403), ("account:acct_a", 403), ("none", 401)):
        reply = clients[role].get(path)
        assert reply.status == status, (role, reply.text)
        assert reply.error["type"] in ("permission_error", "authentication_error")
    auditor = clients["auditor"]
    for bad, status, code in (
        ("/v1/audit/proofs/inclusion?position=0", 400, "parameter_invalid"),
        ("/v1/audit/proofs/inclusion?position=x", 400, "parameter_invalid"),
        ("/v1/audit/proofs/inclusion", 400, "parameter_missing"),
        ("/v1/audit/proofs/inclusion?position=2&size=3", 400, "parameter_unknown"),
        ("/v1/audit/proofs/inclusion?position=9999", 400, "position_not_covered"),
        ("/v1/audit/proofs/inclusion?position=2&checkpoint=1", 404, "resource_missing"),
        ("/v1/audit/proofs/accounts/acct_nobody", 404, "resource_missing"),
        ("/v1/audit/proofs/consistency?first=5&second=2", 400, "audit_error"),
        ("/v1/audit/checkpoints?limit=1000", 400, "parameter_invalid"),
    ):
        reply = auditor.get(bad)
        assert (reply.status, reply.error["code"]) == (status, code), (bad, reply.text)
