"""Stripe JSON → facts: pure translations, checked on objects shaped as Stripe's API returns
them (field names from stripe-python 16's models; values chosen here)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapters.stripe import translate
from ledger import facts
from ledger.splits import SplitPart

T = 1_793_577_600  # 2026-11-02T00:00:00Z
DAY = 86_400


def txn(
    amount: int, *, fee: int = 0, available_on: int = T + 2 * DAY, **extra: Any
) -> dict[str, Any]:
    details = [{"amount": fee, "type": "stripe_fee", "currency": "usd"}] if fee else []
    return {
        "id": "txn_1",
        "object": "balance_transaction",
        "amount": amount,
        "fee": fee,
        "fee_details": details,
        "net": amount - fee,
        "available_on": available_on,
        "created": T,
        "currency": "usd",
        **extra,
    }


def charge(**fields: Any) -> dict[str, Any]:
    return {
        "id": "ch_1",
        "object": "charge",
        "amount": 10_000,
        "currency": "usd",
        "created": T,
        "status": "succeeded",
        "captured": True,
        "transfer_data": None,
        "application_fee": None,
        "application_fee_amount": None,
        "on_behalf_of": None,
        "transfer_group": None,
        "transfer": None,
        "metadata": {},
        **fields,
    }


def test_a_destination_charge_carries_stripes_fee_availability_and_ids() -> None:
    fact = translate.charge_succeeded(
        charge(
            transfer_data={"destination": "acct_s", "amount": None},
            application_fee="fee_1",
            application_fee_amount=123,
            transfer="tr_1",
            on_behalf_of="acct_s",
        ),
        txn(10_000, fee=320, available_on=T + 3 * DAY),
        account=None,
    )
    assert fact == facts.ChargeSucceeded(
        idempotency_key="stripe:charge:ch_1",
        effective_at=translate.at(T),
        payment_id="ch_1",
        charge_type="destination",
        currency="usd",
        amount_minor=10_000,
        stripe_fee_minor=320,
        available_on=translate.at(T + 3 * DAY),
        application_fee_minor=123,
        account_id="acct_s",
        on_behalf_of="acct_s",
        transfer_id="tr_1",
        application_fee_id="fee_1",
    )


def test_a_connected_accounts_charge_is_direct_a_platform_one_without_destination_separate() -> (
    None
):
    direct = translate.charge_succeeded(
        charge(application_fee_amount=200, application_fee="fee_2"), txn(10_000), account="acct_d"
    )
    assert (direct.charge_type, direct.account_id, direct.application_fee_minor) == (
        "direct",
        "acct_d",
        200,
    )
    separate = translate.charge_succeeded(
        charge(application_fee_amount=50), txn(10_000), account=None
    )
    assert (separate.charge_type, separate.account_id, separate.application_fee_minor) == (
        "separate",
        None,
        0,
    )


def test_only_stripe_fee_details_count_as_stripes_fee() -> None:
    bt = txn(1_000, fee=59)
    bt["fee_details"].append({"amount": 100, "type": "application_fee", "currency": "usd"})
    assert translate.stripe_fee(bt) == 59


def test_a_split_rule_is_read_from_metadata_and_a_bad_one_is_untranslatable() -> None:
    rule = [{"account": "acct_a", "share_bps": 7000}, {"account": "acct_b", "fixed_amount": 500}]
    metadata = {translate.SPLIT_METADATA_KEY: json.dumps(rule)}
    assert translate.split_parts(metadata) == (
        SplitPart("acct_a", share_bps=7000),
        SplitPart("acct_b", fixed_minor=500),
    )
    assert translate.split_parts({}) == ()
    for bad in ("not json", "[]", '{"account": "x"}', '[{"share_bps": 1}]'):
        with pytest.raises(translate.Untranslatable):
            translate.split_parts({translate.SPLIT_METADATA_KEY: bad})


def test_a_transfer_takes_its_availability_from_its_own_balance_transaction() -> None:
    transfer = {
        "id": "tr_9",
        "amount": 23,
        "currency": "usd",
        "created": T + 5 * DAY,
        "destination": "acct_1",
        "source_transaction": "ch_9",
        "transfer_group": "group_9",
        "balance_transaction": "txn_1",
    }
    fact = translate.transfer_created(transfer, txn(-23, available_on=T + 3 * DAY))
    assert (fact.available_on, fact.effective_at, fact.source_payment_id) == (
        translate.at(T + 3 * DAY),
        translate.at(T + 5 * DAY),
        "ch_9",
    )


def test_a_refund_carries_the_reversal_stripe_made_for_it() -> None:
    refund = {"id": "re_1", "amount": 2_500, "created": T, "charge": "ch_1"}
    reversal = {"id": "trr_1", "amount": 2_499, "created": T}
    fact = translate.charge_refunded(refund, "ch_1", reversal)
    assert (fact.amount_minor, fact.reversal_id, fact.reversal_minor) == (2_500, "trr_1", 2_499)
    alone = translate.charge_refunded(refund, "ch_1")
    assert (alone.reversal_id, alone.reversal_minor) == (None, 0)


@pytest.mark.parametrize(("reinstated_fee", "expected_fee"), [(-1_500, -1_500), (0, 0)])
def test_a_won_dispute_reinstates_with_the_fee_on_stripes_balance_transaction(
    reinstated_fee: int, expected_fee: int
) -> None:
    dispute = {
        "id": "dp_1",
        "charge": "ch_1",
        "created": T,
        "status": "won",
        "balance_transactions": [
            txn(-1_000, fee=1_500, created=T),
            txn(1_000, created=T + DAY) | {"fee": reinstated_fee},
        ],
    }
    withdrawn, reinstated = translate.dispute_facts(dispute, "ch_1", None)
    assert isinstance(withdrawn, facts.DisputeFundsWithdrawn)
    assert (withdrawn.amount_minor, withdrawn.fee_minor) == (1_000, 1_500)
    assert isinstance(reinstated, facts.DisputeFundsReinstated)
    assert (reinstated.amount_minor, reinstated.fee_minor) == (1_000, expected_fee)
    # A refold adds only what the ledger does not hold yet.
    assert translate.dispute_facts(dispute, "ch_1", "won") == []


def test_a_lost_dispute_is_lost_once_and_only_after_a_withdrawal() -> None:
    lost = {"id": "dp_2", "charge": "ch_1", "created": T, "status": "lost"}
    assert translate.dispute_facts(lost | {"balance_transactions": []}, "ch_1", None) == []
    withdrawn = lost | {"balance_transactions": [txn(-1_000, fee=1_500)]}
    kinds = [type(f) for f in translate.dispute_facts(withdrawn, "ch_1", None)]
    assert kinds == [facts.DisputeFundsWithdrawn, facts.DisputeLost]
    assert translate.dispute_facts(withdrawn, "ch_1", "lost") == []


def test_payouts_and_topups_keep_stripes_ids_and_instants() -> None:
    payout = {"id": "po_1", "amount": 2_000, "currency": "usd", "created": T}
    fact = translate.payout_created(payout, "po_1", "acct_1")
    assert (fact.payout_id, fact.account_id, fact.amount_minor) == ("po_1", "acct_1", 2_000)
    topup = {"id": "tu_1", "amount": 5_000, "currency": "usd", "created": T}
    up = translate.topup_succeeded(topup, txn(5_000, available_on=T + DAY), "acct_platform")
    assert (up.topup_id, up.available_on) == ("tu_1", translate.at(T + DAY))
