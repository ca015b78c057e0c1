"""Bad input is refused with a specific error, and a refused command records nothing."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.bootstrap import bootstrap, init_database, read_model
from adapters.settings import Settings
from ledger import balances, holds
from ledger import commands as c
from ledger import reconciliation as recon
from ledger.application import CommandResult, Ledger
from ledger.errors import (
    AccountClosedError,
    AccountExistsError,
    AccountNotFoundError,
    AmountTooLargeError,
    ChargeDisputedError,
    ChargesDisabledError,
    ConcurrencyError,
    CurrencyMismatchError,
    IdempotencyConflictError,
    InsufficientFundsError,
    InvalidAmountError,
    InvalidParameterError,
    InvalidTransitionError,
    PaymentNotFoundError,
    PayoutNotFoundError,
    PayoutsDisabledError,
    PendingLotsExceededError,
    RefundExceedsChargeError,
    ReversalExceedsTransferError,
    SluiceError,
    SplitRuleError,
    TransferExceedsSourceError,
    TransferNotFoundError,
    UnknownCurrencyError,
)
from ledger.ids import object_id
from ledger.journal import AVAILABLE, PENDING
from ledger.money import AMOUNT_MINOR_MAX
from ledger.requirements import SetAccountRequirements
from ledger.risk import SetLossLiability
from ledger.splits import SplitPart
from projections.runner import Projector
from tests.support import PLATFORM, T0, command_record, event_count, new_ledger

NAIVE = T0.replace(tzinfo=None)


@dataclass
class World:
    """A small marketplace with objects in every state a command can trip over."""

    app: Ledger
    destination_payment: str  # usd 10_000 to acct_a, 500 application fee, released
    destination_transfer: str
    separate_payment: str  # usd 10_000, 2_000 of it already transferred to acct_b
    direct_payment: str  # usd 5_000 on acct_b, 200 application fee
    disputed_payment: str  # separate usd 1_000 with an open dispute
    jpy_payment: str  # separate jpy 5_000
    sourced_transfer: str
    unsourced_transfer: str  # usd 1_000 platform → acct_b from available funds
    payouts: dict[str, str]  # status → payout id, all acct_a usd 100

    def available(self, account_id: str, currency: str = "usd") -> int:
        balance = self.app.get_balance(account_id, currency)
        assert balance is not None
        return balance.available_minor


def build_world() -> World:
    app = new_ledger("memory://", lambda: T0)
    n = iter(range(1_000))

    def run(cls: type[c.Command], **params: Any) -> dict[str, str]:
        return app.execute(cls(idempotency_key=f"w{next(n)}", effective_at=T0, **params)).ids

    run(c.OpenAccount, account_id=PLATFORM, kind="platform")
    for account in ("acct_a", "acct_b", "acct_off", "acct_closed", "acct_errored"):
        run(c.OpenAccount, account_id=account)
    for account in ("acct_a", "acct_b", "acct_errored"):
        run(c.UpdateAccount, account_id=account, charges_enabled=True, payouts_enabled=True)
    run(c.UpdateAccount, account_id="acct_errored", external_account_status="errored")
    run(c.CloseAccount, account_id="acct_closed")
    for currency in ("usd", "jpy"):
        run(c.TopUp, account_id=PLATFORM, currency=currency, amount_minor=100_000)
    destination = run(
        c.RecordPayment,
        charge_type="destination",
        currency="usd",
        amount_minor=10_000,
        stripe_fee_minor=320,
        application_fee_minor=500,
        account_id="acct_a",
        available_on=T0,
    )
    separate = run(
        c.RecordPayment,
        charge_type="separate",
        currency="usd",
        amount_minor=10_000,
        stripe_fee_minor=320,
        available_on=T0,
    )
    direct = run(
        c.RecordPayment,
        charge_type="direct",
        currency="usd",
        amount_minor=5_000,
        stripe_fee_minor=175,
        application_fee_minor=200,
        account_id="acct_b",
        available_on=T0,
    )
    disputed = run(
        c.RecordPayment, charge_type="separate", currency="usd", amount_minor=1_000, available_on=T0
    )
    jpy = run(
        c.RecordPayment, charge_type="separate", currency="jpy", amount_minor=5_000, available_on=T0
    )
    for account in (PLATFORM, "acct_a", "acct_b"):
        for currency in ("usd", "jpy"):
            run(c.ReleaseFunds, account_id=account, currency=currency, until=T0)
    sourced = run(
        c.CreateTransfer,
        destination_account_id="acct_b",
        currency="usd",
        amount_minor=2_000,
        source_payment_id=separate["payment"],
    )
    unsourced = run(
        c.CreateTransfer, destination_account_id="acct_b", currency="usd", amount_minor=1_000
    )
    run(c.OpenDispute, payment_id=disputed["payment"], fee_minor=1_500)
    run(c.RefundApplicationFee, payment_id=direct["payment"], amount_minor=20, fee_refund_id="fr_w")
    run(
        c.ReverseTransfer,
        transfer_id=destination["transfer"],
        amount_minor=100,
        reversal_id="trr_w",
    )
    payouts = {
        status: run(c.RequestPayout, account_id="acct_a", currency="usd", amount_minor=100)[
            "payout"
        ]
        for status in ("pending", "in_transit", "paid", "canceled", "failed")
    }
    for status in ("in_transit", "paid", "failed"):
        run(c.MarkPayoutInTransit, payout_id=payouts[status])
    run(c.MarkPayoutPaid, payout_id=payouts["paid"])
    run(c.SubmitPayout, payout_id=payouts["paid"], stripe_payout_id="po_stripe_w")
    run(c.FailPayout, payout_id=payouts["failed"], failure_code="account_closed")
    run(c.CancelPayout, payout_id=payouts["canceled"])
    return World(
        app=app,
        destination_payment=destination["payment"],
        destination_transfer=destination["transfer"],
        separate_payment=separate["payment"],
        direct_payment=direct["payment"],
        disputed_payment=disputed["payment"],
        jpy_payment=jpy["payment"],
        sourced_transfer=sourced["transfer"],
        unsourced_transfer=unsourced["transfer"],
        payouts=payouts,
    )


@pytest.fixture
def world() -> World:
    return build_world()


def test_the_world_is_what_the_cases_assume(world: World) -> None:
    app = world.app
    assert app.journal_totals()[0] == {"usd": 0, "jpy": 0}
    # 9_500 released, a 100 reversal, five payouts of 100 of which two (failed, canceled) returned
    assert world.available("acct_a") == 9_500 - 100 - 5 * 100 + 100 + 100
    payout_states = {s: app.get_payout(p).status for s, p in world.payouts.items()}  # type: ignore[union-attr]
    assert payout_states == {s: s for s in world.payouts}
    assert app.get_account("acct_closed").closed  # type: ignore[union-attr]
    assert app.get_payment(world.disputed_payment).dispute["status"] == "needs_response"  # type: ignore[index,union-attr]
    assert app.get_payment(world.separate_payment).sourced_minor == 2_000  # type: ignore[union-attr]
    assert app.get_payment(world.direct_payment).fee_refunds == {"fr_w": 20}  # type: ignore[union-attr]
    assert app.get_transfer(world.destination_transfer).reversals == {"trr_w": 100}  # type: ignore[union-attr]


Build = Callable[[World], c.Command]


def cmd(cls: type[c.Command], **params: Any) -> Build:
    """A command with a fresh key, effective now; params may be callables of the world."""

    def build(w: World) -> c.Command:
        resolved = {k: v(w) if callable(v) else v for k, v in params.items()}
        resolved.setdefault("idempotency_key", "bad-input")
        resolved.setdefault("effective_at", T0 + timedelta(hours=1))
        return cls(**resolved)

    return build


def pay(**params: Any) -> Build:
    defaults: dict[str, Any] = {"charge_type": "separate", "currency": "usd", "amount_minor": 1_000}
    return cmd(c.RecordPayment, **(defaults | params))


def transfer(**params: Any) -> Build:
    defaults: dict[str, Any] = {
        "destination_account_id": "acct_b",
        "currency": "usd",
        "amount_minor": 100,
    }
    return cmd(c.CreateTransfer, **(defaults | params))


def payout(**params: Any) -> Build:
    defaults: dict[str, Any] = {"account_id": "acct_a", "currency": "usd", "amount_minor": 100}
    return cmd(c.RequestPayout, **(defaults | params))


def _dest_payment(w: World) -> str:
    return w.destination_payment


def _separate_payment(w: World) -> str:
    return w.separate_payment


def _dest_transfer(w: World) -> str:
    return w.destination_transfer


def _payout(status: str) -> Callable[[World], str]:
    return lambda w: w.payouts[status]


E = type[SluiceError]
CASES: list[Any] = [
    # --- every command: key and instant ------------------------------------------------------
    pytest.param(
        cmd(c.OpenAccount, account_id="acct_new", idempotency_key=""),
        InvalidParameterError,
        "idempotency_key",
        id="empty-idempotency-key",
    ),
    pytest.param(
        cmd(c.OpenAccount, account_id="acct_new", idempotency_key="k" * 256),
        InvalidParameterError,
        "idempotency_key",
        id="idempotency-key-too-long",
    ),
    pytest.param(
        cmd(c.TopUp, account_id=PLATFORM, currency="usd", amount_minor=5, idempotency_key=None),
        InvalidParameterError,
        "idempotency_key",
        id="idempotency-key-not-a-string",
    ),
    pytest.param(
        cmd(c.OpenAccount, account_id="acct_new", effective_at=NAIVE),
        InvalidParameterError,
        "effective_at",
        id="naive-effective-at",
    ),
    pytest.param(
        pay(effective_at=NAIVE), InvalidParameterError, "effective_at", id="naive-payment-instant"
    ),
    pytest.param(
        cmd(c.OpenAccount, account_id="acct_zz", idempotency_key="w1"),
        IdempotencyConflictError,
        "idempotency_key",
        id="key-reused-with-other-params",
    ),
    pytest.param(
        cmd(c.CloseAccount, account_id="acct_a", idempotency_key="w1"),
        IdempotencyConflictError,
        "idempotency_key",
        id="key-reused-by-another-command",
    ),
    # --- OpenAccount -----------------------------------------------------------------------
    pytest.param(
        cmd(c.OpenAccount, account_id="acct_a"), AccountExistsError, "account", id="account-exists"
    ),
    pytest.param(
        cmd(c.OpenAccount, account_id="seller_1"),
        InvalidParameterError,
        "account",
        id="account-id-without-acct-prefix",
    ),
    pytest.param(
        cmd(c.OpenAccount, account_id="acct_x", kind="platform"),
        InvalidParameterError,
        "account",
        id="second-platform-account",
    ),
    pytest.param(
        cmd(c.OpenAccount, account_id="acct_x", kind="seller"),
        InvalidParameterError,
        "kind",
        id="unknown-account-kind",
    ),
    pytest.param(
        cmd(c.OpenAccount, account_id="acct_x", default_currency="USD"),
        UnknownCurrencyError,
        "default_currency",
        id="uppercase-default-currency",
    ),
    pytest.param(
        cmd(c.OpenAccount, account_id="acct_x", country="us"),
        InvalidParameterError,
        "country",
        id="lowercase-country",
    ),
    # --- SetAccountProfile (name, email, metadata: Stripe's limits) --------------------------
    pytest.param(
        cmd(c.SetAccountProfile, account_id="acct_nobody", display_name="Kiln"),
        AccountNotFoundError,
        "account",
        id="profile-unknown-account",
    ),
    pytest.param(
        cmd(
            c.SetAccountProfile,
            account_id="acct_a",
            metadata=tuple((f"k{i}", "v") for i in range(51)),
        ),
        InvalidParameterError,
        "metadata",
        id="profile-too-many-metadata-keys",
    ),
    pytest.param(
        cmd(c.SetAccountProfile, account_id="acct_a", metadata=(("k" * 41, "v"),)),
        InvalidParameterError,
        "metadata",
        id="profile-metadata-key-too-long",
    ),
    pytest.param(
        cmd(c.SetAccountProfile, account_id="acct_a", display_name="Kiln\x00"),
        InvalidParameterError,
        "display_name",
        id="profile-name-not-printable",
    ),
    # --- SetAccountRequirements (Stripe's onboarding requirements, as reported) ------------
    pytest.param(
        cmd(SetAccountRequirements, account_id="acct_nobody", currently_due=("external_account",)),
        AccountNotFoundError,
        "account",
        id="requirements-unknown-account",
    ),
    pytest.param(
        cmd(SetAccountRequirements, account_id="acct_a", disabled_reason="bored"),
        InvalidParameterError,
        "disabled_reason",
        id="requirements-unknown-disabled-reason",
    ),
    pytest.param(
        cmd(
            SetAccountRequirements,
            account_id="acct_a",
            currently_due=tuple(f"field_{i}" for i in range(201)),
        ),
        InvalidParameterError,
        "currently_due",
        id="requirements-too-many-fields",
    ),
    pytest.param(
        cmd(SetAccountRequirements, account_id="acct_a", past_due=("tos\x00",)),
        InvalidParameterError,
        "past_due",
        id="requirements-field-not-printable",
    ),
    pytest.param(
        cmd(SetAccountRequirements, account_id="acct_a", eventually_due="external_account"),
        InvalidParameterError,
        "eventually_due",
        id="requirements-list-is-a-string",
    ),
    pytest.param(
        cmd(SetAccountRequirements, account_id="acct_a", current_deadline=NAIVE),
        InvalidParameterError,
        "current_deadline",
        id="requirements-naive-deadline",
    ),
    # --- SetLossLiability (controller.losses.payments, as reported) -------------------------
    pytest.param(
        cmd(SetLossLiability, account_id="acct_a", losses_payments="platform"),
        InvalidParameterError,
        "losses_payments",
        id="liability-unknown-payer",
    ),
    pytest.param(
        cmd(SetLossLiability, account_id="acct_nobody", losses_payments="stripe"),
        AccountNotFoundError,
        "account",
        id="liability-unknown-account",
    ),
    pytest.param(
        cmd(SetLossLiability, account_id=PLATFORM, losses_payments="application"),
        InvalidParameterError,
        "account",
        id="liability-of-the-platform",
    ),
    # --- UpdateAccount / SetPayoutSchedule / CloseAccount ----------------------------------
    pytest.param(
        cmd(c.UpdateAccount, account_id="acct_nobody", payouts_enabled=True),
        AccountNotFoundError,
        "account",
        id="update-unknown-account",
    ),
    pytest.param(
        cmd(c.UpdateAccount, account_id="acct_closed", payouts_enabled=True),
        AccountClosedError,
        "account",
        id="update-closed-account",
    ),
    pytest.param(
        cmd(c.UpdateAccount, account_id="acct_a", payouts_enabled="yes"),
        InvalidParameterError,
        "payouts_enabled",
        id="update-flag-not-a-bool",
    ),
    pytest.param(
        cmd(c.UpdateAccount, account_id="acct_a", external_account_status="broken"),
        InvalidParameterError,
        "external_account_status",
        id="update-unknown-bank-account-status",
    ),
    pytest.param(
        cmd(c.UpdateAccount, account_id="acct_a", verification_status="approved"),
        InvalidParameterError,
        "verification_status",
        id="update-unknown-verification-status",
    ),
    pytest.param(
        cmd(c.SetPayoutSchedule, account_id="acct_a", interval="daily", delay_days=-1),
        InvalidParameterError,
        "delay_days",
        id="negative-delay-days",
    ),
    pytest.param(
        cmd(c.SetPayoutSchedule, account_id="acct_a", interval="hourly", delay_days=1),
        InvalidParameterError,
        "interval",
        id="unknown-payout-interval",
    ),
    pytest.param(
        cmd(
            c.SetPayoutSchedule,
            account_id="acct_a",
            interval="daily",
            delay_days=2,
            minimum_minor={"usd": -5},
        ),
        InvalidAmountError,
        "minimum_amount",
        id="negative-payout-minimum",
    ),
    pytest.param(
        cmd(
            c.SetPayoutSchedule,
            account_id="acct_a",
            interval="daily",
            delay_days=2,
            minimum_minor={"USD": 500},
        ),
        UnknownCurrencyError,
        "minimum_amount",
        id="uppercase-payout-minimum-currency",
    ),
    pytest.param(
        cmd(c.SetPayoutSchedule, account_id="acct_closed", interval="daily", delay_days=2),
        AccountClosedError,
        "account",
        id="schedule-on-closed-account",
    ),
    pytest.param(
        cmd(c.CloseAccount, account_id="acct_closed"),
        AccountClosedError,
        "account",
        id="close-closed-account",
    ),
    pytest.param(
        cmd(c.CloseAccount, account_id="acct_nobody"),
        AccountNotFoundError,
        "account",
        id="close-unknown-account",
    ),
    # --- RecordPayment ---------------------------------------------------------------------
    pytest.param(pay(amount_minor=0), InvalidAmountError, "amount", id="zero-payment"),
    pytest.param(pay(amount_minor=-1_000), InvalidAmountError, "amount", id="negative-payment"),
    pytest.param(pay(amount_minor=10.0), InvalidAmountError, "amount", id="float-payment"),
    pytest.param(pay(amount_minor=True), InvalidAmountError, "amount", id="bool-payment"),
    pytest.param(pay(amount_minor="1000"), InvalidAmountError, "amount", id="string-payment"),
    pytest.param(
        pay(amount_minor=AMOUNT_MINOR_MAX + 1),
        AmountTooLargeError,
        "amount",
        id="payment-over-limit",
    ),
    pytest.param(pay(currency="USD"), UnknownCurrencyError, "currency", id="uppercase-currency"),
    pytest.param(pay(currency="xyz"), UnknownCurrencyError, "currency", id="unknown-currency"),
    pytest.param(
        pay(currency="kwd", amount_minor=1_005),
        InvalidAmountError,
        "amount",
        id="three-decimal-amount-not-ending-in-0",
    ),
    pytest.param(
        pay(stripe_fee_minor=-1), InvalidAmountError, "stripe_fee", id="negative-stripe-fee"
    ),
    pytest.param(
        pay(stripe_fee_minor=1_001), InvalidAmountError, "stripe_fee", id="stripe-fee-over-amount"
    ),
    pytest.param(
        pay(charge_type="direct", account_id="acct_a", application_fee_minor=1_001),
        InvalidAmountError,
        "application_fee",
        id="application-fee-over-amount",
    ),
    pytest.param(
        pay(application_fee_minor=10),
        InvalidParameterError,
        "application_fee",
        id="application-fee-on-separate-charge",
    ),
    pytest.param(
        pay(charge_type="card"), InvalidParameterError, "charge_type", id="unknown-charge-type"
    ),
    pytest.param(
        pay(charge_type="destination"),
        InvalidParameterError,
        "account",
        id="destination-charge-without-destination",
    ),
    pytest.param(
        pay(account_id="acct_a"),
        InvalidParameterError,
        "account",
        id="separate-charge-with-account",
    ),
    pytest.param(
        pay(charge_type="destination", account_id="acct_nobody"),
        AccountNotFoundError,
        "account",
        id="payment-to-unknown-account",
    ),
    pytest.param(
        pay(charge_type="destination", account_id="acct_closed"),
        AccountClosedError,
        "account",
        id="payment-to-closed-account",
    ),
    pytest.param(
        pay(charge_type="direct", account_id="acct_off"),
        ChargesDisabledError,
        "account",
        id="direct-charge-with-charges-disabled",
    ),
    pytest.param(
        pay(charge_type="direct", account_id=PLATFORM),
        InvalidParameterError,
        "account",
        id="direct-charge-on-the-platform",
    ),
    pytest.param(
        pay(
            charge_type="destination",
            account_id="acct_a",
            split=(SplitPart("acct_b", share_bps=1_000),),
        ),
        SplitRuleError,
        "split",
        id="split-on-destination-charge",
    ),
    pytest.param(
        pay(split=(SplitPart("acct_a", fixed_minor=600), SplitPart("acct_b", fixed_minor=401))),
        SplitRuleError,
        "split",
        id="split-fixed-parts-over-amount",
    ),
    pytest.param(
        pay(split=(SplitPart("acct_a", share_bps=6_000), SplitPart("acct_b", share_bps=4_001))),
        SplitRuleError,
        "split",
        id="split-shares-over-100-percent",
    ),
    pytest.param(
        pay(split=(SplitPart(PLATFORM, share_bps=1_000),)),
        SplitRuleError,
        "split",
        id="split-naming-the-platform",
    ),
    pytest.param(
        pay(split=(SplitPart("acct_a", share_bps=5_000), SplitPart("acct_nobody", share_bps=10))),
        AccountNotFoundError,
        "split",
        id="split-naming-unknown-account",
    ),
    pytest.param(
        pay(split=(SplitPart("acct_closed", share_bps=5_000),)),
        AccountClosedError,
        None,  # see test_a_closed_account_error_names_the_param_that_named_it
        id="split-naming-closed-account",
    ),
    pytest.param(
        pay(available_on=NAIVE), InvalidParameterError, "available_on", id="naive-available-on"
    ),
    pytest.param(
        pay(payment_id=_separate_payment),
        InvalidParameterError,
        "payment_id",
        id="payment-id-already-used",
    ),
    pytest.param(
        pay(
            charge_type="destination",
            account_id="acct_a",
            application_fee_minor=10,
            transfer_amount_minor=900,
        ),
        InvalidParameterError,
        "transfer_amount",
        id="application-fee-and-transfer-amount",
    ),
    pytest.param(
        pay(charge_type="destination", account_id="acct_a", transfer_amount_minor=1_001),
        InvalidAmountError,
        "transfer_amount",
        id="transfer-amount-over-amount",
    ),
    pytest.param(
        pay(transfer_id="tr_client_1"),
        InvalidParameterError,
        "transfer_id",
        id="transfer-id-on-separate-charge",
    ),
    pytest.param(
        pay(charge_type="destination", account_id="acct_a", transfer_id=_dest_transfer),
        InvalidParameterError,
        "transfer_id",
        id="destination-transfer-id-already-used",
    ),
    # --- CreateTransfer --------------------------------------------------------------------
    pytest.param(transfer(amount_minor=0), InvalidAmountError, "amount", id="zero-transfer"),
    pytest.param(transfer(amount_minor=-5), InvalidAmountError, "amount", id="negative-transfer"),
    pytest.param(transfer(amount_minor=99.5), InvalidAmountError, "amount", id="float-transfer"),
    pytest.param(
        transfer(amount_minor=AMOUNT_MINOR_MAX + 1),
        AmountTooLargeError,
        "amount",
        id="transfer-over-limit",
    ),
    pytest.param(
        transfer(currency="Usd"),
        UnknownCurrencyError,
        "currency",
        id="transfer-mixed-case-currency",
    ),
    pytest.param(
        transfer(destination_account_id="acct_nobody"),
        AccountNotFoundError,
        "destination",
        id="transfer-to-unknown-account",
    ),
    pytest.param(
        transfer(destination_account_id="acct_closed"),
        AccountClosedError,
        None,  # see test_a_closed_account_error_names_the_param_that_named_it
        id="transfer-to-closed-account",
    ),
    pytest.param(
        transfer(destination_account_id=PLATFORM),
        InvalidParameterError,
        "destination",
        id="transfer-to-the-platform",
    ),
    pytest.param(
        transfer(currency="jpy", source_payment_id=_separate_payment),
        CurrencyMismatchError,
        "currency",
        id="sourced-transfer-in-another-currency",
    ),
    pytest.param(
        transfer(amount_minor=8_001, source_payment_id=_separate_payment),
        TransferExceedsSourceError,
        "amount",
        id="sourced-transfer-over-source-charge",
    ),
    pytest.param(
        transfer(source_payment_id=_dest_payment),
        InvalidParameterError,
        "source_transaction",
        id="transfer-sourced-from-destination-charge",
    ),
    pytest.param(
        transfer(source_payment_id="py_nobody"),
        PaymentNotFoundError,
        "payment",
        id="transfer-from-unknown-payment",
    ),
    pytest.param(
        transfer(amount_minor=lambda w: w.available(PLATFORM) + 1),
        InsufficientFundsError,
        "amount",
        id="unsourced-transfer-over-available",
    ),
    pytest.param(
        transfer(transfer_id=_dest_transfer),
        InvalidParameterError,
        "transfer_id",
        id="transfer-id-already-used",
    ),
    # --- ReverseTransfer -------------------------------------------------------------------
    pytest.param(
        cmd(c.ReverseTransfer, transfer_id=_dest_transfer, amount_minor=10_001),
        ReversalExceedsTransferError,
        "amount",
        id="reversal-over-transferred",
    ),
    pytest.param(
        cmd(c.ReverseTransfer, transfer_id=lambda w: w.sourced_transfer, amount_minor=2_001),
        ReversalExceedsTransferError,
        "amount",
        id="reversal-over-sourced-transfer",
    ),
    pytest.param(
        cmd(c.ReverseTransfer, transfer_id=_dest_transfer, amount_minor=0),
        InvalidAmountError,
        "amount",
        id="zero-reversal",
    ),
    pytest.param(
        cmd(c.ReverseTransfer, transfer_id=_dest_transfer, amount_minor=-1),
        InvalidAmountError,
        "amount",
        id="negative-reversal",
    ),
    pytest.param(
        cmd(c.ReverseTransfer, transfer_id=_dest_transfer, amount_minor=1, reversal_id="trr_w"),
        InvalidParameterError,
        "reversal_id",
        id="reversal-id-already-used",
    ),
    pytest.param(
        cmd(c.ReverseTransfer, transfer_id="tr_nobody"),
        TransferNotFoundError,
        "transfer",
        id="reverse-unknown-transfer",
    ),
    pytest.param(
        cmd(c.ReverseTransfer, transfer_id=_dest_transfer, amount_minor=9_500),
        InsufficientFundsError,
        "amount",
        id="reversal-over-destination-available",
    ),
    # --- RefundPayment ---------------------------------------------------------------------
    pytest.param(
        cmd(c.RefundPayment, payment_id=_dest_payment, amount_minor=10_001),
        RefundExceedsChargeError,
        "amount",
        id="refund-over-captured",
    ),
    pytest.param(
        cmd(c.RefundPayment, payment_id=_dest_payment, amount_minor=-1),
        InvalidAmountError,
        "amount",
        id="negative-refund",
    ),
    pytest.param(
        cmd(c.RefundPayment, payment_id=_dest_payment, amount_minor=12.5),
        InvalidAmountError,
        "amount",
        id="float-refund",
    ),
    pytest.param(
        cmd(c.RefundPayment, payment_id="py_nobody"),
        PaymentNotFoundError,
        "payment",
        id="refund-unknown-payment",
    ),
    pytest.param(
        cmd(c.RefundPayment, payment_id=lambda w: w.disputed_payment),
        ChargeDisputedError,
        "payment",
        id="refund-disputed-payment",
    ),
    pytest.param(
        cmd(c.RefundPayment, payment_id=_separate_payment, reverse_transfer=True),
        InvalidParameterError,
        "reverse_transfer",
        id="reverse-transfer-on-separate-charge",
    ),
    pytest.param(
        cmd(c.RefundPayment, payment_id=_dest_payment, reverse_transfer="yes"),
        InvalidParameterError,
        "reverse_transfer",
        id="reverse-transfer-not-a-bool",
    ),
    pytest.param(
        cmd(c.RefundPayment, payment_id=_separate_payment, refund_application_fee=True),
        InvalidParameterError,
        "refund_application_fee",
        id="refund-fee-of-charge-without-fee",
    ),
    pytest.param(
        cmd(c.RefundPayment, payment_id=_dest_payment, refund_application_fee=True),
        InvalidParameterError,
        "refund_application_fee",
        id="refund-destination-fee-without-reversal",
    ),
    pytest.param(
        cmd(c.RefundPayment, payment_id=_dest_payment, reversal_minor=10),
        InvalidParameterError,
        "reversal_minor",
        id="reversal-fact-without-reverse-transfer",
    ),
    pytest.param(
        cmd(c.RefundPayment, payment_id=_dest_payment, reverse_transfer=True, reversal_minor=-1),
        InvalidAmountError,
        "reversal_minor",
        id="negative-reversal-fact",
    ),
    pytest.param(
        cmd(c.RefundPayment, payment_id=_dest_payment, reverse_transfer=True, reversal_minor=9_901),
        ReversalExceedsTransferError,
        "amount",
        id="reversal-fact-over-what-is-left",
    ),
    pytest.param(
        cmd(
            c.RefundPayment,
            payment_id=_dest_payment,
            amount_minor=100,
            reverse_transfer=True,
            reversal_id="trr_w",
        ),
        InvalidParameterError,
        "reversal_id",
        id="refund-reusing-a-reversal-id",
    ),
    pytest.param(
        cmd(
            c.RefundPayment,
            payment_id=lambda w: w.direct_payment,
            amount_minor=100,
            application_fee_refund_minor=181,
        ),
        RefundExceedsChargeError,
        "application_fee_refund_minor",
        id="fee-refund-fact-over-what-is-left",
    ),
    # --- RefundApplicationFee --------------------------------------------------------------
    pytest.param(
        cmd(c.RefundApplicationFee, payment_id=lambda w: w.direct_payment, amount_minor=181),
        RefundExceedsChargeError,
        "amount",
        id="fee-refund-over-fee",
    ),
    pytest.param(
        cmd(c.RefundApplicationFee, payment_id=lambda w: w.direct_payment, amount_minor=-5),
        InvalidAmountError,
        "amount",
        id="negative-fee-refund",
    ),
    pytest.param(
        cmd(c.RefundApplicationFee, payment_id=lambda w: w.direct_payment, amount_minor=5.0),
        InvalidAmountError,
        "amount",
        id="float-fee-refund",
    ),
    pytest.param(
        cmd(c.RefundApplicationFee, payment_id=_separate_payment),
        InvalidParameterError,
        "payment",
        id="fee-refund-of-charge-without-fee",
    ),
    pytest.param(
        cmd(
            c.RefundApplicationFee,
            payment_id=lambda w: w.direct_payment,
            amount_minor=5,
            fee_refund_id="fr_w",
        ),
        InvalidParameterError,
        "fee_refund_id",
        id="fee-refund-id-already-used",
    ),
    pytest.param(
        cmd(c.RefundApplicationFee, payment_id="py_nobody"),
        PaymentNotFoundError,
        "payment",
        id="fee-refund-of-unknown-payment",
    ),
    # --- OpenDispute / CloseDispute --------------------------------------------------------
    pytest.param(
        cmd(c.OpenDispute, payment_id=_dest_payment, fee_minor=1_500, amount_minor=10_001),
        RefundExceedsChargeError,
        "amount",
        id="dispute-over-captured",
    ),
    pytest.param(
        cmd(c.OpenDispute, payment_id=_dest_payment, fee_minor=-1),
        InvalidAmountError,
        "dispute_fee",
        id="negative-dispute-fee",
    ),
    pytest.param(
        cmd(c.OpenDispute, payment_id=lambda w: w.disputed_payment, fee_minor=1_500),
        InvalidTransitionError,
        "payment",
        id="second-dispute",
    ),
    pytest.param(
        cmd(c.CloseDispute, payment_id=_dest_payment, won=True),
        InvalidTransitionError,
        "payment",
        id="close-dispute-never-opened",
    ),
    pytest.param(
        cmd(c.CloseDispute, payment_id=lambda w: w.disputed_payment, won="yes"),
        InvalidParameterError,
        "won",
        id="dispute-outcome-not-a-bool",
    ),
    pytest.param(
        cmd(c.OpenDispute, payment_id="py_nobody", fee_minor=0),
        PaymentNotFoundError,
        "payment",
        id="dispute-unknown-payment",
    ),
    # --- ReleaseFunds / TopUp --------------------------------------------------------------
    pytest.param(
        cmd(c.ReleaseFunds, account_id="acct_a", currency="USD", until=T0),
        UnknownCurrencyError,
        "currency",
        id="release-uppercase-currency",
    ),
    pytest.param(
        cmd(c.ReleaseFunds, account_id="acct_a", currency="usd", until=NAIVE),
        InvalidParameterError,
        "until",
        id="release-naive-until",
    ),
    pytest.param(
        cmd(c.ReleaseFunds, account_id="acct_nobody", currency="usd", until=T0),
        AccountNotFoundError,
        "account",
        id="release-unknown-account",
    ),
    pytest.param(
        cmd(c.TopUp, account_id=PLATFORM, currency="usd", amount_minor=-1),
        InvalidAmountError,
        "amount",
        id="negative-top-up",
    ),
    pytest.param(
        cmd(c.TopUp, account_id=PLATFORM, currency="usd", amount_minor=AMOUNT_MINOR_MAX + 1),
        AmountTooLargeError,
        "amount",
        id="top-up-over-limit",
    ),
    pytest.param(
        cmd(c.TopUp, account_id="acct_closed", currency="usd", amount_minor=100),
        AccountClosedError,
        "account",
        id="top-up-closed-account",
    ),
    pytest.param(
        cmd(c.TopUp, account_id=PLATFORM, currency="usd", amount_minor=100, available_on=NAIVE),
        InvalidParameterError,
        "available_on",
        id="top-up-naive-available-on",
    ),
    # --- RequestPayout ---------------------------------------------------------------------
    pytest.param(payout(amount_minor=0), InvalidAmountError, "amount", id="zero-payout"),
    pytest.param(payout(amount_minor=-100), InvalidAmountError, "amount", id="negative-payout"),
    pytest.param(payout(amount_minor=1.5), InvalidAmountError, "amount", id="float-payout"),
    pytest.param(
        payout(amount_minor=AMOUNT_MINOR_MAX + 1),
        AmountTooLargeError,
        "amount",
        id="payout-over-limit",
    ),
    pytest.param(payout(currency="USD"), UnknownCurrencyError, "currency", id="payout-uppercase"),
    pytest.param(
        payout(amount_minor=lambda w: w.available("acct_a") + 1),
        InsufficientFundsError,
        "amount",
        id="payout-over-available",
    ),
    pytest.param(
        payout(currency="eur"),
        InsufficientFundsError,
        "amount",
        id="payout-in-a-currency-never-held",
    ),
    pytest.param(
        payout(account_id="acct_off"),
        PayoutsDisabledError,
        "account",
        id="payouts-disabled",
    ),
    pytest.param(
        payout(reported_by_stripe="yes"),
        InvalidParameterError,
        "reported_by_stripe",
        id="reported-by-stripe-not-a-bool",
    ),
    pytest.param(
        payout(account_id="acct_errored"),
        PayoutsDisabledError,
        "account",
        id="payout-to-an-errored-bank-account",
    ),
    pytest.param(
        payout(account_id="acct_closed"), AccountClosedError, "account", id="payout-closed-account"
    ),
    pytest.param(
        payout(account_id="acct_nobody"),
        AccountNotFoundError,
        "account",
        id="payout-unknown-account",
    ),
    pytest.param(
        payout(payout_id=_payout("paid")),
        InvalidParameterError,
        "payout_id",
        id="payout-id-already-used",
    ),
    # --- SubmitPayout ----------------------------------------------------------------------
    pytest.param(
        cmd(c.SubmitPayout, payout_id=_payout("pending"), stripe_payout_id="pay_1"),
        InvalidParameterError,
        "stripe_payout_id",
        id="stripe-payout-id-without-po-prefix",
    ),
    pytest.param(
        cmd(c.SubmitPayout, payout_id=_payout("paid"), stripe_payout_id="po_stripe_2"),
        InvalidTransitionError,
        "stripe_payout_id",
        id="payout-submitted-twice",
    ),
    pytest.param(
        cmd(c.SubmitPayout, payout_id="po_nobody", stripe_payout_id="po_stripe_3"),
        PayoutNotFoundError,
        "payout",
        id="submit-unknown-payout",
    ),
    # --- payout transitions ----------------------------------------------------------------
    pytest.param(
        cmd(c.MarkPayoutInTransit, payout_id=_payout("paid")),
        InvalidTransitionError,
        "status",
        id="paid-to-in-transit",
    ),
    pytest.param(
        cmd(c.MarkPayoutInTransit, payout_id=_payout("in_transit")),
        InvalidTransitionError,
        "status",
        id="in-transit-twice",
    ),
    pytest.param(
        cmd(c.MarkPayoutPaid, payout_id=_payout("pending")),
        InvalidTransitionError,
        "status",
        id="pending-to-paid",
    ),
    pytest.param(
        cmd(c.MarkPayoutPaid, payout_id=_payout("failed")),
        InvalidTransitionError,
        "status",
        id="failed-to-paid",
    ),
    pytest.param(
        cmd(c.CancelPayout, payout_id=_payout("in_transit")),
        InvalidTransitionError,
        "status",
        id="cancel-after-in-transit",
    ),
    pytest.param(
        cmd(c.CancelPayout, payout_id=_payout("paid")),
        InvalidTransitionError,
        "status",
        id="cancel-after-paid",
    ),
    pytest.param(
        cmd(c.FailPayout, payout_id=_payout("canceled"), failure_code="could_not_process"),
        InvalidTransitionError,
        "status",
        id="fail-canceled-payout",
    ),
    pytest.param(
        cmd(c.FailPayout, payout_id=_payout("failed"), failure_code="could_not_process"),
        InvalidTransitionError,
        "status",
        id="fail-failed-payout",
    ),
    pytest.param(
        cmd(c.FailPayout, payout_id=_payout("in_transit"), failure_code=""),
        InvalidParameterError,
        "failure_code",
        id="empty-failure-code",
    ),
    pytest.param(
        cmd(c.MarkPayoutInTransit, payout_id="po_nobody"),
        PayoutNotFoundError,
        "payout",
        id="unknown-payout",
    ),
    pytest.param(
        cmd(c.CancelPayout, payout_id=None),
        InvalidParameterError,
        "payout_id",
        id="payout-id-not-a-string",
    ),
    # --- holds (Stripe did not take it; an operator must fix something) --------------------
    pytest.param(
        cmd(c.HoldPayout, payout_id=_payout("in_transit"), reason_code="account_invalid"),
        InvalidTransitionError,
        "status",
        id="hold-payout-in-transit",
    ),
    pytest.param(
        cmd(c.HoldPayout, payout_id=_payout("pending"), reason_code="api key expired"),
        InvalidParameterError,
        "reason_code",
        id="hold-reason-not-a-code",
    ),
    pytest.param(
        cmd(c.HoldPayout, payout_id=_payout("pending"), reason_code="x", message="m" * 256),
        InvalidParameterError,
        "message",
        id="hold-message-too-long",
    ),
    pytest.param(
        cmd(c.HoldPayout, payout_id="po_nobody", reason_code="account_invalid"),
        PayoutNotFoundError,
        "payout",
        id="hold-unknown-payout",
    ),
    pytest.param(
        cmd(
            c.HoldRouting,
            payment_id=_separate_payment,
            destination="acct_b",
            reason_code="account_invalid",
        ),
        InvalidParameterError,
        "destination",
        id="hold-routing-not-planned",
    ),
    pytest.param(
        cmd(c.HoldRouting, payment_id="py_nobody", destination="acct_b", reason_code="x"),
        PaymentNotFoundError,
        "payment",
        id="hold-routing-unknown-payment",
    ),
    pytest.param(
        cmd(c.ResumeRouting, payment_id=_separate_payment),
        InvalidTransitionError,
        "payment_id",
        id="resume-routing-not-held",
    ),
    # --- Reconciliation (ledger.reconciliation) ------------------------------------------
    pytest.param(
        cmd(
            recon.ReportBreak,
            account_id="acct_a",
            currency="usd",
            key="ch_x",
            break_name="looks_fine",
            stripe_ref="txn_x",
            ledger_ref="",
        ),
        InvalidParameterError,
        "break_name",
        id="break-unknown-name",
    ),
    pytest.param(
        cmd(
            recon.ReportBreak,
            account_id="acct_nobody",
            currency="usd",
            key="ch_x",
            break_name="missing_in_ledger",
            stripe_ref="txn_x",
            ledger_ref="",
        ),
        AccountNotFoundError,
        "account",
        id="break-unknown-account",
    ),
    pytest.param(
        cmd(
            recon.ReportBreak,
            account_id="acct_a",
            currency="usd",
            key="ch_x",
            break_name="missing_in_ledger",
            stripe_ref="txn_x",
            ledger_ref="",
            clearing_pending_minor=100,
        ),
        InvalidParameterError,
        "clearing_on",
        id="break-pending-clearing-without-instant",
    ),
    pytest.param(
        cmd(
            recon.ReportBreak,
            account_id="acct_a",
            currency="usd",
            key="ch_x",
            break_name="amount_mismatch",
            stripe_ref="txn_x",
            ledger_ref="",
            difference={"amount": Decimal("1.5")},
        ),
        InvalidParameterError,
        "difference.amount",
        id="break-decimal-difference",
    ),
    pytest.param(
        cmd(recon.ResolveBreak, account_id="acct_a", currency="usd", key="ch_never", how="matched"),
        InvalidParameterError,
        "key",
        id="resolve-unknown-break",
    ),
    pytest.param(
        cmd(recon.AdvanceCursor, account_id="acct_a", cursor=-1),
        InvalidParameterError,
        "cursor",
        id="cursor-negative",
    ),
    # --- authorization holds (ledger.holds; more cases in tests/unit/test_holds.py) ------------
    pytest.param(
        cmd(holds.CaptureAuthorization, payment_id=_separate_payment),
        holds.AuthorizationNotFoundError,
        "payment",
        id="capture-without-authorization",
    ),
    pytest.param(
        cmd(holds.CaptureAuthorization, payment_id="ch_nope", amount_minor=0),
        holds.AuthorizationNotFoundError,
        "payment",
        id="capture-unknown-authorization",
    ),
]


@pytest.mark.parametrize(("build", "error", "param"), CASES)
def test_bad_input_raises_its_specific_error_and_records_nothing(
    world: World, build: Build, error: E, param: str | None
) -> None:
    app = world.app
    command = build(world)
    before = event_count(app)
    with pytest.raises(SluiceError) as caught:
        app.execute(command)
    assert type(caught.value) is error, caught.value
    assert caught.value.code == error.code
    if param is not None:
        assert caught.value.param == param
    assert event_count(app) == before
    if isinstance(command.idempotency_key, str) and error is not IdempotencyConflictError:
        # The key stays free: nothing remembers the rejected attempt.
        assert command_record(app, command.idempotency_key) is None


def test_every_command_type_has_bad_input_cases() -> None:
    world = build_world()
    covered = {type(param.values[0](world)) for param in CASES}
    assert covered == set(c.Command.__subclasses__())


@pytest.fixture(scope="module")
def shared_world() -> World:
    """One world for every case below: each of them must leave it as it found it."""
    return build_world()


@pytest.mark.parametrize(("build", "error", "param"), CASES)
def test_bad_input_in_a_batch_is_reported_on_its_result_not_raised(
    shared_world: World, build: Build, error: E, param: str | None
) -> None:
    app = shared_world.app
    before = event_count(app)
    [result] = app.execute_batch([build(shared_world)])
    assert type(result.error) is error
    assert result.position is None
    assert not result.ok
    assert event_count(app) == before


# --- batches ------------------------------------------------------------------------------


def _good_and_bad(w: World) -> list[tuple[bool, c.Command]]:
    at = T0 + timedelta(hours=2)

    def key(n: int) -> dict[str, Any]:
        return {"idempotency_key": f"mix-{n}", "effective_at": at}

    return [
        (True, c.RequestPayout(**key(0), account_id="acct_a", currency="usd", amount_minor=300)),
        (False, c.RequestPayout(**key(1), account_id="acct_off", currency="usd", amount_minor=1)),
        (
            False,
            c.RecordPayment(
                **key(2),
                charge_type="separate",
                currency="usd",
                amount_minor=4_000,
                split=(SplitPart("acct_a", share_bps=5_000), SplitPart("acct_zz", share_bps=10)),
            ),
        ),
        (
            True,
            c.RecordPayment(
                **key(3),
                charge_type="separate",
                currency="usd",
                amount_minor=4_000,
                stripe_fee_minor=146,
                split=(SplitPart("acct_a", share_bps=5_000), SplitPart("acct_b", fixed_minor=7)),
            ),
        ),
        (
            False,
            c.RequestPayout(
                **key(4),
                account_id="acct_a",
                currency="usd",
                amount_minor=w.available("acct_a") - 300 + 1,  # more than the first left
            ),
        ),
        (False, c.RefundPayment(**key(5), payment_id=w.destination_payment, amount_minor=10_001)),
        (True, c.RefundPayment(**key(6), payment_id=w.destination_payment, amount_minor=2_500)),
        (False, c.TopUp(**key(7), account_id=PLATFORM, currency="usd", amount_minor=10.0)),
        (True, c.MarkPayoutInTransit(**key(8), payout_id=w.payouts["pending"])),
        (False, c.CancelPayout(**key(9), payout_id=w.payouts["pending"])),  # now in transit
        (True, c.TopUp(**key(10), account_id=PLATFORM, currency="jpy", amount_minor=7)),
    ]


def _event_signature(app: Ledger, after: int) -> list[Any]:
    return [event for _, event in app.iter_events(after=after)]


def test_a_batch_records_exactly_its_good_commands() -> None:
    mixed, alone = build_world(), build_world()
    plan = _good_and_bad(mixed)
    good_only = [command for ok, command in _good_and_bad(alone) if ok]
    mark_mixed = max(position for position, _ in mixed.app.iter_events())
    mark_alone = max(position for position, _ in alone.app.iter_events())

    results = mixed.app.execute_batch([command for _, command in plan])
    alone_results = alone.app.execute_batch(good_only)

    assert [r.ok for r in results] == [ok for ok, _ in plan]
    for result, (ok, command) in zip(results, plan, strict=True):
        assert result.idempotency_key == command.idempotency_key
        if ok:
            assert result.position is not None and result.position > mark_mixed
            assert command_record(mixed.app, command.idempotency_key) is not None
        else:
            assert isinstance(result.error, SluiceError)
            assert result.position is None
            assert command_record(mixed.app, command.idempotency_key) is None
    assert all(r.ok for r in alone_results)
    assert [r.ids for r in results if r.ok] == [r.ids for r in alone_results]
    # The same events, in the same order, as if the bad commands had never been sent.
    assert _event_signature(mixed.app, mark_mixed) == _event_signature(alone.app, mark_alone)
    positions = [r.position for r in results if r.ok]
    assert positions == sorted(positions)
    assert max(positions) == max(p for p, _ in mixed.app.iter_events())  # type: ignore[type-var]


def test_a_rejected_split_payment_in_the_middle_of_a_batch_leaves_no_payment_or_transfer(
    world: World,
) -> None:
    app = world.app
    at = T0 + timedelta(hours=3)
    bad = c.RecordPayment(
        idempotency_key="split-bad",
        effective_at=at,
        charge_type="separate",
        currency="usd",
        amount_minor=4_000,
        split=(SplitPart("acct_a", share_bps=5_000), SplitPart("acct_zz", share_bps=2_000)),
    )
    before_a = app.get_balance("acct_a", "usd")
    before_platform = app.get_balance(PLATFORM, "usd")
    mark = max(position for position, _ in app.iter_events())
    results = app.execute_batch(
        [
            c.TopUp(
                idempotency_key="b-1",
                effective_at=at,
                account_id=PLATFORM,
                currency="usd",
                amount_minor=5,
            ),
            bad,
            c.TopUp(
                idempotency_key="b-2",
                effective_at=at,
                account_id=PLATFORM,
                currency="usd",
                amount_minor=7,
            ),
        ]
    )
    assert [r.ok for r in results] == [True, False, True]
    assert type(results[1].error) is AccountNotFoundError
    assert results[1].error.param == "split"
    payment_id = object_id("py", "split-bad")
    assert app.get_payment(payment_id) is None
    assert app.get_transfer(object_id("tr", payment_id, "acct_a")) is None
    assert command_record(app, "split-bad") is None
    created = [type(e).__qualname__ for _, e in app.iter_events(after=mark)]
    assert created.count("Balance.ToppedUp") == 2
    assert not [name for name in created if name.startswith(("Payment.", "Transfer."))]
    assert created.count("CommandRecord.Accepted") == 2  # the two top-ups only
    after_a = app.get_balance("acct_a", "usd")
    assert after_a is not None and before_a is not None
    assert (after_a.pending_minor, after_a.available_minor) == (
        before_a.pending_minor,
        before_a.available_minor,
    )
    after_platform = app.get_balance(PLATFORM, "usd")
    assert after_platform is not None and before_platform is not None
    assert after_platform.pending_minor == before_platform.pending_minor + 12
    # The key is still free: the corrected command goes through under it.
    fixed = replace(bad, split=(SplitPart("acct_a", share_bps=5_000),))
    assert app.execute(fixed).ids["payment"] == payment_id


def test_a_late_rejection_does_not_leak_its_changes_to_later_commands_of_the_batch() -> None:
    """The sourced transfer first notes itself on its payment, then finds too little available:
    that note must not survive into the next command of the same batch."""
    app = new_ledger("memory://", lambda: T0)
    app.open_account(idempotency_key="o0", account_id=PLATFORM, kind="platform")
    app.open_account(idempotency_key="o1", account_id="acct_a")
    payment = app.record_payment(
        idempotency_key="p",
        charge_type="separate",
        currency="usd",
        amount_minor=10_000,
        stripe_fee_minor=300,
        available_on=T0,
    ).ids["payment"]
    app.release_funds(idempotency_key="r", account_id=PLATFORM, currency="usd", until=T0)
    before = event_count(app)

    def sourced(key: str, amount: int) -> c.CreateTransfer:
        return c.CreateTransfer(
            idempotency_key=key,
            effective_at=T0,
            destination_account_id="acct_a",
            currency="usd",
            amount_minor=amount,
            source_payment_id=payment,
        )

    too_much, fits = app.execute_batch([sourced("t1", 9_800), sourced("t2", 9_000)])
    assert type(too_much.error) is InsufficientFundsError
    assert fits.ok
    found = app.get_payment(payment)
    assert found is not None
    assert found.sourced_transfers == {fits.ids["transfer"]: 9_000}
    assert event_count(app) > before


def test_replaying_a_key_inside_the_same_batch_returns_the_first_result() -> None:
    world = build_world()
    app = world.app
    first = c.TopUp(
        idempotency_key="twice",
        effective_at=T0,
        account_id=PLATFORM,
        currency="usd",
        amount_minor=5,
    )
    again = replace(first, effective_at=T0 + timedelta(days=1))
    changed = replace(first, amount_minor=6)
    mark = max(position for position, _ in app.iter_events())
    one, two, three = app.execute_batch([first, again, changed])
    assert one.ok and not one.replayed
    assert two.ok and two.replayed and two.ids == one.ids and two.position is None
    assert type(three.error) is IdempotencyConflictError
    created = [type(e).__qualname__ for _, e in app.iter_events(after=mark)]
    assert created.count("Balance.ToppedUp") == 1  # booked once, not once per copy
    assert created.count("CommandRecord.Accepted") == 1
    after = event_count(app)
    assert app.execute(again).replayed
    assert event_count(app) == after


# --- Defects found while these tests were written, since fixed in ledger/ ------------------
# Each failed against the code of its day and stays as a regression test:
# * reused refund / reversal ids overwrote the earlier record and undercounted: 1_600 reversed
#   from a 1_000 transfer (fixed in 89fb072);
# * a Decimal amount crashed fingerprint() with TypeError and sank its whole batch; closed-account
#   errors always said param="account"; a destination charge whose derived transfer id was taken
#   failed its whole batch with concurrent_modification or, inside one batch, silently replaced
#   the earlier transfer so balances no longer matched the journal (all fixed in 807b284);
# * client-chosen refund, reversal, fee refund, dispute and top-up ids were unique per object at
#   best, so the same id on two objects booked two journal entries under one entry id, which
#   jammed the balance_transactions projection on its primary key; a refund named like an earlier
#   fee refund overwrote it in Payment.fee_refunds; and a non-string id, or a None key on a
#   command that creates something, crashed the pre-batch id probe with TypeError, sinking the
#   batch (top-up ids fixed in 38e846a, the rest in 43d6577).


def _reversed_per_journal(app: Ledger, transfer_id: str) -> int:
    transfer = app.get_transfer(transfer_id)
    assert transfer is not None
    return sum(
        event.amount_minor
        for event in app.events.get(transfer.id)
        if type(event).__qualname__ == "Transfer.Reversed"
    )


def _funded_ledger() -> Ledger:
    app = new_ledger("memory://", lambda: T0)
    app.open_account(idempotency_key="o0", account_id=PLATFORM, kind="platform")
    app.open_account(idempotency_key="o1", account_id="acct_a")
    app.open_account(idempotency_key="o2", account_id="acct_b")
    app.top_up(idempotency_key="t", account_id=PLATFORM, currency="usd", amount_minor=100_000)
    app.release_funds(idempotency_key="r", account_id=PLATFORM, currency="usd", until=T0)
    return app


def test_reusing_a_reversal_id_never_reverses_more_than_was_transferred() -> None:
    app = _funded_ledger()
    tr = app.create_transfer(
        idempotency_key="tr", destination_account_id="acct_a", currency="usd", amount_minor=1_000
    ).ids["transfer"]
    app.create_transfer(  # more funds on acct_a, so reversals are not limited by availability
        idempotency_key="tr2", destination_account_id="acct_a", currency="usd", amount_minor=5_000
    )
    app.reverse_transfer(idempotency_key="rv1", transfer_id=tr, amount_minor=600, reversal_id="x")
    before = event_count(app)
    with pytest.raises(InvalidParameterError) as caught:
        app.reverse_transfer(
            idempotency_key="rv2", transfer_id=tr, amount_minor=400, reversal_id="x"
        )
    assert caught.value.param == "reversal_id"
    assert event_count(app) == before
    with pytest.raises(ReversalExceedsTransferError):
        app.reverse_transfer(idempotency_key="rv3", transfer_id=tr, amount_minor=600)
    transfer = app.get_transfer(tr)
    assert transfer is not None
    assert transfer.reversed_minor == _reversed_per_journal(app, tr) == 600


def test_reusing_a_refund_id_keeps_refunds_and_reversals_consistent() -> None:
    app = _funded_ledger()
    ids = app.record_payment(
        idempotency_key="p",
        charge_type="destination",
        currency="usd",
        amount_minor=1_000,
        account_id="acct_a",
        available_on=T0,
    ).ids
    app.release_funds(idempotency_key="ra", account_id="acct_a", currency="usd", until=T0)

    def refund(key: str) -> CommandResult:
        return app.refund_payment(
            idempotency_key=key,
            payment_id=ids["payment"],
            amount_minor=500,
            reverse_transfer=True,
            refund_id="re_client_1",
        )

    refund("rf1")
    before = event_count(app)
    with pytest.raises(InvalidParameterError):
        refund("rf2")
    assert event_count(app) == before
    payment = app.get_payment(ids["payment"])
    assert payment is not None
    assert sum(payment.refunds.values()) == payment.refunded_minor == 500
    transfer = app.get_transfer(ids["transfer"])
    assert transfer is not None
    assert transfer.reversed_minor == _reversed_per_journal(app, ids["transfer"]) == 500


@pytest.mark.parametrize(
    ("build", "param"),
    [
        pytest.param(
            pay(split=(SplitPart("acct_closed", share_bps=5_000),)), "split", id="split-part"
        ),
        pytest.param(transfer(destination_account_id="acct_closed"), "destination", id="transfer"),
        pytest.param(
            pay(charge_type="destination", account_id="acct_a", on_behalf_of="acct_closed"),
            "on_behalf_of",
            id="on-behalf-of",
        ),
    ],
)
def test_a_closed_account_error_names_the_param_that_named_it(
    world: World, build: Build, param: str
) -> None:
    with pytest.raises(AccountClosedError) as caught:
        world.app.execute(build(world))
    unknown = replace(build(world), idempotency_key="other")
    with pytest.raises(AccountNotFoundError) as not_found:
        world.app.execute(_rename_account(unknown, "acct_closed", "acct_nobody"))
    assert not_found.value.param == param  # the unknown account is reported with its param…
    assert caught.value.param == param  # …and so is the closed one


def _rename_account(command: c.Command, old: str, new: str) -> c.Command:
    if isinstance(command, c.RecordPayment) and command.split:
        return replace(command, split=(SplitPart(new, share_bps=5_000),))
    if isinstance(command, c.RecordPayment):
        return replace(command, on_behalf_of=new)
    assert isinstance(command, c.CreateTransfer) and command.destination_account_id == old
    return replace(command, destination_account_id=new)


def test_a_decimal_amount_is_refused_as_an_invalid_amount_not_a_crash(world: World) -> None:
    app = world.app
    before = event_count(app)
    with pytest.raises(InvalidAmountError):
        app.execute(
            c.TopUp(
                idempotency_key="dec",
                effective_at=T0,
                account_id=PLATFORM,
                currency="usd",
                amount_minor=Decimal("1000"),  # type: ignore[arg-type]
            )
        )
    assert event_count(app) == before


def test_a_decimal_amount_in_a_batch_does_not_sink_the_good_commands(world: World) -> None:
    app = world.app
    good = c.TopUp(
        idempotency_key="good", effective_at=T0, account_id=PLATFORM, currency="usd", amount_minor=5
    )
    bad = replace(good, idempotency_key="bad", amount_minor=Decimal("5"))  # type: ignore[arg-type]
    results = app.execute_batch([good, bad])
    assert results[0].ok
    assert type(results[1].error) is InvalidAmountError


def _order_transfer() -> c.CreateTransfer:
    # No transfer_id: it defaults to object_id("tr", idempotency_key) = object_id("tr", "order-1")
    return c.CreateTransfer(
        idempotency_key="order-1",
        effective_at=T0,
        destination_account_id="acct_a",
        currency="usd",
        amount_minor=1_000,
    )


def _order_payment() -> c.RecordPayment:
    # Its destination transfer derives object_id("tr", payment_id) = object_id("tr", "order-1").
    return c.RecordPayment(
        idempotency_key="pay-order-1",
        effective_at=T0,
        payment_id="order-1",
        charge_type="destination",
        currency="usd",
        amount_minor=2_000,
        account_id="acct_a",
        available_on=T0,
    )


def _assert_balances_mirror_the_journal(app: Ledger) -> None:
    _, books = app.journal_totals()
    for account in (PLATFORM, "acct_a"):
        balance = app.get_balance(account, "usd")
        assert balance is not None
        assert balance.pending_minor == books.get((account, PENDING, "usd"), 0)
        assert balance.available_minor == books.get((account, AVAILABLE, "usd"), 0)


def test_a_destination_charge_never_overwrites_a_transfer_created_earlier_in_its_batch() -> None:
    app = _funded_ledger()
    made, clash = app.execute_batch([_order_transfer(), _order_payment()])
    assert made.ok
    assert type(clash.error) is InvalidParameterError
    assert clash.error.param == "transfer_id"
    created = app.get_transfer(made.ids["transfer"])
    assert created is not None and created.amount_minor == 1_000
    _assert_balances_mirror_the_journal(app)


def test_a_transfer_id_clash_is_refused_alone_not_as_a_batch_wide_concurrency_error() -> None:
    app = _funded_ledger()
    app.execute(_order_transfer())
    top_up = c.TopUp(
        idempotency_key="t2", effective_at=T0, account_id=PLATFORM, currency="usd", amount_minor=5
    )
    clash, good = app.execute_batch([_order_payment(), top_up])
    assert not isinstance(clash.error, ConcurrencyError)
    assert type(clash.error) is InvalidParameterError
    assert clash.error.param == "transfer_id"
    assert good.ok
    _assert_balances_mirror_the_journal(app)


def test_a_pending_lot_past_the_limit_is_refused_and_records_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(balances, "LOTS_MAX", 3)
    app = _funded_ledger()
    app.update_account(idempotency_key="en", account_id="acct_a", charges_enabled=True)
    for day in range(3):
        app.top_up(
            idempotency_key=f"lot{day}",
            account_id="acct_a",
            currency="usd",
            amount_minor=10,
            available_on=T0 + timedelta(days=day + 1),
        )
    before = event_count(app)
    with pytest.raises(PendingLotsExceededError) as caught:
        app.record_payment(
            idempotency_key="one-too-many",
            charge_type="direct",
            currency="usd",
            amount_minor=1_000,
            account_id="acct_a",
            available_on=T0 + timedelta(days=9),
        )
    assert caught.value.code == "pending_lots_exceeded"
    assert caught.value.param == "available_on"
    assert event_count(app) == before
    # An instant that already has a lot still fits.
    app.record_payment(
        idempotency_key="fits",
        charge_type="direct",
        currency="usd",
        amount_minor=1_000,
        account_id="acct_a",
        available_on=T0 + timedelta(days=2),
    )


def _two_separate_payments(app: Ledger) -> tuple[str, str]:
    return tuple(  # type: ignore[return-value]
        app.record_payment(
            idempotency_key=f"sp{n}",
            charge_type="separate",
            currency="usd",
            amount_minor=1_000,
            available_on=T0,
        ).ids["payment"]
        for n in (1, 2)
    )


def _two_direct_payments_with_fees(app: Ledger) -> tuple[str, str]:
    app.update_account(idempotency_key="en-a", account_id="acct_a", charges_enabled=True)
    return tuple(  # type: ignore[return-value]
        app.record_payment(
            idempotency_key=f"dp{n}",
            charge_type="direct",
            currency="usd",
            amount_minor=1_000,
            application_fee_minor=100,
            account_id="acct_a",
            available_on=T0,
        ).ids["payment"]
        for n in (1, 2)
    )


def _topup_twice(app: Ledger) -> None:
    for key in ("tu-a", "tu-b"):
        app.top_up(
            idempotency_key=key,
            account_id=PLATFORM,
            currency="usd",
            amount_minor=5,
            topup_id="tu_client_1",
        )


def _refund_two_payments(app: Ledger) -> None:
    for n, payment in enumerate(_two_separate_payments(app)):
        app.refund_payment(
            idempotency_key=f"re{n}", payment_id=payment, amount_minor=100, refund_id="re_client_1"
        )


def _reverse_two_transfers(app: Ledger) -> None:
    for n, account in enumerate(("acct_a", "acct_b")):
        tr = app.create_transfer(
            idempotency_key=f"tr{n}",
            destination_account_id=account,
            currency="usd",
            amount_minor=500,
        ).ids["transfer"]
        app.reverse_transfer(
            idempotency_key=f"rv{n}", transfer_id=tr, amount_minor=100, reversal_id="trr_client_1"
        )


def _dispute_two_payments(app: Ledger) -> None:
    for n, payment in enumerate(_two_separate_payments(app)):
        app.open_dispute(
            idempotency_key=f"dp{n}", payment_id=payment, fee_minor=0, dispute_id="dp_client_1"
        )


def _refund_two_fees(app: Ledger) -> None:
    for n, payment in enumerate(_two_direct_payments_with_fees(app)):
        app.refund_application_fee(
            idempotency_key=f"fr{n}", payment_id=payment, amount_minor=30, fee_refund_id="fr_1"
        )


def _refund_named_like_a_fee_refund(app: Ledger) -> None:
    payment, _ = _two_direct_payments_with_fees(app)
    app.refund_application_fee(
        idempotency_key="fr", payment_id=payment, amount_minor=30, fee_refund_id="x_1"
    )
    app.refund_payment(
        idempotency_key="re",
        payment_id=payment,
        amount_minor=500,
        refund_application_fee=True,
        refund_id="x_1",
    )


@pytest.mark.parametrize(
    "reuse",
    [
        pytest.param(_topup_twice, id="topup-id-twice"),
        pytest.param(_refund_two_payments, id="refund-id-on-two-payments"),
        pytest.param(_reverse_two_transfers, id="reversal-id-on-two-transfers"),
        pytest.param(_dispute_two_payments, id="dispute-id-on-two-payments"),
        pytest.param(_refund_two_fees, id="fee-refund-id-on-two-payments"),
        pytest.param(_refund_named_like_a_fee_refund, id="refund-id-of-a-fee-refund"),
    ],
)
def test_a_client_id_used_twice_never_yields_two_journal_entries_with_one_id(
    reuse: Callable[[Ledger], None],
) -> None:
    """Journal entry ids derive from client-chosen ids (txn_…(kind, id)), and read models key
    their rows on them: one id, one entry, ledger-wide."""
    app = _funded_ledger()
    with contextlib.suppress(SluiceError):  # the reuse is refused
        reuse(app)
    seen = Counter(event.entry_id for _, event in app.iter_journal())
    assert [entry for entry, n in seen.items() if n > 1] == []


def test_a_fee_refund_id_reused_by_a_refund_keeps_the_fee_refunds_consistent() -> None:
    """A refund that also refunds fee goes by the refund's id in Payment.fee_refunds: an earlier
    standalone fee refund under that id must not be overwritten (it was: {'x_1': 50} while 80 of
    the fee had been refunded)."""
    app = _funded_ledger()
    with contextlib.suppress(SluiceError):
        _refund_named_like_a_fee_refund(app)
    payment = app.get_payment(object_id("py", "dp1"))
    assert payment is not None
    assert sum(payment.fee_refunds.values()) == payment.application_fee_refunded_minor


def test_a_reused_refund_id_does_not_jam_the_balance_transactions_projection(
    tmp_path: Path,
) -> None:
    """Duplicate entry ids made the projection's INSERT fail on its primary key on every
    catch-up, so no later event reached the read model."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'ledger.db'}")
    init_database(settings)
    app = bootstrap(settings, clock=lambda: T0)
    try:
        app.open_account(idempotency_key="o0", account_id=PLATFORM, kind="platform")
        with contextlib.suppress(SluiceError):
            _refund_two_payments(app)
        app.top_up(idempotency_key="later", account_id=PLATFORM, currency="jpy", amount_minor=9)
        projector = Projector(app, read_model(settings, create_tables=True))
        projector.catch_up("balance_transactions")
        head = max(position for position, _ in app.iter_events())
        assert projector.position("balance_transactions") == head
    finally:
        app.close()


