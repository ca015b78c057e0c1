"""Payout reconciliation over HTTP (issue 14, item 6), from the ledger's own read models
(``projections.payout_items``): what a payout settled (``GET /v1/balance_transactions?payout=``,
answered through ``settled_by_payout``) and the report itemizing every payout
(``GET /v1/reports/payout_reconciliation``), JSON and CSV."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field

from adapters.export import (
    BT_COLUMNS,
    ExportError,
    account_metadata,
    finance_balance_transaction,
    zone,
)
from adapters.http.auth import account_filter
from adapters.http.errors import ApiError, not_found
from adapters.http.models import TEXT_PATTERN, ListReply, Reply
from adapters.http.support import (
    Format,
    Seconds,
    Sluice,
    csv_response,
    ctx,
    json_response,
    wants_csv,
)
from projections import payout_items

router = APIRouter(tags=["reads"])

Ctx = Annotated[Sluice, Depends(ctx)]
PayoutFilter = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=255,
        pattern=TEXT_PATTERN,
        description="a payout: Sluice's id or Stripe's po_ id",
    ),
]
AccountFilter = Annotated[
    str | None,
    Query(min_length=1, max_length=255, pattern=TEXT_PATTERN, description="only this account"),
]
Check = Literal["sums", "differs", "not_itemized"]
REPORT_COLUMNS = (
    "row", "payout", "stripe_payout_id", "account", "currency", "payout_amount", "status",
    "automatic", "created", "arrival_date", "item", "type", "source", "available_on",
    "gross", "fee", "net", "item_count", "difference", "check", "flagged",
)  # fmt: skip
CSV_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON, or CSV with `Accept: text/csv` or `?format=csv`",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }
}
READ_MODELS = ["balance_transactions", "payouts"]


class PayoutItem(Reply):
    id: str = Field(description="the ledger's balance transaction")
    type: str
    source: str | None
    created: int
    available_on: int | None
    gross: int = Field(description="minor units")
    fee: int
    net: int


class PayoutReconciliation(Reply):
    object: Literal["payout_reconciliation"]
    payout: str = Field(description="Sluice's payout id")
    stripe_payout_id: str | None = Field(description="Stripe's po_ id (null: not reported yet)")
    account: str
    currency: str
    amount: int = Field(description="the payout's amount, minor units")
    status: str
    automatic: bool
    created: int
    arrival_date: int | None
    item_count: int
    gross: int
    fee: int
    net: int = Field(description="the items' net: an automatic payout's amount exactly")
    difference: int = Field(description="amount minus the items' net (0 unless differs)")
    check: Check = Field(description="sums, differs (flagged) or not_itemized (manual payouts)")
    flagged: bool
    items: list[PayoutItem]


class PayoutReconciliationList(ListReply):
    data: list[PayoutReconciliation]


def _payout_of(s: Sluice, request: Request, payout: str) -> dict[str, Any]:
    """The payout, if the key may see it (an account key: its own only; else 404)."""
    row = payout_items.find_payout(s.view, payout)
    mine = account_filter(request, None)
    if row is None or (mine is not None and row["account_id"] != mine):
        raise not_found(f"no such payout: {payout}", "payout")
    return row


def settled_by_payout(
    request: Request, s: Sluice, payout: str, filters: dict[str, Any], csv: bool, tz: str | None
) -> Any:
    """``balance_transactions?payout=``: what the payout settled and its own transactions, as
    Stripe lists them (newest first, one page); ``filters`` narrow them as they do a list."""
    row = _payout_of(s, request, payout)
    position = s.read_position(request, READ_MODELS)
    listed = [
        bt
        for bt in payout_items.settled_balance_transactions(s.view, str(row["id"]))
        if all(filters.get(k) in (None, bt[k]) for k in ("currency", "type", "source"))
        and (filters.get("created_gte") is None or bt["created"] >= filters["created_gte"])
        and (filters.get("created_lt") is None or bt["created"] < filters["created_lt"])
    ]
    if csv:
        try:
            zone_ = zone(tz)
        except ExportError as error:
            raise ApiError(400, error.code, error.message, param="tz") from None
        keys, metadata_of = account_metadata(s.ledger.get_account, [str(row["account_id"])])
        rows = [finance_balance_transaction(bt, zone_, keys, metadata_of) for bt in listed]
        return csv_response(rows, BT_COLUMNS, position)
    body = {"object": "list", "data": listed, "has_more": False, "url": request.url.path}
    return json_response(body, position)


def csv_rows(report: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Per payout: one row per item, then the payout's row with the sums and the check."""
    for p in report:
        edge = {
            "payout": p["payout"], "stripe_payout_id": p["stripe_payout_id"] or "",
            "account": p["account"], "currency": p["currency"], "payout_amount": p["amount"],
            "status": p["status"], "automatic": str(p["automatic"]).lower(),
            "created": p["created"], "arrival_date": p["arrival_date"] or "",
        }  # fmt: skip
        for item in p["items"]:
            yield (
                {column: "" for column in REPORT_COLUMNS}
                | edge
                | {
                    "row": "item",
                    "item": item["id"],
                    "type": item["type"],
                    "source": item["source"] or "",
                    "available_on": item["available_on"] or "",
                    "gross": item["gross"],
                    "fee": item["fee"],
                    "net": item["net"],
                }
            )
        yield (
            {column: "" for column in REPORT_COLUMNS}
            | edge
            | {
                "row": "payout",
                **{k: p[k] for k in ("gross", "fee", "net", "item_count", "difference", "check")},
                "flagged": str(p["flagged"]).lower(),
            }
        )


@router.get(
    "/v1/reports/payout_reconciliation",
    name="retrieve_payout_reconciliation_report",
    response_model=PayoutReconciliationList,
    responses=CSV_OK,
    summary="Each payout with the balance transactions it settled, and whether they sum to it",
)
def retrieve_payout_reconciliation_report(
    request: Request,
    s: Ctx,
    payout: PayoutFilter = None,
    account: AccountFilter = None,
    start: Annotated[Seconds, Query(alias="from", description="created from, unix s")] = None,
    end: Annotated[Seconds, Query(alias="to", description="created before, unix s")] = None,
    format: Format = None,
) -> Any:
    """One payout (``payout``), or every payout of an account (or all) created in
    ``from`` ≤ created < ``to``, oldest first: its items, gross, fee, net, and ``check``:
    ``sums`` (the items net exactly to the amount), ``differs`` (flagged) or ``not_itemized``."""
    account = account_filter(request, account)
    if payout is not None:
        row = _payout_of(s, request, payout)
        payout = str(row["id"])
    position = s.read_position(request, READ_MODELS)
    report = payout_items.payout_reconciliation(
        s.view, payout_id=payout, account=account, created_from_s=start, created_to_s=end
    )
    if wants_csv(request, format):
        return csv_response(list(csv_rows(report)), REPORT_COLUMNS, position)
    body = {"object": "list", "data": report, "has_more": False, "url": request.url.path}
    return json_response(body, position)
