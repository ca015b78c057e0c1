"""Instant Payouts (`method=instant`): to an external account that supports them, arriving within
30 minutes, for Stripe's instant fee.

Stripe: "Instant Payouts … typically arrive within 30 minutes"; the destination's
`available_payout_methods` must contain `instant`; the platform pays a fee per Instant Payout
(docs.stripe.com/connect/instant-payouts; 1% in the US when this was written, so the sandbox's
`instant_payout_fee_bps` defaults to 100). The fee is Stripe's: it is on the payout's balance
transaction (`fee`, `fee_details` type `stripe_fee`), taken from the balance with the payout.

Undocumented choices: the fee rounds half up to the minor unit; an Instant Payout never converts
(Stripe: "local currency" only); a failed Instant Payout returns its fee with its amount.
"""

from __future__ import annotations

from typing import Any

from stripe_sandbox.errors import invalid

INSTANT_ARRIVAL_S = 30 * 60
BPS_PER_UNIT = 10_000


def instant_fee_minor(amount_minor: int, fee_bps: int) -> int:
    return (amount_minor * fee_bps * 2 + BPS_PER_UNIT) // (2 * BPS_PER_UNIT)


def check_instant_destination(bank: dict[str, Any], currency: str) -> None:
    """Refuses an Instant Payout to a destination that does not take one."""
    if "instant" not in (bank.get("available_payout_methods") or ()):
        raise invalid(
            f"The destination {bank['id']} does not support Instant Payouts.",
            param="destination",
            code="instant_payouts_unsupported",
        )
    if bank.get("currency") != currency:
        raise invalid(
            f"Instant Payouts are in the destination's currency ({bank.get('currency')}).",
            param="currency",
            code="instant_payouts_unsupported",
        )


def instant_fee_details(fee_minor: int, currency: str) -> list[dict[str, Any]]:
    if fee_minor == 0:
        return []
    return [
        {
            "amount": fee_minor,
            "application": None,
            "currency": currency,
            "description": "Instant Payout fee",
            "type": "stripe_fee",
        }
    ]


def returned_fee_details(details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A returned payout's Stripe fees, given back (negative), as a dispute's reinstatement
    does; the platform's application fee is not returned (see below)."""
    return [
        {**detail, "amount": -detail["amount"]}
        for detail in details
        if detail["type"] == "stripe_fee"
    ]


# Payout monetization -----------------------------------------------------------------------------
# Stripe: a platform may charge its connected accounts a fee on their payouts (Instant Payouts
# above all), set in the Dashboard's platform pricing tools; Stripe collects it as an
# ApplicationFee whose `fee_source.type` is `payout`, and names it on the payout
# (`application_fee`, `application_fee_amount`). The sandbox's pricing is its setting
# `payout_platform_fees` (per method, `FeeRule`). Undocumented choices: automatic payouts carry
# no platform fee; the fee is on the payout's balance transaction (`fee_details` type
# `application_fee`) and available to the platform at once; a failed payout's application fee
# stays with the platform (only Stripe's own fee is returned).


def application_fee_details(
    fee_minor: int, currency: str, application: str
) -> list[dict[str, Any]]:
    if fee_minor == 0:
        return []
    return [
        {
            "amount": fee_minor,
            "application": application,
            "currency": currency,
            "description": "Payout fee",
            "type": "application_fee",
        }
    ]


def collect_payout_application_fee(
    core: Any, payout: dict[str, Any], seller: str, fee_minor: int
) -> None:
    """The platform's ApplicationFee on `payout` and its `application_fee` BT on the platform."""
    fee_id = core.ids.new("fee_")
    currency = payout["currency"]
    bt = core.book(
        core.platform_id,
        type_="application_fee",
        amount=fee_minor,
        currency=currency,
        source=fee_id,
    )
    fee = {
        "id": fee_id,
        "object": "application_fee",
        "account": seller,
        "amount": fee_minor,
        "amount_refunded": 0,
        "application": core.application_id,
        "balance_transaction": bt["id"],
        "charge": None,
        "created": core.clock.now(),
        "currency": currency,
        "fee_source": {"charge": None, "payout": payout["id"], "type": "payout"},
        "livemode": False,
        "originating_transaction": None,
        "refunded": False,
        "refunds": None,
        "_refund_ids": [],
    }
    core.put(fee, core.platform_id)
    payout["application_fee"] = fee_id
    payout["application_fee_amount"] = fee_minor
    core.emit("application_fee.created", fee, core.platform_id)
