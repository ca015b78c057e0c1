"""Risk (admin, finance and auditor keys): the platform's exposure per seller, from the read
models (``projections.risk``): each connected account's available and reserved funds, who
covers a negative balance (``controller.losses.payments``), and what the platform would owe."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field

from adapters.http.models import TEXT_PATTERN, Reply
from adapters.http.support import Sluice, ctx, json_response
from projections import risk as risk_view

router = APIRouter(tags=["risk"])

Ctx = Annotated[Sluice, Depends(ctx)]


class SellerExposure(Reply):
    account: str = Field(description="acct_…")
    currency: str
    available: int = Field(description="minor units; negative: the seller owes it")
    reserved: int = Field(description="held in reserve by Stripe, minor units: never paid out")
    negative_balance: int = Field(description="what the seller owes, minor units (0 or more)")
    losses_covered_by: Literal["application", "stripe"] | None = Field(
        description="controller.losses.payments: who covers what Stripe cannot recover"
        " (null: Stripe has not said)"
    )
    platform_exposure: int = Field(
        description="the negative balance when the platform covers losses, else 0"
    )


class ExposureTotal(Reply):
    currency: str
    amount: int = Field(description="minor units")


class RiskExposure(Reply):
    object: Literal["risk_exposure"]
    data: list[SellerExposure]
    total_platform_exposure: list[ExposureTotal]


@router.get(
    "/v1/risk/exposure",
    name="retrieve_risk_exposure",
    response_model=RiskExposure,
    summary="The platform's exposure per seller: negative balances it covers, reserves held",
)
def retrieve_risk_exposure(
    request: Request,
    s: Ctx,
    account: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=255,
            pattern=TEXT_PATTERN,
            description="an account id (acct_…): only its rows",
        ),
    ] = None,
) -> Any:
    position = s.read_position(request, ["accounts", "balances"])
    return json_response(risk_view.exposure(s.view, account), position)
