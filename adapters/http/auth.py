"""Who may call what: one table (``POLICY``, route name → ``Access``) and one dependency.

Roles (adapters.keys): ``admin`` everything; ``finance`` the query routes and their CSV exports;
``auditor`` the query routes and the audit routes; ``account:<id>`` its own account's data only.
An account key asking about another account gets 404 (its existence is not revealed), a role on
a route it may not use gets 403, and a missing or unknown key gets 401.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from adapters.http.errors import AUTHENTICATION_ERROR, PERMISSION_ERROR, ApiError, not_found
from adapters.keys import Principal, authenticate

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
    "healthz": _access(PUBLIC),
    "stripe_webhook": _access(PUBLIC),  # authenticated by its Stripe-Signature instead
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
    # Queries: admin, finance, auditor; account keys for their own account.
    "retrieve_account": _access(*_QUERY, ACCOUNT, scope="path"),
    "retrieve_balance": _access(*_QUERY, ACCOUNT, scope="path"),
    "list_balance_transactions": _access(*_QUERY, ACCOUNT, scope="query"),
    "list_payouts": _access(*_QUERY, ACCOUNT, scope="query"),
    "retrieve_statement": _access(*_QUERY, ACCOUNT, scope="path"),
    "retrieve_revenue": _access(*_QUERY),
    # Audit: admin and auditor.
    "audit_balances": _access(ADMIN, AUDITOR),
    "audit_events": _access(ADMIN, AUDITOR),
}

bearer = HTTPBearer(auto_error=False, description="API key: Authorization: Bearer sk_sluice_…")


def _role_class(principal: Principal) -> str:
    return ACCOUNT if principal.account is not None else principal.role


def check(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal | None:
    """Authenticates and authorizes ``request`` against ``POLICY``; raises ``ApiError``."""
    route = request.scope.get("route")
    name = getattr(route, "name", None)
    access = POLICY.get(str(name))
    if access is None:  # a route without a policy is nobody's: fail closed
        raise ApiError(403, "permission_denied", "no access policy", type=PERMISSION_ERROR)
    if PUBLIC in access.roles:
        return None
    if credentials is None or not credentials.credentials:
        raise ApiError(
            401,
            "api_key_missing",
            "no API key: send Authorization: Bearer <key>",
            type=AUTHENTICATION_ERROR,
            headers={"WWW-Authenticate": "Bearer"},
        )
    view = request.app.state.sluice.view
    principal = authenticate(view, credentials.credentials)
    if principal is None:
        raise ApiError(
            401,
            "api_key_invalid",
            "invalid or revoked API key",
            type=AUTHENTICATION_ERROR,
            headers={"WWW-Authenticate": "Bearer"},
        )
    if _role_class(principal) not in access.roles:
        raise ApiError(
            403,
            "permission_denied",
            f"the {principal.role} role may not use this route",
            type=PERMISSION_ERROR,
        )
    if principal.account is not None:
        if access.scope == "path":
            asked = request.path_params.get(access.param)
        else:
            asked = request.query_params.get(access.param)
        if asked is not None and asked != principal.account:
            raise not_found(f"no such account: {asked}", access.param)
    return principal


def authorize(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal | None:
    """The single dependency every route goes through (see ``POLICY``)."""
    principal = check(request, credentials)
    request.state.principal = principal
    request.state.authorized = True
    return principal


def authorize_late(request: Request) -> None:
    """For requests rejected before dependencies ran: same check, from the raw header."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    credentials = (
        HTTPAuthorizationCredentials(scheme=scheme, credentials=token.strip())
        if scheme.lower() == "bearer" and token.strip()
        else None
    )
    check(request, credentials)


def account_filter(request: Request, asked: str | None) -> str | None:
    """The account a list is confined to: the key's own for account keys, else the filter."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is not None and principal.account is not None:
        return principal.account
    return asked
