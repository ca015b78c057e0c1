"""Reconciliation's routes (admin, finance and auditor keys): the breaks between Sluice and Stripe
(a page of JSON, or every matching break as CSV), the clearing books, and the balance agreement
at a cut-off (the ledger's books beside Stripe's ``GET /v1/balance``, read now)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field

from adapters.http.errors import API_ERROR, ApiError, ErrorEnvelope
from adapters.http.models import ID_PATTERN, TEXT_PATTERN, ListReply, Reply
from adapters.http.support import (
    Format,
    Sluice,
    csv_response,
    ctx,
    json_response,
    list_response,
    wants_csv,
)
from adapters.stripe.gateway import GatewayError
from projections import reconciliation as recon_view
from projections.queries import LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX

router = APIRouter(tags=["reconciliation"])

Ctx = Annotated[Sluice, Depends(ctx)]
Account = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=255,
        pattern=TEXT_PATTERN,
        description="an account id (acct_…): only its breaks or balances",
    ),
]
Cursor = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=255,
        pattern=ID_PATTERN,
        description="a break's id: the page after it (the previous page's last id)",
    ),
]
BreakName = Literal[
    "missing_in_ledger",
    "missing_at_stripe",
    "amount_mismatch",
    "fee_mismatch",
    "availability_mismatch",
    "status_mismatch",
]
BREAK_COLUMNS = (
    "id",
    "account",
    "currency",
    "name",
    "status",
    "stripe_object",
    "stripe_ref",
    "ledger_ref",
    "difference_amount",
    "difference_fee",
    "difference_net",
    "clearing",
    "first_seen",
    "resolved_at",
    "resolution",
    "detail",
)
AGREEMENT_COLUMNS = (
    "account",
    "currency",
    "ledger_pending",
    "ledger_available",
    "stripe_pending",
    "stripe_available",
    "clearing",
    "agrees",
)
BreakStatus = Literal["open", "resolved"]


class ReconciliationBreak(Reply):
    id: str
    object: Literal["reconciliation_break"]
    account: str
    currency: str
    name: BreakName
    status: BreakStatus
    stripe_object: str = Field(description="the Stripe object the balance transactions belong to")
    stripe_ref: str = Field(description="Stripe's balance transaction ids (and source)")
    ledger_ref: str = Field(description="the ledger's journal entry ids")
    difference: dict[str, int] = Field(description="amount, fee, net: Stripe minus the ledger")
    detail: str
    clearing: int = Field(description="what the break holds in the clearing book, minor units")
    first_seen: int = Field(description="unix seconds")
    resolved_at: int | None = Field(description="unix seconds; null while open")
    resolution: str | None = Field(description="refetched (repaired from Stripe) or matched")


class ReconciliationBreakList(ListReply):
    data: list[ReconciliationBreak]


class AgreementRow(Reply):
    account: str
    currency: str
    ledger_pending: int
    ledger_available: int
    stripe_pending: int
    stripe_available: int
    clearing: int = Field(description="the account's clearing book: what open breaks hold")
    agrees: bool


class ReconciliationBalances(Reply):
    object: Literal["reconciliation_balances"]
    cutoff: int = Field(description="unix seconds: the instant both sides were read at")
    agrees: bool
    data: list[AgreementRow]


class ClearingBook(Reply):
    account: str
    currency: str
    amount: int = Field(description="minor units; zero when no break of the account is open")


class ClearingList(Reply):
    object: Literal["list"]
    has_more: bool
    data: list[ClearingBook]


CSV_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON, or CSV with `Accept: text/csv` or `?format=csv`",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }
}


STRIPE_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorEnvelope, "description": "stripe_not_configured: no Stripe key is set"},
    502: {"model": ErrorEnvelope, "description": "stripe_error: Stripe refused or was unreachable"},
}


def _flat(brk: dict[str, Any]) -> dict[str, Any]:
    difference = brk["difference"]
    row = {k: v for k, v in brk.items() if k in BREAK_COLUMNS}
    for part in ("amount", "fee", "net"):
        row[f"difference_{part}"] = difference.get(part, 0)
    return {column: row.get(column) for column in BREAK_COLUMNS}


@router.get(
    "/v1/reconciliation/breaks",
    name="list_reconciliation_breaks",
    response_model=ReconciliationBreakList,
    responses=CSV_OK,
    summary="Breaks between Sluice and Stripe, newest first",
)
def list_reconciliation_breaks(
    request: Request,
    s: Ctx,
    status: Annotated[BreakStatus | None, Query(description="open or resolved")] = None,
    name: Annotated[BreakName | None, Query(description="the break's name")] = None,
    account: Account = None,
    limit: Annotated[
        int, Query(ge=1, le=LIST_LIMIT_MAX, description="page size, 1 to 100")
    ] = LIST_LIMIT_DEFAULT,
    starting_after: Cursor = None,
    format: Format = None,
) -> Any:
    """JSON: one page, newest first. CSV: every matching break (bounded), newest first."""
    position = s.read_position(request, ["reconciliation"])
    if wants_csv(request, format):
        rows = recon_view.all_breaks(s.view, status=status, account=account, name=name)
        return csv_response([_flat(b) for b in rows], BREAK_COLUMNS, position)
    page = recon_view.list_breaks(
        s.view,
        status=status,
        account=account,
        name=name,
        limit=limit,
        starting_after=starting_after,
    )
    return list_response(request, page.data, page.has_more, position, False, BREAK_COLUMNS)


@router.get(
    "/v1/reconciliation/balances",
    name="reconciliation_balances",
    response_model=ReconciliationBalances,
    responses=CSV_OK | STRIPE_ERRORS,
    summary="Per account and currency: the ledger's books beside Stripe's balance, now",
)
def reconciliation_balances(
    request: Request, s: Ctx, account: Account = None, format: Format = None
) -> Any:
    """Reads Stripe's ``GET /v1/balance`` of each account (the platform and every connected
    account Stripe lists, or ``account``) at one cut-off, beside the ledger's pending and
    available and the account's clearing book."""
    from adapters.bootstrap import stripe_gateway
    from adapters.reconcile import balance_agreement, known_accounts

    if not s.settings.stripe_api_key:
        raise ApiError(
            409, "stripe_not_configured", "no Stripe key is configured (SLUICE_STRIPE_API_KEY)"
        )
    gateway = stripe_gateway(s.settings)
    try:
        accounts = [account] if account else known_accounts(s.ledger, gateway, s.settings)
        cutoff, rows = balance_agreement(s.ledger, gateway, s.settings, accounts, s.view)
    except GatewayError as error:
        raise ApiError(502, "stripe_error", f"Stripe: {error}", type=API_ERROR) from error
    data = [{**row.__dict__, "agrees": row.agrees} for row in rows]
    if wants_csv(request, format):
        return csv_response(data, AGREEMENT_COLUMNS, None)
    return json_response(
        {
            "object": "reconciliation_balances",
            "cutoff": int(cutoff.timestamp()),
            "agrees": all(row.agrees for row in rows),
            "data": data,
        },
        None,
    )


@router.get(
    "/v1/reconciliation/clearing",
    name="reconciliation_clearing",
    response_model=ClearingList,
    summary="Each account's clearing book per currency (zero when no break is open)",
)
def reconciliation_clearing(request: Request, s: Ctx, account: Account = None) -> Any:
    position = s.read_position(request, ["reconciliation"])
    books = recon_view.clearing_books(s.view, account)
    data = [
        {"account": a, "currency": c, "amount": amount} for (a, c), amount in sorted(books.items())
    ]
    return json_response({"object": "list", "data": data, "has_more": False}, position)
