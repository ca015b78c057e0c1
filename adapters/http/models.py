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


MetadataKey = Annotated[str, Field(min_length=1, max_length=40, pattern=TEXT_PATTERN)]
MetadataValue = Annotated[str, Field(max_length=500, pattern=r"^[^\x00-\x1f\x7f]*$")]
Metadata = Annotated[
    dict[MetadataKey, MetadataValue] | None,
    Field(
        default=None,
        max_length=50,
        description="Stripe's metadata: up to 50 keys; on update, an empty value removes a key",
    ),
]
Email = Annotated[str, Field(min_length=3, max_length=TEXT_MAX, pattern=r"^[^@\s]+@[^@\s]+$")]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class AccountCreate(Body):
    id: ObjectId = Field(description="the account's id, acct_…")
    kind: Literal["connected", "platform"] = "connected"
    country: Text = "US"
    default_currency: Currency = "usd"
    name: Text | None = Field(default=None, description="business name")
    email: Email | None = None
    metadata: Metadata = None


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
    name: Text | None = Field(default=None, description="business name")
    email: Email | None = None
    metadata: Metadata = None


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


# Responses ----------------------------------------------------------------------------------
# What every route answers, as pydantic models: ``RESPONSES`` maps a route (its operationId) to
# the model of its 200 body, and ``adapters.http.app`` writes them into /openapi.json. Closed
# vocabularies are ``Literal``s (enums in the schema); open objects say so (``extra="allow"``).

PayoutStatus = Literal["pending", "held", "in_transit", "paid", "failed", "canceled"]
AccountKind = Literal["connected", "platform"]
VerificationStatus = Literal["unverified", "pending", "verified", "rejected"]
BalanceTransactionStatus = Literal["pending", "available"]


class Reply(BaseModel):
    """A response body: documented fields, and further ones allowed (new fields are added)."""

    model_config = ConfigDict(extra="allow")


class Written(Reply):
    livemode: bool = Field(description="false: booked from Stripe's test mode")
    position: int | None = Field(description="log position of the events this request recorded")


class ListReply(Reply):
    object: Literal["list"]
    has_more: bool = Field(description="more objects after the last one of this page")
    url: str = Field(description="the list's path")


class Health(Reply):
    status: Literal["ok"]
    livemode: bool
    mode: Literal["live", "test"]


class Ready(Reply):
    status: Literal["ready"]


class ProjectionState(Reply):
    position: int = Field(description="last log position applied")
    behind: int = Field(description="at most this many events not applied yet")
    updated: int | None = Field(description="when it last applied a batch, unix seconds")


class ServiceStatus(Reply):
    object: Literal["status"]
    livemode: bool
    head: int = Field(description="the event log's last position")
    projector_running: bool
    projections: dict[str, ProjectionState]
    keys_age_s: float | None = Field(description="seconds since the API key cache was loaded")


class ScheduleOut(Reply):
    interval: Literal["daily", "weekly", "monthly", "manual"]
    delay_days: int
    weekly_anchor: str | None
    monthly_anchor: int | None
    minimum_amount: dict[str, int] = Field(description="minimum payout per currency, minor units")


class PayoutSettingsOut(Reply):
    schedule: ScheduleOut


class AccountSettingsOut(Reply):
    payouts: PayoutSettingsOut


class RequirementsOut(Reply):
    """What Stripe still needs from the account (its ``requirements``, as last reported)."""

    currently_due: list[str] = Field(description="fields due now (by current_deadline)")
    past_due: list[str] = Field(description="fields past their deadline: the account is disabled")
    eventually_due: list[str] = Field(description="fields due once thresholds are reached")
    disabled_reason: str | None = Field(description="why Stripe disabled the account, if it did")
    current_deadline: int | None = Field(description="when currently_due is due, unix seconds")
    payouts_paused: str | None = Field(
        description="why Sluice does not pay the account out because of them (null: it does)"
    )


class AccountSummary(Reply):
    id: str = Field(description="acct_…")
    object: Literal["account"]
    kind: AccountKind
    name: str | None = Field(description="business name, as Stripe holds it")
    email: str | None
    metadata: dict[str, str] = Field(description="Stripe's metadata of the account")
    country: str = Field(description="ISO 3166 alpha-2")
    default_currency: str
    verification_status: VerificationStatus
    charges_enabled: bool
    payouts_enabled: bool
    closed: bool


class AccountListed(AccountSummary):
    created: int = Field(description="when it was opened, unix seconds")
    requirements: RequirementsOut | None = None


class Account(AccountSummary):
    capabilities: dict[str, Literal["active", "inactive", "pending", "unrequested"]]
    settings: AccountSettingsOut
    livemode: bool
    requirements: RequirementsOut | None = None


class AccountList(ListReply):
    data: list[AccountListed]


class AmountOut(Reply):
    amount: int = Field(description="minor units")
    currency: str


class Balance(Reply):
    object: Literal["balance"]
    account: str
    available: list[AmountOut]
    pending: list[AmountOut]
    reserved: list[AmountOut]
    livemode: bool


