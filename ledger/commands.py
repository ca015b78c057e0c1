"""Commands: one frozen dataclass per use case. Each carries its idempotency key and the instant
it takes effect; ids of created objects default to values derived from the key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import Field, dataclass, fields
from datetime import datetime
from typing import Any, ClassVar

from ledger.errors import InvalidParameterError
from ledger.limits import TEXT_LEN_MAX
from ledger.splits import SplitPart

_FIELDS: dict[type, tuple[Field[Any], ...]] = {}  # per message class: the code's own, a bounded set


def _fields(cls: type) -> tuple[Field[Any], ...]:
    """``dataclasses.fields`` of a message class, once (it filters the class's fields anew on
    every call, and every command asks twice: its text check and its fingerprint)."""
    found = _FIELDS.get(cls)
    if found is None:
        found = _FIELDS[cls] = fields(cls)
    return found


@dataclass(frozen=True, kw_only=True)
class Message:
    """What the ledger's engine runs: a ``Command`` (Sluice's intent, checked against its policy)
    or a ``ledger.facts.Fact`` (what Stripe reports as done, recorded as reported)."""

    name: ClassVar[str] = "message"
    idempotency_key: str
    effective_at: datetime

    def check_text(self) -> None:
        """Every string parameter is printable text: control characters (NUL above all) would
        be stored in events forever and break read models and exports downstream."""
        for f in _fields(type(self)):
            value = getattr(self, f.name)
            if f.type in ("str", "str | None") and not (
                isinstance(value, str) or (value is None and f.type == "str | None")
            ):
                raise InvalidParameterError(f"{f.name} must be a string", param=f.name)
            texts = [value] if isinstance(value, str) else []
            if isinstance(value, dict):
                texts = [str(k) for k in value] + [v for v in value.values() if isinstance(v, str)]
            for text in texts:
                if len(text) > TEXT_LEN_MAX or not text.isprintable():
                    raise InvalidParameterError(
                        f"{f.name} must be printable text of at most {TEXT_LEN_MAX} characters",
                        param=f.name,
                    )

    def fingerprint(self) -> str:
        """Hash of the parameters. The key and the effective instant are not parameters: a
        client retrying the same request later must get the first result back."""
        params = {
            f.name: getattr(self, f.name)
            for f in _fields(type(self))
            if f.name not in ("idempotency_key", "effective_at")
        }
        text = json.dumps({"command": self.name, "params": params}, sort_keys=True, default=_enc)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class Command(Message):
    """Sluice's own intent: validated against its policy, and refused when it breaks it."""

    name: ClassVar[str] = "command"


def _enc(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, SplitPart):
        return [value.account_id, value.share_bps, value.fixed_minor]
    if isinstance(value, tuple | list):
        return list(value)
    # Anything else (a Decimal amount, say) is refused by validation later; fingerprinting it
    # must not crash first.
    return f"{type(value).__name__}:{value!r}"


@dataclass(frozen=True, kw_only=True)
class OpenAccount(Command):
    name = "open_account"
    account_id: str
    kind: str = "connected"
    country: str = "US"
    default_currency: str = "usd"


@dataclass(frozen=True, kw_only=True)
class UpdateAccount(Command):
    name = "update_account"
    account_id: str
    verification_status: str | None = None
    capabilities: dict[str, str] | None = None
    charges_enabled: bool | None = None
    payouts_enabled: bool | None = None
    external_account_status: str | None = None


@dataclass(frozen=True, kw_only=True)
class SetAccountProfile(Command):
    """The account's name, email and metadata, replaced whole. Metadata travels as sorted pairs:
    its values may be as long as Stripe's (500 characters), which the account checks."""

    name = "set_account_profile"
    account_id: str
    display_name: str | None = None
    email: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, kw_only=True)
class SetPayoutSchedule(Command):
    name = "set_payout_schedule"
    account_id: str
    interval: str
    delay_days: int
    weekly_anchor: str | None = None
    monthly_anchor: int | None = None
    minimum_minor: dict[str, int] | None = None


