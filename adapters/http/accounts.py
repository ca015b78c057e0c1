"""Finding accounts (``GET /v1/accounts``: search, flags, metadata) and payments
(``GET /v1/payments``: account, currency, metadata), and the tax report
(``GET /v1/tax_reports``), all from the read models."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from adapters.http.auth import account_filter
from adapters.http.errors import ApiError, not_found
from adapters.http.models import TEXT_PATTERN
from adapters.http.support import (
    Format,
    Limit,
    Sluice,
    csv_response,
    ctx,
    json_response,
    list_response,
    wants_csv,
)
from projections import accounts as account_queries
from projections import payments as payment_queries
from projections import tax
from projections.accounts import METADATA_FILTERS_MAX, SEARCH_LEN_MAX
from projections.queries import LIST_LIMIT_DEFAULT

router = APIRouter(tags=["accounts"])

Ctx = Annotated[Sluice, Depends(ctx)]
METADATA_PARAM = re.compile(r"^metadata\[([^\[\]]{1,40})\]$")
ACCOUNT_COLUMNS = (
    "id object kind name email metadata country default_currency verification_status"
    " charges_enabled payouts_enabled created closed requirements".split()
)
PAYMENT_COLUMNS = (
    "id object account charge_type amount currency on_behalf_of transfer_group metadata"
    " created".split()
)


def metadata_filters(
    request: Request,
    metadata: Annotated[
        str | None,
        Query(include_in_schema=False, description="send metadata[key]=value instead"),
    ] = None,
) -> dict[str, str]:
    """``metadata[key]=value`` query parameters (Stripe's form style), at most a few."""
    if metadata is not None:
        raise ApiError(
            400, "parameter_invalid", "filter with metadata[key]=value", param="metadata"
        )
    found: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if not name.startswith("metadata["):
            continue
        match = METADATA_PARAM.match(name)
        if match is None or not re.match(TEXT_PATTERN, value) or len(value) > 500:
            raise ApiError(400, "parameter_invalid", f"{name} is metadata[key]=value", param=name)
        found[match.group(1)] = value
    if len(found) > METADATA_FILTERS_MAX:
        raise ApiError(
            400,
            "parameter_invalid",
            f"at most {METADATA_FILTERS_MAX} metadata filters",
            param="metadata",
        )
    return found


# OpenAPI: metadata[key]=value as a deepObject (the parameter above stays out of the schema).
METADATA_FILTER_DOC: dict[str, Any] = {
    "name": "metadata",
    "in": "query",
    "required": False,
    "style": "deepObject",
    "explode": True,
    "description": "metadata[key]=value: only objects whose metadata has key = value (all must"
    " match)",
    "schema": {"type": "object", "additionalProperties": {"type": "string"}},
}
MIN_POSITION_DOC: dict[str, Any] = {
    "name": "Sluice-Min-Position",
    "in": "header",
    "required": False,
    "description": "Wait (at most a few seconds) until the read models include this log"
    " position (a POST's `position`). The answer's Sluice-Position says how far they got.",
    "schema": {"type": "integer", "minimum": 0},
}
CSV_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON, or CSV with `Accept: text/csv` or `?format=csv`",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }
}