class FeeDetail(Reply):
    amount: int
    currency: str
    type: str


class BalanceTransaction(Reply):
    id: str = Field(description="txn_…")
    object: Literal["balance_transaction"]
    account: str
    amount: int = Field(description="gross, minor units")
    available_on: int
    created: int
    currency: str
    description: str | None
    fee: int
    fee_details: list[FeeDetail]
    net: int
    reporting_category: str
    source: str | None
    status: BalanceTransactionStatus
    type: str


class BalanceTransactionList(ListReply):
    data: list[BalanceTransaction]


class TimelineStep(Reply):
    status: PayoutStatus
    at: int = Field(description="unix seconds")


class PayoutHold(Reply):
    reason_code: str | None
    message: str | None


class Payout(Reply):
    id: str
    object: Literal["payout"]
    account: str
    amount: int
    currency: str
    status: PayoutStatus
    failure_code: str | None
    created: int
    updated: int
    timeline: list[TimelineStep]
    hold: PayoutHold | None = None
    stripe_fee: int | None = Field(None, description="Stripe's fee on the payout (instant)")
    application_fee: int | None = Field(
        None, description="the platform's fee on the payout (payout monetization)"
    )
    bank_currency: str | None = Field(None, description="converted: the bank's currency")
    bank_amount: int | None = Field(None, description="converted: what reached the bank")
    exchange_rate: str | None = Field(None, description="converted: Stripe's rate, decimal")
    stripe_payout_id: str | None = Field(None, description="Stripe's po_ id of the payout")
    arrival_date: int | None = Field(None, description="Stripe's arrival date, unix seconds")
    destination: str | None = Field(None, description="the external account Stripe paid to")
    failure_message: str | None = Field(None, description="Stripe's failure message")
    automatic: bool | None = Field(None, description="made by Stripe on the account's schedule")
    metadata: dict[str, str] = Field(
        default_factory=dict, description="the payout's metadata as Stripe reports it"
    )


class PayoutList(ListReply):
    data: list[Payout]


class PaymentListed(Reply):
    id: str = Field(description="the charge's id (ch_… or py_…)")
    object: Literal["payment"]
    account: str = Field(description="the seller it lands with (the platform: separate charge)")
    charge_type: Literal["separate", "destination", "direct"]
    amount: int = Field(description="captured, minor units")
    currency: str
    on_behalf_of: str | None
    transfer_group: str | None
    metadata: dict[str, str] = Field(
        description="the charge's metadata over its PaymentIntent's, as Stripe reports them"
    )
    created: int = Field(description="unix seconds")


class PaymentList(ListReply):
    data: list[PaymentListed]


class Statement(Reply):
    object: Literal["statement"]
    account: str
    currency: str
    from_: int = Field(alias="from", description="start, unix seconds (inclusive)")
    to: int = Field(description="end, unix seconds (exclusive)")
    opening_balance: int
    movements: list[BalanceTransaction]
    total_movements: int
    closing_balance: int


class RevenueDay(Reply):
    object: Literal["revenue_day"]
    day: str = Field(description="YYYY-MM-DD, UTC")
    currency: str
    application_fees: int
    application_fee_refunds: int
    net: int
    count: int


class RevenueList(ListReply):
    data: list[RevenueDay]


class ReplayBalance(Reply):
    currency: str


class AuditReplay(Reply):
    object: Literal["audit_replay"]
    account: str
    as_of: int | None
    recorded_as_of: int | None
    position: int | None
    balances: list[ReplayBalance]
    movements: list[dict[str, object]]


class LoggedEvent(Reply):
    position: int
    type: str
    aggregate_id: str
    version: int
    data: dict[str, object]


class EventList(ListReply):
    data: list[LoggedEvent]


class Proof(Reply):
    """A Merkle proof (RFC 9162) as ``adapters.audit_proofs`` builds it (``sluice audit
    verify-proof`` checks one offline); its kind decides the further fields."""

    object: Literal["sluice_proof"]
    format: int
    kind: Literal["inclusion", "account", "consistency"]
    hash: str
    leaf_encoding: str


class CheckpointList(ListReply):
    data: list[dict[str, object]]


class WebhookReceived(Reply):
    received: Literal[True]
    duplicate: bool
    id: str | None


class AccountWritten(Written):
    id: str
    object: Literal["account"]


class PaymentWritten(Written):
    id: str = Field(description="py_…")
    object: Literal["payment"]
    charge_type: Literal["direct", "destination", "separate"]
    amount: int
    currency: str
    stripe_fee: int
    application_fee_amount: int
    account: str | None
    on_behalf_of: str | None
    transfer_group: str | None
    available_on: int | None
    created: int | None
    transfer: str | None
    transfers: list[str]
    application_fee: str | None


class RefundWritten(Written):
    id: str
    object: Literal["refund"]
    payment: str
    amount: int
    currency: str
    transfer_reversal: str | None


class TransferWritten(Written):
    id: str
    object: Literal["transfer"]
    amount: int
    currency: str
    destination: str


class ReversalWritten(Written):
    id: str
    object: Literal["transfer_reversal"]
    transfer: str
    amount: int
    currency: str


