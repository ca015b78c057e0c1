"""POST routes: each turns one request into Ledger commands under the request's Idempotency-Key.

A rejected request records nothing: the Ledger rejects a command whole, and the one route that
issues several commands (account updates) first rehearses them on a copy of the account.
Responses are built from the request, the command's ids and immutable facts of the objects it
created, so replaying a key returns the same body.
"""

from __future__ import annotations

import hashlib
from copy import deepcopy
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from adapters.http.errors import ApiError
from adapters.http.models import (
    ID_PATTERN,
    AccountCreate,
    AccountUpdate,
    BalanceRelease,
    DisputeClose,
    DisputeCreate,
    PaymentCreate,
    PayoutCreate,
    PayoutStatusUpdate,
    RefundCreate,
    ReversalCreate,
    TopupCreate,
    TransferCreate,
)
from adapters.http.support import Sluice, ctx, idempotency_key, instant, seconds
from ledger import commands as c
from ledger.application import CommandResult
from ledger.errors import AccountNotFoundError, IdempotencyConflictError, InvariantViolation
from ledger.events import When
from ledger.splits import SplitPart

router = APIRouter(tags=["writes"])

Key = Annotated[str, Depends(idempotency_key)]
Ctx = Annotated[Sluice, Depends(ctx)]
AccountId = Annotated[str, Path(min_length=1, max_length=255, pattern=ID_PATTERN)]
ObjectPathId = Annotated[str, Path(min_length=1, max_length=255, pattern=ID_PATTERN)]


def _one(key: str, result: CommandResult) -> list[tuple[str, CommandResult]]:
    return [(key, result)]


@router.post("/v1/accounts", name="create_account", summary="Open an account")
def create_account(body: AccountCreate, key: Key, s: Ctx) -> Any:
    result = s.ledger.open_account(
        idempotency_key=key,
        account_id=body.id,
        kind=body.kind,
        country=body.country,
        default_currency=body.default_currency,
    )
    written = _one(key, result)
    if profile := _profile(body, None):
        sub_key = _sub_keys(key)["profile"]
        done = s.ledger.execute(
            c.SetAccountProfile(idempotency_key=sub_key, **_now(s, body.id), **profile)
        )
        written.append((sub_key, done))
    return s.written({"object": "account", **body.model_dump()}, written)


def _now(s: Sluice, account_id: str) -> dict[str, Any]:
    return {"effective_at": s.ledger.clock(), "account_id": account_id}


def _profile(body: AccountCreate | AccountUpdate, account: Any) -> dict[str, Any] | None:
    """The SetAccountProfile fields: the request's over the account's (metadata merged, an empty
    value removes its key, as at Stripe); None when the request sets none of them."""
    if body.name is None and body.email is None and body.metadata is None:
        return None
    metadata = dict(getattr(account, "metadata", None) or {})
    metadata.update(body.metadata or {})
    return {
        "display_name": body.name if body.name is not None else getattr(account, "name", None),
        "email": body.email if body.email is not None else getattr(account, "email", None),
        "metadata": tuple(sorted((k, v) for k, v in metadata.items() if v != "")),
    }


# Account updates: up to three commands (update, payout schedule, close) for one request.
_SLOTS = ("update", "schedule", "close", "profile")


def _sub_keys(key: str) -> dict[str, str]:
    base = key if len(key) <= 200 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return {slot: f"{base}/{slot}" for slot in _SLOTS}


def _schedule_fields(body: AccountUpdate, current: dict[str, Any]) -> dict[str, Any] | None:
    """The full schedule: the request's fields over the account's current schedule."""
    given = body.settings.payouts.schedule if body.settings and body.settings.payouts else None
    if given is None:
        return None
    sent = given.model_fields_set
    interval = given.interval or current["interval"]
    same = interval == current["interval"]

    def keep(name: str) -> Any:
        return getattr(given, name) if name in sent else (current[name] if same else None)

    minimums = dict(current.get("minimum_minor") or {})
    minimums.update(given.minimum_amount or {})
    return {
        "interval": interval,
        "delay_days": given.delay_days if given.delay_days is not None else current["delay_days"],
        "weekly_anchor": keep("weekly_anchor") if interval == "weekly" else None,
        "monthly_anchor": keep("monthly_anchor") if interval == "monthly" else None,
        "minimum_minor": minimums,
    }