@router.get(
    "/v1/accounts",
    name="list_accounts",
    summary="Accounts, newest first: search by name, email or metadata; filter by flags",
    responses=CSV_OK,
    openapi_extra={"parameters": [METADATA_FILTER_DOC, MIN_POSITION_DOC]},
)
def list_accounts(
    request: Request,
    s: Ctx,
    metadata: Annotated[dict[str, str], Depends(metadata_filters)],
    search: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=SEARCH_LEN_MAX,
            pattern=TEXT_PATTERN,
            description="text found in the name, the email, the id or the metadata"
            " (case-insensitive)",
        ),
    ] = None,
    charges_enabled: Annotated[
        bool | None, Query(description="only accounts that can (true) or cannot take charges")
    ] = None,
    payouts_enabled: Annotated[
        bool | None, Query(description="only accounts that can (true) or cannot be paid out")
    ] = None,
    limit: Limit = LIST_LIMIT_DEFAULT,
    starting_after: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=255,
            description="an account id: the page after it (from the previous page's last)",
        ),
    ] = None,
    format: Format = None,
) -> Any:
    own = account_filter(request, None)
    if own is not None and starting_after not in (None, own):
        raise not_found(f"no such object: {starting_after}", "starting_after")
    position = s.read_position(request, ["accounts"])
    page = account_queries.list_accounts(
        s.view,
        account=own,
        search=search,
        charges_enabled=charges_enabled,
        payouts_enabled=payouts_enabled,
        metadata=metadata,
        limit=limit,
        starting_after=starting_after,
    )
    return list_response(
        request, page.data, page.has_more, position, wants_csv(request, format), ACCOUNT_COLUMNS
    )


@router.get(
    "/v1/payments",
    name="list_payments",
    summary="Payments (captured charges), newest first: filter by account, currency, metadata",
    responses=CSV_OK,
    openapi_extra={"parameters": [METADATA_FILTER_DOC, MIN_POSITION_DOC]},
)
def list_payments(
    request: Request,
    s: Ctx,
    metadata: Annotated[dict[str, str], Depends(metadata_filters)],
    account: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=255,
            pattern=TEXT_PATTERN,
            description="the seller the payments land with (the platform: separate charges)",
        ),
    ] = None,
    currency: Annotated[
        str | None,
        Query(min_length=3, max_length=3, pattern="^[a-z]{3}$", description="lowercase ISO code"),
    ] = None,
    limit: Limit = LIST_LIMIT_DEFAULT,
    starting_after: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=255,
            description="a payment id: the page after it (from the previous page's last)",
        ),
    ] = None,
    format: Format = None,
) -> Any:
    account = account_filter(request, account)
    if account is not None and starting_after is not None:
        _own_cursor(s, starting_after, account)  # another account's payment: no such object
    position = s.read_position(request, ["payments"])
    page = payment_queries.list_payments(
        s.view,
        account=account,
        currency=currency,
        metadata=metadata,
        limit=limit,
        starting_after=starting_after,
    )
    return list_response(
        request, page.data, page.has_more, position, wants_csv(request, format), PAYMENT_COLUMNS
    )


def _own_cursor(s: Sluice, cursor: str, account: str) -> None:
    with s.view.read() as tx:
        tx.execute("SELECT account_id FROM rm_payments WHERE id = %s", (cursor,))
        row = tx.one()
    if row is None or row["account_id"] != account:
        raise not_found(f"no such object: {cursor}", "starting_after")


@router.get(
    "/v1/tax_reports",
    name="retrieve_tax_report",
    summary="Per account and currency, one calendar year: gross volume, refunds, payments, by"
    " month (1099-K style)",
    responses=CSV_OK,
    openapi_extra={"parameters": [MIN_POSITION_DOC]},
)
def retrieve_tax_report(
    request: Request,
    s: Ctx,
    year: Annotated[
        int, Query(ge=tax.YEAR_MIN, le=tax.YEAR_MAX, description="the calendar year (UTC)")
    ],
    account: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=255,
            description="one connected account (default: every one with activity)",
        ),
    ] = None,
    format: Format = None,
) -> Any:
    account = account_filter(request, account)
    if account is not None and s.ledger.get_account(account) is None:
        raise not_found(f"no such account: {account}", "account")
    position = s.read_position(request, ["balance_transactions", "accounts"])
    reports = tax.tax_reports(s.view, year, account)
    if wants_csv(request, format):
        return csv_response(tax.csv_rows(reports), tax.CSV_COLUMNS, position)
    body = {"object": "list", "data": reports, "has_more": False, "url": request.url.path}
    return json_response(body, position)
