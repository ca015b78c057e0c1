"""Sluice's commands: each handler checks Sluice's policy, then books the movement.

A handler validates everything before it changes anything it cannot take back (the scope discards
a rejected command's copies, so a late error is still harmless). Where a command books a movement
Stripe can also report as a fact, it ends in the same booking function as the fact
(``ledger.facts.book_*``), so both doors book the same entries.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ledger import commands as c
from ledger import facts, payout_fx, reconciliation
from ledger.accounts import ConnectedAccount
from ledger.balances import Balance
from ledger.engine import Handler, Scope
from ledger.errors import (
    AccountExistsError,
    ChargesDisabledError,
    CurrencyMismatchError,
    InvalidParameterError,
    RefundExceedsChargeError,
    SplitRuleError,
    invariant,
)
from ledger.events import check_instant
from ledger.failures import HANDLERS as FAILURE_HANDLERS
from ledger.holds import HANDLERS as HOLD_HANDLERS
from ledger.ids import (
    account_aggregate_id,
    balance_aggregate_id,
    object_id,
    payout_aggregate_id,
    transfer_aggregate_id,
)
from ledger.journal import BANK, PENDING, move
from ledger.money import check_amount, check_currency
from ledger.payments import Payment
from ledger.payouts import Payout
from ledger.requirements import SetAccountRequirements, set_account_requirements
from ledger.risk import HANDLERS as RISK_HANDLERS
from ledger.splits import SplitPart
from ledger.transfers import Transfer


def _open_account(s: Scope, cmd: c.OpenAccount) -> dict[str, str]:
    if s.find(account_aggregate_id(str(cmd.account_id)), ConnectedAccount) is not None:
        raise AccountExistsError(f"account {cmd.account_id} already exists", param="account")
    if cmd.account_id == s.platform_account_id and cmd.kind != "platform":
        raise InvalidParameterError(
            f"{s.platform_account_id} is the platform's account", param="kind"
        )
    if cmd.kind == "platform" and cmd.account_id != s.platform_account_id:
        raise InvalidParameterError(
            f"the platform account is {s.platform_account_id}", param="account"
        )
    s.add(
        ConnectedAccount.open(cmd.account_id, cmd.kind, cmd.country, cmd.default_currency, s.when)
    )
    return {"account": cmd.account_id}


def _update_account(s: Scope, cmd: c.UpdateAccount) -> dict[str, str]:
    s.account(cmd.account_id).update(
        s.when,
        verification_status=cmd.verification_status,
        capabilities=cmd.capabilities,
        charges_enabled=cmd.charges_enabled,
        payouts_enabled=cmd.payouts_enabled,
        external_account_status=cmd.external_account_status,
    )
    return {"account": cmd.account_id}


def _set_account_profile(s: Scope, cmd: c.SetAccountProfile) -> dict[str, str]:
    s.account(cmd.account_id).set_profile(
        s.when, name=cmd.display_name, email=cmd.email, metadata=dict(cmd.metadata)
    )
    return {"account": cmd.account_id}


def _set_payout_schedule(s: Scope, cmd: c.SetPayoutSchedule) -> dict[str, str]:
    s.account(cmd.account_id).set_payout_schedule(
        s.when,
        interval=cmd.interval,
        delay_days=cmd.delay_days,
        weekly_anchor=cmd.weekly_anchor,
        monthly_anchor=cmd.monthly_anchor,
        minimum_minor=cmd.minimum_minor,
    )
    return {"account": cmd.account_id}


def _close_account(s: Scope, cmd: c.CloseAccount) -> dict[str, str]:
    s.account(cmd.account_id).close(s.when)
    return {"account": cmd.account_id}


def _record_payment(s: Scope, cmd: c.RecordPayment) -> dict[str, str]:
    check_currency(cmd.currency)
    platform = s.open_account(s.platform_account_id, "platform")
    if cmd.account_id is not None:
        seller = s.open_account(cmd.account_id)
        if seller.kind != "connected":
            raise InvalidParameterError("charges route to connected accounts", param="account")
        if cmd.charge_type == "direct" and not seller.charges_enabled:
            raise ChargesDisabledError(f"{cmd.account_id} cannot take charges", param="account")
    if cmd.on_behalf_of is not None:
        s.open_account(cmd.on_behalf_of, "on_behalf_of")
    if cmd.split and cmd.charge_type != "separate":
        raise SplitRuleError("split rules route separate charges", param="split")
    payment_id = cmd.payment_id or object_id("py", cmd.idempotency_key)
    available_on = cmd.available_on
    if available_on is None:
        # Stripe reports available_on on the charge's balance transaction; without it, follow
        # the schedule of the account whose pending period applies.
        settles_on = cmd.on_behalf_of or (
            cmd.account_id if cmd.charge_type == "direct" else s.platform_account_id
        )
        delay = int(s.account(settles_on).schedule["delay_days"]) if settles_on else 0
        # Stripe's available_on falls on a UTC midnight; day buckets also keep pending lots few.
        day = s.when.effective_at.astimezone(UTC).date() + timedelta(days=delay)
        available_on = datetime(day.year, day.month, day.day, tzinfo=UTC)
    check_instant(available_on, "available_on")
    # The command's checks are done: it books exactly what the same charge reported by Stripe
    # would book.
    payment, ids = facts.book_charge(
        s,
        facts.ChargeSucceeded(
            idempotency_key=cmd.idempotency_key,
            effective_at=cmd.effective_at,
            payment_id=payment_id,
            charge_type=cmd.charge_type,
            currency=cmd.currency,
            amount_minor=cmd.amount_minor,
            stripe_fee_minor=cmd.stripe_fee_minor,
            available_on=available_on,
            application_fee_minor=cmd.application_fee_minor,
            account_id=cmd.account_id,
            on_behalf_of=cmd.on_behalf_of,
            transfer_group=cmd.transfer_group,
            transfer_amount_minor=cmd.transfer_amount_minor,
            transfer_id=cmd.transfer_id,
            application_fee_id=cmd.application_fee_id,
        ),
        platform.account_id,
    )
    if cmd.split:
        ids.update(_route_split(s, cmd, payment, platform.account_id))
    return ids


def _route_split(
    s: Scope, cmd: c.RecordPayment, payment: Payment, platform_id: str
) -> dict[str, str]:
    """A separate charge recorded with a split rule: the ledger plans the routing (as for a
    charge Stripe reports) and, Sluice being the only book here, books the transfers at once."""
    for part in cmd.split:
        if isinstance(part, SplitPart) and part.account_id != s.platform_account_id:
            s.open_account(part.account_id, "split")
    parts = facts.plan_routing(s, payment, cmd.split)
    ids = {}
    for n, (account_id, amount) in enumerate(parts.items()):
        if amount == 0:
            continue
        transfer_id = object_id("tr", payment.payment_id, account_id)
        payment.check_source_transfer(transfer_id, amount)
        payment.source_transfer(transfer_id, amount, s.when)
        facts.book_transfer(
            s,
            transfer_id=transfer_id,
            source_account_id=platform_id,
            destination_account_id=account_id,
            currency=cmd.currency,
            amount_minor=amount,
            source_payment_id=payment.payment_id,
            transfer_group=cmd.transfer_group or f"group_{payment.payment_id}",
            available_on=payment.available_on,
        )
        ids[f"transfer_{n}"] = transfer_id
    return ids


def _create_transfer(s: Scope, cmd: c.CreateTransfer) -> dict[str, str]:
    check_currency(cmd.currency)
    amount = check_amount(cmd.amount_minor, cmd.currency)
    platform = s.open_account(s.platform_account_id, "platform")
    destination = s.open_account(cmd.destination_account_id, "destination")
    if destination.kind != "connected":
        raise InvalidParameterError("transfers go to connected accounts", param="destination")
    transfer_id = cmd.transfer_id or object_id("tr", cmd.idempotency_key)
    if s.find(transfer_aggregate_id(transfer_id), Transfer) is not None:
        raise InvalidParameterError(f"transfer {transfer_id} already exists", param="transfer_id")
    available_on: datetime | None = None
    group = cmd.transfer_group
    if cmd.source_payment_id is not None:
        payment = s.payment(cmd.source_payment_id)
        if payment.currency != cmd.currency:
            raise CurrencyMismatchError(
                f"the source charge is in {payment.currency}, not {cmd.currency}", param="currency"
            )
        payment.check_source_transfer(transfer_id, amount)
        payment.source_transfer(transfer_id, amount, s.when)
        group = group or payment.transfer_group or f"group_{payment.payment_id}"
        available_on = payment.available_on
    if available_on is None or available_on <= s.when.effective_at:
        # Drawn on available funds now: Sluice's own transfers may not overdraw them.
        s.balance(platform.account_id, cmd.currency).require_available(amount)
        s.discretionary(platform.account_id, cmd.currency)
    facts.book_transfer(
        s,
        transfer_id=transfer_id,
        source_account_id=platform.account_id,
        destination_account_id=destination.account_id,
        currency=cmd.currency,
        amount_minor=amount,
        source_payment_id=cmd.source_payment_id,
        transfer_group=group,
        available_on=available_on,
    )
    return {"transfer": transfer_id}


def _reverse_transfer(s: Scope, cmd: c.ReverseTransfer) -> dict[str, str]:
    transfer = s.transfer(cmd.transfer_id)
    amount = transfer.check_reversal(cmd.amount_minor)
    # Stripe reverses only what the destination has available (no connected reserves here).
    s.balance(transfer.destination_account_id, transfer.currency).require_available(amount)
    s.discretionary(transfer.destination_account_id, transfer.currency)
    reversal_id = cmd.reversal_id or object_id("trr", cmd.idempotency_key)
    s.claim("reversal", reversal_id, "reversal_id")
    transfer.reverse(reversal_id, amount, s.when)
    return {"transfer": transfer.transfer_id, "reversal": reversal_id}


def _refund_payment(s: Scope, cmd: c.RefundPayment) -> dict[str, str]:
    payment = s.payment(cmd.payment_id)
    for flag, param in (
        (cmd.reverse_transfer, "reverse_transfer"),
        (cmd.refund_application_fee, "refund_application_fee"),
    ):
        if not isinstance(flag, bool):
            raise InvalidParameterError(f"{param} must be true or false", param=param)
    amount, reversal, fee_refund = payment.plan_refund(
        cmd.amount_minor, cmd.reverse_transfer, cmd.refund_application_fee
    )
    # Facts reported by Stripe replace Sluice's own proportional estimate.
    if cmd.reversal_minor is not None:
        if not cmd.reverse_transfer:
            raise InvalidParameterError(
                "reversal_minor needs reverse_transfer", param="reversal_minor"
            )
        reversal = check_amount(
            cmd.reversal_minor, payment.currency, "reversal_minor", allow_zero=True
        )
    if cmd.application_fee_refund_minor is not None:
        fee_refund = check_amount(
            cmd.application_fee_refund_minor,
            payment.currency,
            "application_fee_refund_minor",
            allow_zero=True,
        )
        if fee_refund > payment.application_fee_minor - payment.application_fee_refunded_minor:
            raise RefundExceedsChargeError(
                "the fee refund exceeds what is left of the fee",
                param="application_fee_refund_minor",
            )
    refund_id = cmd.refund_id or object_id("re", cmd.idempotency_key)
    s.claim("refund", refund_id, "refund_id")
    if fee_refund:
        s.claim("fee_refund", refund_id, "refund_id")  # the fee refund goes by the refund's id
    ids = {"refund": refund_id, "payment": payment.payment_id}
    if reversal:
        invariant(payment.destination_transfer_id is not None, "reversal needs a transfer")
        transfer = s.transfer(payment.destination_transfer_id)
        if cmd.reversal_minor is None:
            reversal = min(reversal, transfer.reversible_minor)  # some may be reversed already
        else:
            transfer.check_reversal(reversal)  # a fact larger than what is left is refused
        if reversal:
            ids["reversal"] = cmd.reversal_id or object_id("trr", refund_id)
            s.claim("reversal", ids["reversal"], "reversal_id")
            transfer.reverse(ids["reversal"], reversal, s.when)
    payment.refund(
        refund_id,
        amount,
        reversal,
        fee_refund,
        cmd.reverse_transfer,
        cmd.refund_application_fee,
        s.when,
    )
    return ids


def _refund_application_fee(s: Scope, cmd: c.RefundApplicationFee) -> dict[str, str]:
    payment = s.payment(cmd.payment_id)
    fee_refund_id = cmd.fee_refund_id or object_id("fr", cmd.idempotency_key)
    s.claim("fee_refund", fee_refund_id, "fee_refund_id")
    amount = payment.check_fee_refund(fee_refund_id, cmd.amount_minor)
    payment.refund_fee(fee_refund_id, amount, s.when)
    return {"fee_refund": fee_refund_id, "payment": payment.payment_id}


def _open_dispute(s: Scope, cmd: c.OpenDispute) -> dict[str, str]:
    payment = s.payment(cmd.payment_id)
    dispute_id = cmd.dispute_id or object_id("dp", cmd.idempotency_key)
    s.claim("dispute", dispute_id, "dispute_id")
    amount = payment.check_dispute(cmd.amount_minor)
    payment.open_dispute(dispute_id, amount, cmd.fee_minor, s.when)
    return {"dispute": dispute_id, "payment": payment.payment_id}


def _close_dispute(s: Scope, cmd: c.CloseDispute) -> dict[str, str]:
    if not isinstance(cmd.won, bool):
        raise InvalidParameterError("won must be true or false", param="won")
    payment = s.payment(cmd.payment_id)
    payment.close_dispute(cmd.won, s.when)
    dispute = payment.dispute or {}
    return {"dispute": str(dispute.get("id")), "payment": payment.payment_id}


def _release_funds(s: Scope, cmd: c.ReleaseFunds) -> dict[str, str]:
    check_currency(cmd.currency)
    check_instant(cmd.until, "until")
    s.account(cmd.account_id)
    balance = s.find(balance_aggregate_id(cmd.account_id, cmd.currency), Balance)
    released = balance.release(cmd.until, s.when) if balance is not None else None
    return {"entry": released.entry_id} if released is not None else {}


def _top_up(s: Scope, cmd: c.TopUp) -> dict[str, str]:
    check_currency(cmd.currency)
    amount = check_amount(cmd.amount_minor, cmd.currency)
    account = s.open_account(cmd.account_id)
    topup_id = cmd.topup_id or object_id("tu", cmd.idempotency_key)
    s.claim("topup", topup_id, "topup_id")
    available_on = cmd.available_on or s.when.effective_at
    check_instant(available_on, "available_on")
    entry = move(
        object_id("txn", "topup", topup_id),
        "topup",
        amount,
        cmd.currency,
        (account.account_id, BANK),
        (account.account_id, PENDING),
        available_on,
    )
    s.balance(account.account_id, cmd.currency).top_up(topup_id, entry, amount, s.when)
    return {"topup": topup_id}


def _request_payout(s: Scope, cmd: c.RequestPayout) -> dict[str, str]:
    check_currency(cmd.currency)
    amount = check_amount(cmd.amount_minor, cmd.currency)
    account = s.account(cmd.account_id)
    if not isinstance(cmd.reported_by_stripe, bool):
        raise InvalidParameterError(
            "reported_by_stripe is true or false", param="reported_by_stripe"
        )
    payout_id = cmd.payout_id or object_id("po", cmd.idempotency_key)
    if s.find(payout_aggregate_id(payout_id), Payout) is not None:
        raise InvalidParameterError(f"payout {payout_id} already exists", param="payout_id")
    if not cmd.reported_by_stripe:
        # Sluice's own payouts obey its policy; a payout Stripe already made is a fact to
        # record as it is (should the books disagree, the balance shows it, visibly).
        account.require_payouts_enabled()
        s.balance(account.account_id, cmd.currency).require_available(amount)
        s.discretionary(account.account_id, cmd.currency)
    s.add(Payout.request(payout_id, account.account_id, cmd.currency, amount, s.when))
    return {"payout": payout_id}


def _submit_payout(s: Scope, cmd: c.SubmitPayout) -> dict[str, str]:
    s.payout(cmd.payout_id).submitted(cmd.stripe_payout_id, s.when)
    return {"payout": cmd.payout_id, "stripe_payout": cmd.stripe_payout_id}


def _mark_in_transit(s: Scope, cmd: c.MarkPayoutInTransit) -> dict[str, str]:
    s.payout(cmd.payout_id).mark_in_transit(s.when)
    return {"payout": cmd.payout_id}


def _mark_paid(s: Scope, cmd: c.MarkPayoutPaid) -> dict[str, str]:
    s.payout(cmd.payout_id).mark_paid(s.when)
    return {"payout": cmd.payout_id}


def _fail_payout(s: Scope, cmd: c.FailPayout) -> dict[str, str]:
    s.payout(cmd.payout_id).fail(cmd.failure_code, s.when)
    return {"payout": cmd.payout_id}


def _cancel_payout(s: Scope, cmd: c.CancelPayout) -> dict[str, str]:
    s.payout(cmd.payout_id).cancel(s.when)
    return {"payout": cmd.payout_id}


def _hold_payout(s: Scope, cmd: c.HoldPayout) -> dict[str, str]:
    s.payout(cmd.payout_id).hold(cmd.reason_code, cmd.message, s.when)
    return {"payout": cmd.payout_id}


def _hold_routing(s: Scope, cmd: c.HoldRouting) -> dict[str, str]:
    s.payment(cmd.payment_id).hold_routing(cmd.destination, cmd.reason_code, cmd.message, s.when)
    return {"payment": cmd.payment_id}


def _resume_routing(s: Scope, cmd: c.ResumeRouting) -> dict[str, str]:
    s.payment(cmd.payment_id).resume_routing(s.when)
    return {"payment": cmd.payment_id}


COMMAND_HANDLERS: dict[type[c.Message], Handler] = {
    c.OpenAccount: _open_account,
    c.UpdateAccount: _update_account,
    c.SetAccountProfile: _set_account_profile,
    SetAccountRequirements: set_account_requirements,
    c.SetPayoutSchedule: _set_payout_schedule,
    c.CloseAccount: _close_account,
    c.RecordPayment: _record_payment,
    c.CreateTransfer: _create_transfer,
    c.ReverseTransfer: _reverse_transfer,
    c.RefundPayment: _refund_payment,
    c.RefundApplicationFee: _refund_application_fee,
    c.OpenDispute: _open_dispute,
    c.CloseDispute: _close_dispute,
    c.ReleaseFunds: _release_funds,
    c.TopUp: _top_up,
    c.RequestPayout: _request_payout,
    c.SubmitPayout: _submit_payout,
    c.MarkPayoutInTransit: _mark_in_transit,
    c.MarkPayoutPaid: _mark_paid,
    c.FailPayout: _fail_payout,
    c.CancelPayout: _cancel_payout,
    c.HoldPayout: _hold_payout,
    c.HoldRouting: _hold_routing,
    c.ResumeRouting: _resume_routing,
    # Reconciliation's outcomes, and the fact of a movement Stripe made on its own.
    **reconciliation.HANDLERS,
    # Loss liability and reserves (ledger.risk).
    **RISK_HANDLERS,
    # Authorization holds: placed, captured, released (ledger.holds).
    **HOLD_HANDLERS,
    # Movements Stripe undid after reporting them: failed refunds (ledger.failures).
    **FAILURE_HANDLERS,
    # Payouts in every currency: external accounts per currency, Stripe's conversions.
    **payout_fx.HANDLERS,
}