@router.post(
    "/v1/accounts/{account_id}",
    name="update_account",
    summary="Update an account: verification, capabilities, flags, payout schedule, closed",
)
def update_account(account_id: AccountId, body: AccountUpdate, key: Key, s: Ctx) -> Any:
    account = s.ledger.get_account(account_id)
    if account is None:
        raise AccountNotFoundError(f"no such account: {account_id}", param="account")
    fields = {
        name: getattr(body, name)
        for name in ("verification_status", "capabilities", "charges_enabled", "payouts_enabled")
        if getattr(body, name) is not None
    }
    schedule = _schedule_fields(body, account.schedule)
    planned: dict[str, dict[str, Any]] = {}
    if fields:
        planned["update"] = fields
    if schedule is not None:
        planned["schedule"] = schedule
    if profile := _profile(body, account):
        planned["profile"] = profile
    if body.closed:
        planned["close"] = {}
    if not planned:
        raise ApiError(400, "parameter_missing", "nothing to update", param=None)
    keys = _sub_keys(key)
    used = {slot for slot in _SLOTS if s.command_position(keys[slot]) is not None}
    if used and used != set(planned):
        raise IdempotencyConflictError(
            f"idempotency key {key!r} was used with different parameters", param="idempotency_key"
        )
    now = s.ledger.clock()
    if not used and len(planned) > 1:
        _rehearse(account, planned, When(now, now))
    common: dict[str, Any] = {"effective_at": now, "account_id": account_id}
    commands: list[c.Command] = []
    if "update" in planned:
        commands.append(
            c.UpdateAccount(idempotency_key=keys["update"], **common, **planned["update"])
        )
    if "schedule" in planned:
        commands.append(
            c.SetPayoutSchedule(idempotency_key=keys["schedule"], **common, **planned["schedule"])
        )
    if "profile" in planned:
        commands.append(
            c.SetAccountProfile(idempotency_key=keys["profile"], **common, **planned["profile"])
        )
    if "close" in planned:
        commands.append(c.CloseAccount(idempotency_key=keys["close"], **common))
    results = s.ledger.execute_batch(commands)
    for result in results:
        if result.error is not None:
            if any(r.ok and not r.replayed for r in results):  # the rehearsal should prevent it
                raise InvariantViolation("an account update was recorded in part")
            raise result.error
    echo = body.model_dump(exclude_none=True)
    return s.written(
        {"id": account_id, "object": "account", **echo},
        [(cmd.idempotency_key, r) for cmd, r in zip(commands, results, strict=True)],
    )


def _rehearse(account: Any, planned: dict[str, dict[str, Any]], when: When) -> None:
    """Applies the planned changes to a copy, so a late rejection cannot leave a partial update."""
    probe = deepcopy(account)
    if "update" in planned:
        probe.update(when, **planned["update"])
    if "schedule" in planned:
        probe.set_payout_schedule(when, **planned["schedule"])
    if "profile" in planned:
        fields = planned["profile"]
        probe.set_profile(
            when,
            name=fields["display_name"],
            email=fields["email"],
            metadata=dict(fields["metadata"]),
        )
    if "close" in planned:
        probe.close(when)


