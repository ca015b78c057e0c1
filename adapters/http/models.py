"""Request bodies. Strict and closed: no coercion (``"100"`` and ``100.0`` are not amounts) and no
unknown fields. Range and domain rules (positive amounts, known currencies, existing accounts)
are the Ledger's, so they are checked once, in one place, with the Ledger's error codes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

UNIX_SECONDS_MAX = 253_402_300_799  # 9999-12-31T23:59:59Z
TEXT_MAX = 255

# No control characters anywhere (PostgreSQL text refuses NUL, and a read model could not store
# an event carrying one); ids are printable ASCII without spaces, like Stripe's.
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]+$"
ID_PATTERN = r"^[\x21-\x7e]+$"
Text = Annotated[str, Field(min_length=1, max_length=TEXT_MAX, pattern=TEXT_PATTERN)]
ObjectId = Annotated[str, Field(min_length=1, max_length=TEXT_MAX, pattern=ID_PATTERN)]
UnixSeconds = Annotated[int, Field(ge=0, le=UNIX_SECONDS_MAX, description="unix seconds")]
Amount = Annotated[int, Field(description="integer amount in minor units (cents for usd)")]
Currency = Annotated[
    str, Field(min_length=1, max_length=8, pattern=ID_PATTERN, description="lowercase ISO 4217")
]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class AccountCreate(Body):
    id: ObjectId = Field(description="the account's id, acct_…")
    kind: Literal["connected", "platform"] = "connected"
    country: Text = "US"
    default_currency: Currency = "usd"


class PayoutScheduleIn(Body):
    interval: Literal["daily", "weekly", "monthly", "manual"] | None = None
    delay_days: int | None = None
    weekly_anchor: Text | None = None
    monthly_anchor: int | None = None
    minimum_amount: dict[Text, int] | None = Field(
        default=None, description="minimum payout per currency, minor units"
    )


class PayoutSettingsIn(Body):
    schedule: PayoutScheduleIn | None = None


class AccountSettingsIn(Body):
    payouts: PayoutSettingsIn | None = None


class AccountUpdate(Body):
    verification_status: Text | None = None
    capabilities: dict[Text, Text] | None = None
    charges_enabled: bool | None = None
    payouts_enabled: bool | None = None
    settings: AccountSettingsIn | None = None
    closed: Literal[True] | None = Field(default=None, description="true closes the account")


class TransferDataIn(Body):
    amount: Amount


class SplitPartIn(Body):
    account: ObjectId
    share_bps: int | None = None
    fixed_amount: Amount | None = None


class PaymentCreate(Body):
    charge_type: Literal["direct", "destination", "separate"]
    amount: Amount
    currency: Currency
    stripe_fee: Amount = 0
    application_fee_amount: Amount = 0
    account: ObjectId | None = None
    on_behalf_of: ObjectId | None = None
    transfer_group: Text | None = None
    transfer_data: TransferDataIn | None = None
    split: list[SplitPartIn] | None = Field(default=None, max_length=50)
    available_on: UnixSeconds | None = None
    created: UnixSeconds | None = Field(default=None, description="when it took effect")


class RefundCreate(Body):
    payment: ObjectId
    amount: Amount | None = None
    reverse_transfer: bool = False
    refund_application_fee: bool = False


class TransferCreate(Body):
    destination: ObjectId
    amount: Amount
    currency: Currency
    source_transaction: ObjectId | None = None
    transfer_group: Text | None = None


class ReversalCreate(Body):
    amount: Amount | None = None


class PayoutCreate(Body):
    account: ObjectId
    amount: Amount
    currency: Currency


class PayoutStatusUpdate(Body):
    status: Literal["in_transit", "paid", "failed", "canceled"]
    failure_code: Text | None = None


class DisputeCreate(Body):
    payment: ObjectId
    fee: Amount
    amount: Amount | None = None


class DisputeClose(Body):
    won: bool


class BalanceRelease(Body):
    currency: Currency
    until: UnixSeconds


class TopupCreate(Body):
    account: ObjectId
    amount: Amount
    currency: Currency
    available_on: UnixSeconds | None = None
