"""Admin routes for API keys: list, create, revoke, rotate (``adapters.keys`` does the work;
``sluice keys`` is the same from the command line). Admin keys only (``auth.POLICY``).

A key's secret is in the answer of the request that created it and nowhere else: only its hash
is stored. So a POST cannot be replayed the Stripe way (the first answer again): a new key's id
derives from the request's ``Idempotency-Key`` instead, and a second request with the same key
creates nothing and answers 409 naming the key made the first time (revoke it if its secret
was lost). Revoking is idempotent by nature.

Revoked keys fail at once on this server (its key cache reloads before the answer) and within
``SLUICE_HTTP_KEY_REFRESH_S`` on the others.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from adapters.http.errors import ApiError
from adapters.http.models import ID_PATTERN, ApiKeyCreate, ApiKeyRotate
from adapters.http.support import Sluice, ctx, idempotency_key
from adapters.keys import KeyCache, KeyInfo, KeyRefused, RoleError, list_keys

log = logging.getLogger("sluice.keys")

router = APIRouter(tags=["keys"])

Key = Annotated[str, Depends(idempotency_key)]
Ctx = Annotated[Sluice, Depends(ctx)]
KeyId = Annotated[
    str, Path(min_length=1, max_length=64, pattern=ID_PATTERN, description="the key's id, key_…")
]
RELOAD_POLL_S = 0.01


def key_id_for(idempotency_key: str) -> str:
    """The id of the key a request with this Idempotency-Key creates (same shape as a random
    one: ``key_`` and 16 hex digits)."""
    return "key_" + hashlib.sha256(f"api-key:{idempotency_key}".encode()).hexdigest()[:16]


def _state(info: KeyInfo, now: float) -> str:
    if not info.active(now):
        return "revoked"
    return "grace" if info.revoked is not None else "active"


def _object(info: KeyInfo) -> dict[str, Any]:
    return {
        "object": "api_key",
        "id": info.id,
        "role": info.role,
        "label": info.label,
        "created": info.created,
        "revoked": info.revoked,
        "replaced_by": info.replaced_by,
        "state": _state(info, time.time()),
    }


def _find(s: Sluice, key_id: str) -> KeyInfo | None:
    return next((info for info in list_keys(s.view) if info.id == key_id), None)


def _not_found(key_id: str) -> ApiError:
    return ApiError(404, "resource_missing", f"no API key {key_id!r}", param="id")


def _reused(idempotency_key: str, made: str) -> ApiError:
    return ApiError(
        409,
        "idempotency_conflict",
        f"the Idempotency-Key {idempotency_key!r} already made {made}; its secret was shown"
        " once and is not stored: revoke it if it was lost, and use a new Idempotency-Key",
        param="Idempotency-Key",
    )


def _reload_now(s: Sluice) -> None:
    """Waits (at most ``KeyCache.LOAD_TIMEOUT_S``) until this server's key cache reloaded after
    the change: a revoked key is refused here from the next request on."""
    if s.keys is None or not s.keys.running:
        return
    seq = s.keys.request_reload()
    end = time.monotonic() + KeyCache.LOAD_TIMEOUT_S
    while not s.keys.reloaded(seq) and time.monotonic() < end:
        time.sleep(RELOAD_POLL_S)


def _actor(request: Request) -> str:
    principal = getattr(request.state, "principal", None)
    return str(getattr(principal, "key_id", "?"))


@router.get("/v1/keys", name="list_api_keys", summary="List API keys (never a key itself)")
def list_api_keys(s: Ctx) -> Any:
    data = [_object(info) for info in list_keys(s.view)]
    return {"object": "list", "data": data, "has_more": False, "url": "/v1/keys"}


@router.post("/v1/keys", name="create_api_key", summary="Create an API key (shown once)")
def create_api_key(body: ApiKeyCreate, key: Key, s: Ctx, request: Request) -> Any:
    from adapters.keys import create_key

    wanted = key_id_for(key)
    if _find(s, wanted) is not None:
        raise _reused(key, wanted)
    try:
        key_id, secret = create_key(s.view, body.role, body.label, key_id=wanted)
    except RoleError as error:
        param = "label" if "label" in str(error) else "role"
        raise ApiError(400, "parameter_invalid", str(error), param=param) from None
    except Exception:
        if _find(s, wanted) is not None:  # a concurrent request with the same key won
            raise _reused(key, wanted) from None
        raise
    info = _find(s, key_id)
    if info is None:  # read back in a new transaction: it was just committed
        raise _not_found(key_id)
    log.info("api key created", extra={"key_id": key_id, "by": _actor(request)})
    return _object(info) | {"secret": secret, "replaces": None}


@router.post("/v1/keys/{key_id}/revoke", name="revoke_api_key", summary="Revoke an API key now")
def revoke_api_key(key_id: KeyId, key: Key, s: Ctx, request: Request) -> Any:
    from adapters.keys import revoke_key

    try:
        info = revoke_key(s.view, key_id)
    except KeyRefused:
        raise _not_found(key_id) from None
    _reload_now(s)
    log.info("api key revoked", extra={"key_id": key_id, "by": _actor(request)})
    return _object(info)


@router.post(
    "/v1/keys/{key_id}/rotate",
    name="rotate_api_key",
    summary="Replace an API key: a new one (shown once); the old one stops after the grace",
)
def rotate_api_key(key_id: KeyId, body: ApiKeyRotate, key: Key, s: Ctx, request: Request) -> Any:
    from adapters.keys import rotate_key

    old = _find(s, key_id)
    if old is None:
        raise _not_found(key_id)
    wanted = key_id_for(key)
    if old.replaced_by == wanted or _find(s, wanted) is not None:
        raise _reused(key, wanted)
    try:
        info, secret = rotate_key(s.view, key_id, body.grace, new_id=wanted)
    except KeyRefused as error:
        raise ApiError(409, "api_key_not_rotatable", str(error), param="id") from None
    except Exception:
        if _find(s, wanted) is not None:  # a concurrent request with the same key won
            raise _reused(key, wanted) from None
        raise
    _reload_now(s)
    log.info(
        "api key rotated",
        extra={
            "key_id": key_id,
            "new_key_id": info.id,
            "grace_s": body.grace,
            "by": _actor(request),
        },
    )
    return _object(info) | {"secret": secret, "replaces": key_id}