def _open_platform() -> c.OpenAccount:
    return c.OpenAccount(
        idempotency_key="open-platform", effective_at=T0, account_id=PLATFORM, kind="platform"
    )


_AT = {"effective_at": T0}


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(
            c.RequestPayout(
                idempotency_key=None,  # type: ignore[arg-type]
                **_AT,
                account_id=PLATFORM,
                currency="usd",
                amount_minor=5,
            ),
            id="payout-with-a-none-key",
        ),
        pytest.param(
            c.RecordPayment(
                idempotency_key=None,  # type: ignore[arg-type]
                **_AT,
                charge_type="separate",
                currency="usd",
                amount_minor=5,
            ),
            id="payment-with-a-none-key",
        ),
        pytest.param(
            c.TopUp(
                idempotency_key=None,  # type: ignore[arg-type]
                **_AT,
                account_id=PLATFORM,
                currency="usd",
                amount_minor=5,
            ),
            id="top-up-with-a-none-key",
        ),
        pytest.param(
            c.CreateTransfer(
                idempotency_key=1234,  # type: ignore[arg-type]
                **_AT,
                destination_account_id="acct_a",
                currency="usd",
                amount_minor=5,
            ),
            id="transfer-with-an-int-key",
        ),
        pytest.param(
            c.RecordPayment(
                idempotency_key="k1",
                **_AT,
                charge_type="separate",
                currency="usd",
                amount_minor=5,
                payment_id=123,  # type: ignore[arg-type]
            ),
            id="int-payment-id",
        ),
        pytest.param(
            c.CreateTransfer(
                idempotency_key="k2",
                **_AT,
                destination_account_id="acct_a",
                currency="usd",
                amount_minor=5,
                transfer_id=7,  # type: ignore[arg-type]
            ),
            id="int-transfer-id",
        ),
        pytest.param(
            c.RequestPayout(
                idempotency_key="k3",
                **_AT,
                account_id=PLATFORM,
                currency="usd",
                amount_minor=5,
                payout_id=["po_1"],  # type: ignore[arg-type]
            ),
            id="list-payout-id",
        ),
        pytest.param(
            c.RecordPayment(
                idempotency_key="k4",
                **_AT,
                charge_type="separate",
                currency="usd",
                amount_minor=5,
                split=(SplitPart(None, share_bps=100),),  # type: ignore[arg-type]
            ),
            id="split-part-without-account",
        ),
    ],
)
def test_a_non_string_id_is_refused_alone_not_a_crash_of_the_batch(bad: c.Command) -> None:
    """Ledger._run_batch probes the ids its commands would create before any validation runs;
    object_id() joins them as strings, so a non-string id or key used to raise TypeError there
    and sink every good command of the batch."""
    app = new_ledger("memory://", lambda: T0)
    results = app.execute_batch([_open_platform(), bad])
    assert results[0].ok
    assert isinstance(results[1].error, InvalidParameterError | SplitRuleError)


