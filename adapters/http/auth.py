"""Who may call what: one table (``POLICY``, route name → ``Access``), checked by one ASGI
middleware (``Authenticate``) before anything reads the request's body.

Roles (adapters.keys): ``admin`` everything; ``finance`` the query routes and their CSV exports;
``auditor`` the query routes and the audit routes; ``account:<id>`` its own account's data only.
An account key asking about another account gets 404 (its existence is not revealed), a role on
a route it may not use gets 403, and a missing or unknown key gets 401.

Keys are checked against ``KeyCache`` (in memory, reloaded in the background): checking a key,
good or bad, never waits on the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers, QueryParams
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.http.errors import (
    AUTHENTICATION_ERROR,
    PERMISSION_ERROR,
    ApiError,
    envelope,
    not_found,
)
from adapters.keys import KeyCache, Principal

ADMIN, FINANCE, AUDITOR, ACCOUNT = "admin", "finance", "auditor", "account"
PUBLIC = "public"


@dataclass(frozen=True)
class Access:
    """Roles allowed on a route. ``account`` keys also need ``scope``: where the route names the
    account it is about (a path parameter, or a query filter forced to the key's account)."""

    roles: frozenset[str]
    scope: Literal["path", "query"] | None = None
    param: str = "account_id"


def _access(*roles: str, scope: Literal["path", "query"] | None = None, param: str = "") -> Access:
    if ACCOUNT in roles and scope is None:
        raise ValueError("account keys need a scope")
    default = "account_id" if scope == "path" else "account"
    return Access(frozenset(roles), scope, param or default)


_WRITE = _access(ADMIN)
_QUERY = (ADMIN, FINANCE, AUDITOR)

POLICY: dict[str, Access] = {
    "healthz": _access(PUBLIC),  # liveness: says "ok" and nothing else
    "readyz": _access(PUBLIC),  # readiness: whether the store answers, nothing more
    "stripe_webhook": _access(PUBLIC),  # authenticated by its Stripe-Signature instead
    # Operational details (log head, projection positions and lag).
    "service_status": _access(ADMIN, FINANCE, AUDITOR),
    # Writes: admin only.
    "create_account": _WRITE,
    "update_account": _WRITE,
    "create_payment": _WRITE,
    "create_refund": _WRITE,
    "create_transfer": _WRITE,
    "create_transfer_reversal": _WRITE,
    "create_payout": _WRITE,
    "update_payout_status": _WRITE,
    "create_dispute": _WRITE,
    "close_dispute": _WRITE,
    "release_balance": _WRITE,
    "create_topup": _WRITE,
    # API keys: admin only (the secret of a new key is shown once).
    "list_api_keys": _access(ADMIN),
    "create_api_key": _access(ADMIN),
    "revoke_api_key": _access(ADMIN),
    "rotate_api_key": _access(ADMIN),
    # Queries: admin, finance, auditor; account keys for their own account.
    "list_accounts": _access(*_QUERY, ACCOUNT, scope="query"),  # an account key: its own
    "retrieve_tax_report": _access(*_QUERY, ACCOUNT, scope="query"),
    "retrieve_account": _access(*_QUERY, ACCOUNT, scope="path"),
    "retrieve_balance": _access(*_QUERY, ACCOUNT, scope="path"),
    "list_balance_transactions": _access(*_QUERY, ACCOUNT, scope="query"),
    "list_payouts": _access(*_QUERY, ACCOUNT, scope="query"),
    "list_payments": _access(*_QUERY, ACCOUNT, scope="query"),
    "retrieve_statement": _access(*_QUERY, ACCOUNT, scope="path"),
    "retrieve_revenue": _access(*_QUERY),
    "retrieve_balance_change_report": _access(*_QUERY, ACCOUNT, scope="query"),
    "list_seller_summaries": _access(*_QUERY, ACCOUNT, scope="query"),
    "retrieve_payout_reconciliation_report": _access(*_QUERY, ACCOUNT, scope="query"),
    # Reconciliation: breaks, clearing books, balance agreement (issue 14).
    "list_reconciliation_breaks": _access(*_QUERY),
    "reconciliation_balances": _access(*_QUERY),
    "reconciliation_clearing": _access(*_QUERY),
    # Risk: the platform's exposure per seller (issue 17).
    "retrieve_risk_exposure": _access(*_QUERY),
    # Audit: admin and auditor.
    "audit_balances": _access(ADMIN, AUDITOR),
    "audit_events": _access(ADMIN, AUDITOR),
    "audit_checkpoints": _access(ADMIN, AUDITOR),
    "audit_inclusion_proof": _access(ADMIN, AUDITOR),
    "audit_account_proof": _access(ADMIN, AUDITOR),
    "audit_consistency_proof": _access(ADMIN, AUDITOR),
}

bearer = HTTPBearer(auto_error=False, description="API key: Authorization: Bearer sk_sluice_…")


def _role_class(principal: Principal) -> str:
    return ACCOUNT if principal.account is not None else principal.role


def _missing_key() -> ApiError:
    return ApiError(
        401,
        "api_key_missing",
        "no API key: send Authorization: Bearer <key>",
        type=AUTHENTICATION_ERROR,
        headers={"WWW-Authenticate": "Bearer"},
    )


def _invalid_key() -> ApiError:
    return ApiError(
        401,
        "api_key_invalid",
        "invalid or revoked API key",
        type=AUTHENTICATION_ERROR,
        headers={"WWW-Authenticate": "Bearer"},
    )


def bearer_token(headers: Headers) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def access_for(name: str | None) -> Access:
    access = POLICY.get(str(name))
    if access is None:  # a route without a policy is nobody's: fail closed
        raise ApiError(403, "permission_denied", "no access policy", type=PERMISSION_ERROR)
    return access


def permit(
    access: Access,
    principal: Principal,
    path_params: dict[str, Any],
    query_params: QueryParams,
) -> None:
    """Raises ``ApiError`` unless ``principal`` may use a route with ``access`` as asked."""
    if _role_class(principal) not in access.roles:
        raise ApiError(
            403,
            "permission_denied",
            f"the {principal.role} role may not use this route",
            type=PERMISSION_ERROR,
        )
    if principal.account is not None:
        asked = (path_params if access.scope == "path" else query_params).get(access.param)
        if asked is not None and asked != principal.account:
            raise not_found(f"no such account: {asked}", access.param)


def match_route(routes: Sequence[APIRoute], scope: Scope) -> tuple[APIRoute, dict[str, Any]] | None:
    """The API route ``scope`` will be served by, with its path parameters (None: no route, or
    a wrong method: the router answers those 404/405 without reading the body)."""
    for route in routes:
        match, child = route.matches(scope)
        if match == Match.FULL:
            return route, dict(child.get("path_params", {}))
    return None


class Authenticate:
    """Authenticates and authorizes every request to an API route before its body is read,
    from the headers, the path and the query alone. The principal goes into the request's
    state for the routes (``authorize``)."""

    def __init__(self, app: ASGIApp, fastapi_app: Any, routes: Sequence[APIRoute]) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.routes = list(routes)  # the routers' own routes, in the order they are included

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = match_route(self.routes, scope)
        if found is not None:
            route, path_params = found
            try:
                principal = await self.check(scope, route.name, path_params)
            except ApiError as denied:
                response = envelope(
                    denied.status, denied.type, denied.code, denied.message, denied.param,
                    denied.headers,
                )  # fmt: skip
                await response(scope, receive, send)
                return
            state = scope.setdefault("state", {})
            state["principal"] = principal
            state["authorized"] = True
        await self.app(scope, receive, send)

    async def check(self, scope: Scope, name: str, path_params: dict[str, Any]) -> Principal | None:
        return await check_request(self.fastapi_app, scope, name, path_params)


async def check_request(
    app: Any, scope: Scope, name: str, path_params: dict[str, Any]
) -> Principal | None:
    """Authenticates and authorizes one request from its headers, path and query (no body)."""
    access = access_for(name)
    if PUBLIC in access.roles:
        return None
    token = bearer_token(Headers(scope=scope))
    if token is None:
        raise _missing_key()
    keys: KeyCache = app.state.sluice.keys
    principal = await keys.lookup(token)
    if principal is None:
        raise _invalid_key()
    permit(access, principal, path_params, QueryParams(scope.get("query_string", b"")))
    return principal


async def authorize(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal | None:
    """The dependency every route declares (it documents the bearer scheme in OpenAPI). The
    check normally ran in ``Authenticate``, before the body was read; for a route that
    middleware does not know (a router included without it) it runs here, the same way."""
    if not getattr(request.state, "authorized", False):
        route = request.scope.get("route")
        principal = await check_request(
            request.app, request.scope, str(getattr(route, "name", None)), request.path_params
        )
        request.state.principal = principal
        request.state.authorized = True
        return principal
    found: Principal | None = request.state.principal
    return found


async def authorize_late(request: Request) -> None:
    """For requests rejected before their dependencies ran (a malformed body on a route that
    ``Authenticate`` did not see): the same check, so 401/403 still come first."""
    if not getattr(request.state, "authorized", False):
        route = request.scope.get("route")
        await check_request(
            request.app, request.scope, str(getattr(route, "name", None)), request.path_params
        )


def account_filter(request: Request, asked: str | None) -> str | None:
    """The account a list is confined to: the key's own for account keys, else the filter."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is not None and principal.account is not None:
        return principal.account
    return asked
