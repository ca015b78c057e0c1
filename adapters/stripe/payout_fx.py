"""Stripe → facts for payouts in every currency (``ledger.payout_fx``): the account's external
accounts per currency, and the conversion Stripe made for a cross-border payout.

A converted payout is what reaches the bank (Stripe's ``payout.amount``: "the amount … that
transfers to your bank account"), while its balance transaction is what left the balance, in
the balance's currency, with ``exchange_rate``. Both numbers and the rate are read, never
derived; the rate is kept as the decimal text Stripe sent.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from adapters.stripe.gateway import StripeGateway
from adapters.stripe.translate import at
from ledger import facts
from ledger.payout_fx import (
    ExternalAccountsReported,
    PayoutConverted,
    PayoutFeeCharged,
    external_accounts_of,
)

Json = dict[str, Any]


def external_accounts(acct: Json) -> dict[str, str]:
    """Currency → status of the account's default external account in it."""
    listed = (acct.get("external_accounts") or {}).get("data", [])
    return {
        str(bank.get("currency")): str(bank.get("status") or "unknown")
        for bank in listed
        if bank.get("default_for_currency") and bank.get("currency")
    }


def _digest(value: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def external_accounts_reported(
    account_id: str, acct: Json, known: Any, created: datetime
) -> ExternalAccountsReported | None:
    """The fact when the account's external accounts changed; its key names the old and the
    new state, so a change back is recorded too. ``known``: the ledger's account (or None)."""
    banks = external_accounts(acct)
    before = external_accounts_of(known) if known is not None else None
    if not banks or banks == before:
        return None
    change = f"{_digest(before or {})}:{_digest(banks)}"
    return ExternalAccountsReported(
        idempotency_key=f"stripe:account:{account_id}:banks:{change}",
        effective_at=created,
        account_id=account_id,
        by_currency=banks,
    )


def rate_text(value: object) -> str:
    """Stripe's ``exchange_rate`` (a JSON number: float or Decimal in the SDK) as decimal
    text, exactly as sent (a float's shortest repr); "" when it is missing (malformed)."""
    if value is None or isinstance(value, bool):
        return ""
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except InvalidOperation:
        return ""
    return format(number, "f")


def fees_by_type(txn: Json) -> dict[str, int]:
    """The payout's fees as its balance transaction itemizes them: Stripe's own (an Instant
    Payout's) and the platform's application fee (payout monetization)."""
    fees = {"stripe_fee": 0, "application_fee": 0}
    for detail in txn.get("fee_details") or []:
        kind = "application_fee" if detail.get("type") == "application_fee" else "stripe_fee"
        fees[kind] += int(detail.get("amount") or 0)
    return fees


def payout_facts(
    gateway: StripeGateway,
    payout: Json,
    payout_id: str,
    holder: str,
    recorded: Any,
    account: str | None,
    platform: str,
) -> list[facts.Fact]:
    """What the ledger lacks of a payout before its status: its creation (an automatic
    payout, booked from its balance transaction), Stripe's fee (an Instant Payout's) and
    Stripe's conversion, in that order."""
    converted = recorded is not None and getattr(recorded, "bank_currency", None) is not None
    fee_known = recorded is not None and getattr(recorded, "stripe_fee_minor", None) is not None
    charged = payout.get("method") == "instant" or bool(payout.get("application_fee_amount"))
    fee_due = charged and not fee_known
    if (
        recorded is not None
        and not fee_due
        and (converted or recorded.currency == payout["currency"])
    ):
        return []
    txn = gateway.retrieve(
        "balance_transaction", str(payout["balance_transaction"]), account=account
    ).data
    taken = -int(txn["amount"])
    found: list[facts.Fact] = []
    if recorded is None:  # Stripe paid out on its own (automatic payouts)
        found.append(
            facts.PayoutCreated(
                idempotency_key=f"stripe:payout:{payout['id']}",
                effective_at=at(payout.get("created")),
                payout_id=payout_id,
                account_id=holder,
                currency=str(txn["currency"]),
                amount_minor=taken,
            )
        )
    fees = fees_by_type(txn)
    if any(fees.values()) and not fee_known:
        found.append(
            PayoutFeeCharged(
                idempotency_key=f"stripe:payout:{payout['id']}:fee",
                effective_at=at(txn.get("created") or payout.get("created")),
                payout_id=payout_id,
                stripe_fee_minor=fees["stripe_fee"],
                application_fee_minor=fees["application_fee"],
                platform_account_id=platform if fees["application_fee"] else None,
                application_fee_id=payout.get("application_fee") or None,
            )
        )
    if txn["currency"] != payout["currency"] and not converted:
        found.append(
            PayoutConverted(
                idempotency_key=f"stripe:payout:{payout['id']}:converted",
                effective_at=at(txn.get("created") or payout.get("created")),
                payout_id=payout_id,
                amount_minor=taken,
                bank_currency=str(payout["currency"]),
                bank_amount_minor=int(payout["amount"]),
                exchange_rate=rate_text(txn.get("exchange_rate")),
            )
        )
    return found