# Payouts in every currency (ledger.payout_fx): facts, recorded through Ledger.record ----------


def _converted(**params: Any) -> Build:
    from ledger.payout_fx import PayoutConverted

    defaults: dict[str, Any] = {
        "payout_id": _payout("pending"),
        "amount_minor": 100,
        "bank_currency": "eur",
        "bank_amount_minor": 92,
        "exchange_rate": "0.9238",
    }
    return cmd(PayoutConverted, **(defaults | params))  # type: ignore[arg-type]


def _fee(**params: Any) -> Build:
    from ledger.payout_fx import PayoutFeeCharged

    defaults: dict[str, Any] = {"payout_id": _payout("pending"), "stripe_fee_minor": 1}
    return cmd(PayoutFeeCharged, **(defaults | params))  # type: ignore[arg-type]


def _banks(by_currency: Any, account_id: str = "acct_a") -> Build:
    from ledger.payout_fx import ExternalAccountsReported

    return cmd(ExternalAccountsReported, account_id=account_id, by_currency=by_currency)  # type: ignore[arg-type]


PAYOUT_FX_CASES: list[Any] = [
    pytest.param(
        _converted(exchange_rate="1,08"), InvalidParameterError, "exchange_rate", id="fx-rate-comma"
    ),
    pytest.param(
        _converted(exchange_rate=1.08), InvalidParameterError, "exchange_rate", id="fx-rate-float"
    ),
    pytest.param(
        _converted(exchange_rate="0.000"), InvalidParameterError, "exchange_rate", id="fx-rate-zero"
    ),
    pytest.param(
        _converted(bank_currency="usd"),
        InvalidParameterError,
        "bank_currency",
        id="fx-same-currency",
    ),
    pytest.param(
        _converted(bank_currency="xxx"),
        UnknownCurrencyError,
        "bank_currency",
        id="fx-unknown-currency",
    ),
    pytest.param(
        _converted(amount_minor=101), InvalidParameterError, "amount_minor", id="fx-other-amount"
    ),
    pytest.param(
        _converted(bank_amount_minor=0),
        InvalidAmountError,
        "bank_amount_minor",
        id="fx-zero-bank-amount",
    ),
    pytest.param(
        _converted(payout_id="po_nope"), PayoutNotFoundError, "payout", id="fx-unknown-payout"
    ),
    pytest.param(
        _converted(payout_id=_payout("failed")),
        InvalidTransitionError,
        "status",
        id="fx-failed-payout",
    ),
    pytest.param(
        _fee(stripe_fee_minor=-1), InvalidAmountError, "stripe_fee_minor", id="fee-negative"
    ),
    pytest.param(_fee(stripe_fee_minor="1"), InvalidAmountError, "stripe_fee_minor", id="fee-text"),
    pytest.param(_fee(payout_id="po_nope"), PayoutNotFoundError, "payout", id="fee-unknown-payout"),
    pytest.param(
        _fee(stripe_fee_minor=0), InvalidParameterError, "stripe_fee_minor", id="fee-none"
    ),
    pytest.param(
        _fee(application_fee_minor=5, platform_account_id=PLATFORM, application_fee_id="ch_x"),
        InvalidParameterError,
        "application_fee_id",
        id="fee-not-a-fee-id",
    ),
    pytest.param(
        _fee(application_fee_minor=5),
        AccountNotFoundError,
        "platform_account_id",
        id="fee-platform-unnamed",
    ),
    pytest.param(
        _fee(application_fee_minor=5, platform_account_id="acct_a"),
        InvalidParameterError,
        "platform_account_id",
        id="fee-platform-is-a-seller",
    ),
    pytest.param(
        _fee(application_fee_minor=-5, platform_account_id=PLATFORM),
        InvalidAmountError,
        "application_fee_minor",
        id="fee-platform-negative",
    ),
    pytest.param(
        _fee(payout_id=_payout("canceled")), InvalidTransitionError, "status", id="fee-canceled"
    ),
    pytest.param(
        _banks({"xxx": "new"}), UnknownCurrencyError, "by_currency", id="banks-unknown-currency"
    ),
    pytest.param(
        _banks({"eur": "lost"}), InvalidParameterError, "by_currency", id="banks-unknown-status"
    ),
    pytest.param(_banks("eur"), InvalidParameterError, "by_currency", id="banks-not-a-map"),
    pytest.param(
        _banks({"eur": "new"}, "acct_nope"),
        AccountNotFoundError,
        "account",
        id="banks-unknown-account",
    ),
]


@pytest.mark.parametrize(("build", "error", "param"), PAYOUT_FX_CASES)
def test_a_malformed_payout_fx_fact_raises_its_specific_error_and_records_nothing(
    world: World, build: Build, error: E, param: str | None
) -> None:
    app = world.app
    fact = build(world)
    before = event_count(app)
    with pytest.raises(SluiceError) as caught:
        app.record(fact)  # type: ignore[arg-type]
    assert type(caught.value) is error, caught.value
    assert caught.value.param == param
    assert event_count(app) == before
    assert command_record(app, fact.idempotency_key) is None