class PayoutWritten(Written):
    id: str
    object: Literal["payout"]
    status: PayoutStatus


class DisputeWritten(Written):
    id: str
    object: Literal["dispute"]
    payment: str


class BalanceReleased(Written):
    id: str | None
    object: Literal["balance_release"]


class TopupWritten(Written):
    id: str
    object: Literal["topup"]
    account: str
    amount: int
    currency: str


class TaxMonth(Reply):
    month: int = Field(description="1 to 12")
    gross_volume: int = Field(description="payments captured, minor units")
    refunds: int = Field(description="refunded, minor units")
    payments: int = Field(description="number of payments")


class TaxReport(Reply):
    object: Literal["tax_report"]
    account: str
    name: str | None
    year: int
    currency: str
    gross_volume: int = Field(description="payments captured in the year, minor units")
    refunds: int = Field(description="refunded in the year, minor units")
    payments: int = Field(description="number of payments captured in the year")
    months: list[TaxMonth]


class TaxReportList(ListReply):
    data: list[TaxReport]


class BalanceChangeRow(Reply):
    account: str
    currency: str
    reporting_category: str = Field(
        description="Stripe's reporting category (charge, refund, dispute, transfer, payout, "
        "fee, …), or opening_balance / closing_balance"
    )
    count: int = Field(description="balance transactions in the category")
    gross: int = Field(description="minor units")
    fee: int = Field(description="minor units")
    net: int = Field(description="minor units; closing = opening + the categories' nets")


class BalanceChangeReport(Reply):
    object: Literal["list"]
    data: list[BalanceChangeRow]
    has_more: bool = Field(description="always false: a report is one page")


class SellerSummary(Reply):
    account: str
    currency: str
    opening: int = Field(description="balance at the period's start, minor units")
    gross: int
    fees: int
    refunds: int
    disputes: int
    transfers: int
    payouts: int
    other: int
    closing: int = Field(description="opening + every movement column, exactly")
    count: int = Field(description="balance transactions in the period")


class SellerSummaryList(Reply):
    object: Literal["list"]
    data: list[SellerSummary]
    has_more: bool = Field(description="always false: a report is one page")


class ApiKeyCreate(Body):
    role: Annotated[str, Field(min_length=1, max_length=80, pattern=ID_PATTERN)] = Field(
        description="admin, finance, auditor or account:<acct_id>"
    )
    label: Text | None = Field(default=None, description="who or what the key is for")


class ApiKeyRotate(Body):
    grace: int = Field(
        default=0,
        ge=0,
        le=30 * 86_400,
        description="seconds the old key keeps working (0: it stops now); at most 30 days",
    )


class ApiKey(Reply):
    """An API key as listed: never the key itself, nor its hash."""

    object: Literal["api_key"]
    id: str
    role: str = Field(description="admin, finance, auditor or account:<acct_id>")
    label: str | None
    created: int = Field(description="unix seconds")
    revoked: int | None = Field(
        description="when it stops (or stopped) working, unix seconds; in the future during a"
        " rotation's grace"
    )
    replaced_by: str | None = Field(description="the key that replaced it in a rotation")
    state: Literal["active", "grace", "revoked"]


class ApiKeyCreated(ApiKey):
    secret: str = Field(description="the key itself, shown this once: only its hash is stored")
    replaces: str | None = Field(description="the rotated key this one replaces")


class ApiKeyList(ListReply):
    data: list[ApiKey]


RESPONSES: dict[str, type[BaseModel]] = {
    "healthz": Health,
    "readyz": Ready,
    "service_status": ServiceStatus,
    "list_accounts": AccountList,
    "retrieve_account": Account,
    "retrieve_balance": Balance,
    "list_balance_transactions": BalanceTransactionList,
    "list_payouts": PayoutList,
    "list_payments": PaymentList,
    "retrieve_statement": Statement,
    "retrieve_revenue": RevenueList,
    "retrieve_tax_report": TaxReportList,
    "retrieve_balance_change_report": BalanceChangeReport,
    "list_seller_summaries": SellerSummaryList,
    "audit_balances": AuditReplay,
    "audit_events": EventList,
    "audit_checkpoints": CheckpointList,
    "audit_inclusion_proof": Proof,
    "audit_account_proof": Proof,
    "audit_consistency_proof": Proof,
    "stripe_webhook": WebhookReceived,
    "create_account": AccountWritten,
    "update_account": AccountWritten,
    "create_payment": PaymentWritten,
    "create_refund": RefundWritten,
    "create_transfer": TransferWritten,
    "create_transfer_reversal": ReversalWritten,
    "create_payout": PayoutWritten,
    "update_payout_status": PayoutWritten,
    "create_dispute": DisputeWritten,
    "close_dispute": DisputeWritten,
    "release_balance": BalanceReleased,
    "create_topup": TopupWritten,
    "list_api_keys": ApiKeyList,
    "create_api_key": ApiKeyCreated,
    "revoke_api_key": ApiKey,
    "rotate_api_key": ApiKeyCreated,
}