@dataclass(frozen=True, kw_only=True)
class CloseAccount(Command):
    name = "close_account"
    account_id: str


@dataclass(frozen=True, kw_only=True)
class RecordPayment(Command):
    name = "record_payment"
    charge_type: str
    currency: str
    amount_minor: int
    stripe_fee_minor: int = 0
    application_fee_minor: int = 0
    account_id: str | None = None
    on_behalf_of: str | None = None
    transfer_group: str | None = None
    transfer_amount_minor: int | None = None
    split: tuple[SplitPart, ...] = ()
    available_on: datetime | None = None
    payment_id: str | None = None
    # Stripe's ids for what the charge created, when Stripe is the source of the facts.
    transfer_id: str | None = None
    application_fee_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class CreateTransfer(Command):
    name = "create_transfer"
    destination_account_id: str
    currency: str
    amount_minor: int
    source_payment_id: str | None = None
    transfer_group: str | None = None
    transfer_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class ReverseTransfer(Command):
    name = "reverse_transfer"
    transfer_id: str
    amount_minor: int | None = None
    reversal_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class RefundPayment(Command):
    name = "refund_payment"
    payment_id: str
    amount_minor: int | None = None
    reverse_transfer: bool = False
    refund_application_fee: bool = False
    refund_id: str | None = None
    # Facts from Stripe (``refund.transfer_reversal``): recorded as given, never recomputed.
    reversal_id: str | None = None
    reversal_minor: int | None = None
    application_fee_refund_minor: int | None = None


@dataclass(frozen=True, kw_only=True)
class RefundApplicationFee(Command):
    """An application fee refunded on its own (``POST /v1/application_fees/{id}/refunds``)."""

    name = "refund_application_fee"
    payment_id: str
    amount_minor: int | None = None
    fee_refund_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class OpenDispute(Command):
    name = "open_dispute"
    payment_id: str
    fee_minor: int
    amount_minor: int | None = None
    dispute_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class CloseDispute(Command):
    name = "close_dispute"
    payment_id: str
    won: bool


@dataclass(frozen=True, kw_only=True)
class ReleaseFunds(Command):
    name = "release_funds"
    account_id: str
    currency: str
    until: datetime


@dataclass(frozen=True, kw_only=True)
class TopUp(Command):
    name = "top_up"
    account_id: str
    currency: str
    amount_minor: int
    available_on: datetime | None = None
    topup_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class RequestPayout(Command):
    name = "request_payout"
    account_id: str
    currency: str
    amount_minor: int
    payout_id: str | None = None
    reported_by_stripe: bool = False  # a payout Stripe made (automatic ones): recorded as is


@dataclass(frozen=True, kw_only=True)
class SubmitPayout(Command):
    """Stripe accepted the payout: its ``po_`` id is recorded, once."""

    name = "submit_payout"
    payout_id: str
    stripe_payout_id: str


@dataclass(frozen=True, kw_only=True)
class MarkPayoutInTransit(Command):
    name = "mark_payout_in_transit"
    payout_id: str


@dataclass(frozen=True, kw_only=True)
class MarkPayoutPaid(Command):
    name = "mark_payout_paid"
    payout_id: str


@dataclass(frozen=True, kw_only=True)
class FailPayout(Command):
    name = "fail_payout"
    payout_id: str
    failure_code: str


@dataclass(frozen=True, kw_only=True)
class CancelPayout(Command):
    name = "cancel_payout"
    payout_id: str


@dataclass(frozen=True, kw_only=True)
class HoldPayout(Command):
    """Stripe did not take the payout, for a reason an operator must fix: it waits, nothing
    moves (``ledger.payouts``)."""

    name = "hold_payout"
    payout_id: str
    reason_code: str
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class HoldRouting(Command):
    """Stripe did not take a transfer of the payment's routing plan, for a reason an operator
    must fix: the routing waits, nothing moves (``ledger.payments``)."""

    name = "hold_routing"
    payment_id: str
    destination: str
    reason_code: str
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class ResumeRouting(Command):
    """The held routing's transfers were all made."""

    name = "resume_routing"
    payment_id: str
