"""GET routes for auditors: signed checkpoints of the Merkle log and proofs against them.

Every answer is a proof file (``adapters.audit_format``) that ``python -m
adapters.proof_verifier FILE --public-key KEY`` verifies offline. The routes only read: making
a checkpoint needs the signing key, which stays with ``sluice audit checkpoint``.

Mounting (``adapters/http/app.py``, ``create_app``): add ``proofs.router`` to the ``routers``
tuple the ``Authenticate`` middleware matches, and
``app.include_router(proofs.router, dependencies=guarded, responses=errors.COMMON_ERRORS)``;
``adapters/http/auth.py`` ``POLICY`` needs ``_access(ADMIN, AUDITOR)`` for each name in
``ROUTE_NAMES``. The router also checks the role itself (``require_auditor``), so a mount that
forgets the policy still refuses everyone else.
"""

from __future__ import annotations

import threading
import weakref
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from adapters.audit_log import LIST_LIMIT_MAX, AuditError, MerkleStore
from adapters.audit_proofs import account_proof, consistency_proof, inclusion_proof
from adapters.http.errors import PERMISSION_ERROR, ApiError
from adapters.http.models import ID_PATTERN, UNIX_SECONDS_MAX
from adapters.http.support import Sluice, ctx, instant
from adapters.keys import Principal
from projections.store import ReadModel

AUDIT_ROLES = frozenset({"admin", "auditor"})
ROUTE_NAMES = (
    "audit_checkpoints",
    "audit_inclusion_proof",
    "audit_account_proof",
    "audit_consistency_proof",
)
SIZE_MAX = 2**63 - 1


def require_auditor(request: Request) -> None:
    """Only the admin and auditor roles (the policy table says the same; this fails closed)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None or principal.role not in AUDIT_ROLES:
        raise ApiError(
            403,
            "permission_denied",
            "only the admin and auditor roles may read proofs",
            type=PERMISSION_ERROR,
        )


router = APIRouter(tags=["audit proofs"], dependencies=[Depends(require_auditor)])

Ctx = Annotated[Sluice, Depends(ctx)]
Size = Annotated[int | None, Query(ge=0, le=SIZE_MAX, description="a checkpoint's tree size")]
Position = Annotated[int, Query(ge=1, le=SIZE_MAX, description="an event's log position")]
AccountId = Annotated[str, Path(min_length=1, max_length=255, pattern=ID_PATTERN)]
AsOf = Annotated[int | None, Query(ge=0, le=UNIX_SECONDS_MAX, description="unix seconds")]

_ready: weakref.WeakSet[Any] = weakref.WeakSet()  # read models whose audit tables exist
_ready_lock = threading.Lock()


def _store(view: ReadModel) -> MerkleStore:
    """The Merkle store; its tables are created (IF NOT EXISTS) once per read model."""
    with _ready_lock:
        if view in _ready:
            return MerkleStore(view, create_tables=False)
        store = MerkleStore(view)
        _ready.add(view)
        return store


def _answer(call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return call(*args, **kwargs)
    except AuditError as error:
        raise ApiError(error.status, error.code, error.message) from None


@router.get(
    "/v1/audit/checkpoints",
    name="audit_checkpoints",
    summary="Signed checkpoints of the event log, newest first",
)
def list_checkpoints(
    request: Request,
    s: Ctx,
    limit: Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX)] = 10,
    starting_after: Annotated[
        int | None, Query(ge=0, le=SIZE_MAX, description="a tree size: older checkpoints")
    ] = None,
) -> Any:
    found = _answer(_store(s.view).checkpoints, limit + 1, starting_after)
    return {
        "object": "list",
        "data": [checkpoint.as_json() for checkpoint in found[:limit]],
        "has_more": len(found) > limit,
        "url": request.url.path,
    }


@router.get(
    "/v1/audit/proofs/inclusion",
    name="audit_inclusion_proof",
    summary="An event and its inclusion proof against a checkpoint (default: the latest)",
)
def get_inclusion_proof(s: Ctx, position: Position, checkpoint: Size = None) -> Any:
    return _answer(inclusion_proof, s.ledger, _store(s.view), position, checkpoint)


@router.get(
    "/v1/audit/proofs/accounts/{account_id}",
    name="audit_account_proof",
    summary="Every event behind an account's balances as of an instant, each with its proof",
)
def get_account_proof(
    s: Ctx, account_id: AccountId, as_of: AsOf = None, checkpoint: Size = None
) -> Any:
    return _answer(account_proof, s.ledger, _store(s.view), account_id, instant(as_of), checkpoint)


@router.get(
    "/v1/audit/proofs/consistency",
    name="audit_consistency_proof",
    summary="Proof that a newer checkpoint extends an older one (RFC 9162 §2.1.4)",
)
def get_consistency_proof(
    s: Ctx,
    first: Annotated[int, Query(ge=0, le=SIZE_MAX, description="the older tree size")],
    second: Annotated[int, Query(ge=0, le=SIZE_MAX, description="the newer tree size")],
) -> Any:
    return _answer(consistency_proof, _store(s.view), first, second)