@router.post("/v1/payments", name="create_payment", summary="Record a captured card payment")
def create_payment(body: PaymentCreate, key: Key, s: Ctx) -> Any:
    split = tuple(
        SplitPart(part.account, part.share_bps, part.fixed_amount) for part in body.split or ()
    )
    result = s.ledger.record_payment(
        idempotency_key=key,
        effective_at=instant(body.created),
        charge_type=body.charge_type,
        currency=body.currency,
        amount_minor=body.amount,
        stripe_fee_minor=body.stripe_fee,
        application_fee_minor=body.application_fee_amount,
        account_id=body.account,
        on_behalf_of=body.on_behalf_of,
        transfer_group=body.transfer_group,
        transfer_amount_minor=body.transfer_data.amount if body.transfer_data else None,
        split=split,
        available_on=instant(body.available_on),
    )
    ids = result.ids
    payment = s.ledger.get_payment(ids["payment"])
    if payment is None:
        raise InvariantViolation("a recorded payment is missing")
    transfers = [ids[k] for k in sorted(ids, key=_index) if k.startswith("transfer_")]
    return s.written(
        {
            "id": payment.payment_id,
            "object": "payment",
            "charge_type": payment.charge_type,
            "amount": payment.amount_minor,
            "currency": payment.currency,
            "stripe_fee": payment.stripe_fee_minor,
            "application_fee_amount": payment.application_fee_minor,
            "account": payment.account_id,
            "on_behalf_of": payment.on_behalf_of,
            "transfer_group": payment.transfer_group,
            "transfer_data": body.transfer_data.model_dump() if body.transfer_data else None,
            "split": [part.model_dump() for part in body.split or ()],
            "available_on": seconds(payment.available_on),
            "created": seconds(payment.captured_at),
            "transfer": ids.get("transfer"),
            "transfers": transfers,
            "application_fee": ids.get("application_fee"),
        },
        _one(key, result),
    )


def _index(name: str) -> int:
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else -1


@router.post("/v1/refunds", name="create_refund", summary="Refund a payment (in full or part)")
def create_refund(body: RefundCreate, key: Key, s: Ctx) -> Any:
    result = s.ledger.refund_payment(
        idempotency_key=key,
        payment_id=body.payment,
        amount_minor=body.amount,
        reverse_transfer=body.reverse_transfer,
        refund_application_fee=body.refund_application_fee,
    )
    ids = result.ids
    payment = s.ledger.get_payment(ids["payment"])
    if payment is None:
        raise InvariantViolation("a refunded payment is missing")
    return s.written(
        {
            "id": ids["refund"],
            "object": "refund",
            "payment": payment.payment_id,
            "amount": payment.refunds[ids["refund"]],
            "currency": payment.currency,
            "reverse_transfer": body.reverse_transfer,
            "refund_application_fee": body.refund_application_fee,
            "transfer_reversal": ids.get("reversal"),
        },
        _one(key, result),
    )


@router.post("/v1/transfers", name="create_transfer", summary="Transfer funds to an account")
def create_transfer(body: TransferCreate, key: Key, s: Ctx) -> Any:
    result = s.ledger.create_transfer(
        idempotency_key=key,
        destination_account_id=body.destination,
        currency=body.currency,
        amount_minor=body.amount,
        source_payment_id=body.source_transaction,
        transfer_group=body.transfer_group,
    )
    transfer = s.ledger.get_transfer(result.ids["transfer"])
    if transfer is None:
        raise InvariantViolation("a recorded transfer is missing")
    return s.written(
        {
            "id": transfer.transfer_id,
            "object": "transfer",
            "amount": transfer.amount_minor,
            "currency": transfer.currency,
            "destination": transfer.destination_account_id,
            "source_transaction": transfer.source_payment_id,
            "transfer_group": transfer.transfer_group,
        },
        _one(key, result),
    )


@router.post(
    "/v1/transfers/{transfer_id}/reversals",
    name="create_transfer_reversal",
    summary="Reverse a transfer (in full or part)",
)
def create_transfer_reversal(
    transfer_id: ObjectPathId, key: Key, s: Ctx, body: ReversalCreate | None = None
) -> Any:
    body = body or ReversalCreate()
    result = s.ledger.reverse_transfer(
        idempotency_key=key, transfer_id=transfer_id, amount_minor=body.amount
    )
    transfer = s.ledger.get_transfer(result.ids["transfer"])
    if transfer is None:
        raise InvariantViolation("a reversed transfer is missing")
    reversal = result.ids["reversal"]
    return s.written(
        {
            "id": reversal,
            "object": "transfer_reversal",
            "transfer": transfer.transfer_id,
            "amount": transfer.reversals[reversal],
            "currency": transfer.currency,
        },
        _one(key, result),
    )


@router.post("/v1/payouts", name="create_payout", summary="Pay out available funds")
def create_payout(body: PayoutCreate, key: Key, s: Ctx) -> Any:
    result = s.ledger.request_payout(
        idempotency_key=key,
        account_id=body.account,
        currency=body.currency,
        amount_minor=body.amount,
    )
    return s.written(
        {
            "id": result.ids["payout"],
            "object": "payout",
            "account": body.account,
            "amount": body.amount,
            "currency": body.currency,
            "status": "pending",
        },
        _one(key, result),
    )


@router.post(
    "/v1/payouts/{payout_id}/status",
    name="update_payout_status",
    summary="Move a payout: in_transit, paid, failed (with failure_code) or canceled",
)
def update_payout_status(
    payout_id: ObjectPathId, body: PayoutStatusUpdate, key: Key, s: Ctx
) -> Any:
    if body.status == "failed" and body.failure_code is None:
        raise ApiError(
            400, "parameter_missing", "a failed payout needs a failure_code", param="failure_code"
        )
    if body.status != "failed" and body.failure_code is not None:
        raise ApiError(
            400, "parameter_invalid", "failure_code is for failed payouts", param="failure_code"
        )
    ledger = s.ledger
    if body.status == "in_transit":
        result = ledger.mark_payout_in_transit(idempotency_key=key, payout_id=payout_id)
    elif body.status == "paid":
        result = ledger.mark_payout_paid(idempotency_key=key, payout_id=payout_id)
    elif body.status == "failed":
        result = ledger.fail_payout(
            idempotency_key=key, payout_id=payout_id, failure_code=body.failure_code
        )
    else:
        result = ledger.cancel_payout(idempotency_key=key, payout_id=payout_id)
    return s.written(
        {
            "id": payout_id,
            "object": "payout",
            "status": body.status,
            "failure_code": body.failure_code,
        },
        _one(key, result),
    )


@router.post("/v1/disputes", name="create_dispute", summary="Open a dispute on a payment")
def create_dispute(body: DisputeCreate, key: Key, s: Ctx) -> Any:
    result = s.ledger.open_dispute(
        idempotency_key=key,
        payment_id=body.payment,
        fee_minor=body.fee,
        amount_minor=body.amount,
    )
    payment = s.ledger.get_payment(result.ids["payment"])
    if payment is None or payment.dispute is None:
        raise InvariantViolation("a recorded dispute is missing")
    return s.written(
        {
            "id": result.ids["dispute"],
            "object": "dispute",
            "payment": payment.payment_id,
            "amount": int(payment.dispute["amount_minor"]),
            "fee": int(payment.dispute["fee_minor"]),
            "currency": payment.currency,
        },
        _one(key, result),
    )


@router.post(
    "/v1/disputes/{payment_id}/close",
    name="close_dispute",
    summary="Close a payment's dispute, won or lost",
)
def close_dispute(payment_id: ObjectPathId, body: DisputeClose, key: Key, s: Ctx) -> Any:
    result = s.ledger.close_dispute(idempotency_key=key, payment_id=payment_id, won=body.won)
    return s.written(
        {
            "id": result.ids["dispute"],
            "object": "dispute",
            "payment": result.ids["payment"],
            "status": "won" if body.won else "lost",
        },
        _one(key, result),
    )


@router.post(
    "/v1/balances/{account_id}/release",
    name="release_balance",
    summary="Make pending funds due by `until` available",
)
def release_balance(account_id: AccountId, body: BalanceRelease, key: Key, s: Ctx) -> Any:
    until = instant(body.until) or datetime.now(UTC)
    result = s.ledger.release_funds(
        idempotency_key=key, account_id=account_id, currency=body.currency, until=until
    )
    return s.written(
        {
            "id": result.ids.get("entry"),
            "object": "balance_release",
            "account": account_id,
            "currency": body.currency,
            "until": body.until,
        },
        _one(key, result),
    )


@router.post("/v1/topups", name="create_topup", summary="Add funds to an account from its bank")
def create_topup(body: TopupCreate, key: Key, s: Ctx) -> Any:
    result = s.ledger.top_up(
        idempotency_key=key,
        account_id=body.account,
        currency=body.currency,
        amount_minor=body.amount,
        available_on=instant(body.available_on),
    )
    return s.written(
        {
            "id": result.ids["topup"],
            "object": "topup",
            "account": body.account,
            "amount": body.amount,
            "currency": body.currency,
            "available_on": body.available_on,
        },
        _one(key, result),
    )
