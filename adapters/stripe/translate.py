"""Stripe's JSON → Sluice's facts: pure translation, no fetching, no ledger, no clock.

Each function takes the Stripe objects a movement is made of (as the API returns them, already
fetched fresh by the fold) and returns the fact to record, with Stripe's numbers: fees from the
balance transaction's ``fee_details``, ``available_on`` from the balance transaction, reversal and
reinstatement amounts from their own objects. Idempotency keys derive from Stripe's ids, so the
same movement reached through different events is recorded once.

``adapters.stripe.folding`` does the rest (which objects to fetch, in which order, what to park).
"""

from __future__ import annotations

import json
from typing import Any

from ledger import facts
from ledger.accounts import (
    METADATA_KEY_LEN_MAX,
    METADATA_KEYS_MAX,
    METADATA_VALUE_LEN_MAX,
    PROFILE_TEXT_LEN_MAX,
)
from ledger.instants import from_seconds
from ledger.splits import SplitPart

SPLIT_METADATA_KEY = "sluice_split"  # JSON list of {account, share_bps | fixed_amount}
SPLIT_PARTS_MAX = 50  # a split names at most this many sellers (the HTTP route's bound too)

Json = dict[str, Any]


class Untranslatable(ValueError):
    """A Stripe object Sluice cannot read as a movement (kept, counted, never guessed at)."""


at = from_seconds  # Stripe's unix seconds as an aware UTC instant


def stripe_fee(txn: Json) -> int:
    """Stripe's processing fee on a balance transaction (its ``stripe_fee`` details)."""
    return sum(
        int(detail["amount"])
        for detail in txn.get("fee_details", [])
        if detail.get("type") == "stripe_fee"
    )


def charge_type(charge: Json, on_connected_account: bool) -> str:
    """Direct (made on a connected account), destination (``transfer_data``), or separate."""
    if on_connected_account:
        return "direct"
    return "destination" if (charge.get("transfer_data") or {}).get("destination") else "separate"


def charge_succeeded(
    charge: Json,
    txn: Json,
    *,
    account: str | None,
    split: tuple[SplitPart, ...] = (),
    metadata: tuple[tuple[str, str], ...] = (),
) -> facts.ChargeSucceeded:
    """A succeeded charge and its balance transaction; ``account`` is the connected account it
    was made on (direct charges), None for the platform's own charges."""
    kind = charge_type(charge, account is not None)
    transfer_data = charge.get("transfer_data") or {}
    seller = account or transfer_data.get("destination")
    transfer_amount = transfer_data.get("amount")
    return facts.ChargeSucceeded(
        idempotency_key=f"stripe:charge:{charge['id']}",
        # A held charge is booked when Stripe captured it (its balance transaction), for what
        # it captured; other charges are captured as they are made.
        effective_at=at(max(int(charge["created"]), int(txn.get("created") or 0))),
        payment_id=str(charge["id"]),
        charge_type=kind,
        currency=str(charge["currency"]),
        amount_minor=int(charge.get("amount_captured") or charge["amount"]),
        stripe_fee_minor=stripe_fee(txn),
        application_fee_minor=(
            int(charge.get("application_fee_amount") or 0) if kind != "separate" else 0
        ),
        account_id=str(seller) if seller else None,
        on_behalf_of=charge.get("on_behalf_of") if kind != "direct" else None,
        transfer_group=charge.get("transfer_group"),
        transfer_amount_minor=int(transfer_amount) if transfer_amount is not None else None,
        available_on=at(txn["available_on"]),
        transfer_id=charge.get("transfer") if kind == "destination" else None,
        application_fee_id=charge.get("application_fee") or None,
        split=split,
        metadata=metadata,
    )


def payment_metadata(charge: Json, intent: Json | None) -> tuple[tuple[str, str], ...]:
    """A payment's metadata: its PaymentIntent's with the charge's over it, tidied as an
    account's is (printable, within Stripe's bounds), as sorted pairs."""
    merged = {**((intent or {}).get("metadata") or {}), **(charge.get("metadata") or {})}
    return _tidy_metadata(merged)


def payout_metadata(payout: Json) -> tuple[tuple[str, str], ...]:
    """A payout's metadata as Stripe reports it (Sluice's own ``sluice_payout_id`` among it),
    tidied as a payment's is, as sorted pairs."""
    return _tidy_metadata(payout.get("metadata") or {})


def _tidy_metadata(merged: Json) -> tuple[tuple[str, str], ...]:
    """Printable keys and values within Stripe's bounds, as sorted pairs."""
    tidy = {
        _printable(k, METADATA_KEY_LEN_MAX): _printable(v, METADATA_VALUE_LEN_MAX)
        for k, v in list(merged.items())[:METADATA_KEYS_MAX]
    }
    return tuple(sorted((k, v) for k, v in tidy.items() if k))


def split_parts(metadata: Json) -> tuple[SplitPart, ...]:
    """The routing rule a separate charge carries in its metadata (``sluice_split``)."""
    text = metadata.get(SPLIT_METADATA_KEY)
    if text is None:
        return ()
    try:
        rows = json.loads(text)
        if not isinstance(rows, list) or not 0 < len(rows) <= SPLIT_PARTS_MAX:
            raise TypeError(f"a list of 1 to {SPLIT_PARTS_MAX} parts")
        return tuple(
            SplitPart(
                str(p["account"]), share_bps=p.get("share_bps"), fixed_minor=p.get("fixed_amount")
            )
            for p in rows
        )
    except (ValueError, KeyError, TypeError) as error:
        raise Untranslatable(f"unreadable {SPLIT_METADATA_KEY}: {error}") from None


def transfer_created(transfer: Json, txn: Json) -> facts.TransferCreated:
    """A transfer and its (platform-side) balance transaction: when the funds are available is
    Stripe's to say (a sourced transfer follows its charge, an unsourced one is available)."""
    source = transfer.get("source_transaction")
    return facts.TransferCreated(
        idempotency_key=f"stripe:transfer:{transfer['id']}",
        effective_at=at(transfer.get("created")),
        transfer_id=str(transfer["id"]),
        destination_account_id=str(transfer["destination"]),
        currency=str(transfer["currency"]),
        amount_minor=int(transfer["amount"]),
        available_on=at(txn["available_on"]),
        source_payment_id=str(source) if source else None,
        transfer_group=transfer.get("transfer_group"),
    )


def transfer_reversed(transfer_id: str, reversal: Json) -> facts.TransferReversed:
    return facts.TransferReversed(
        idempotency_key=f"stripe:reversal:{reversal['id']}",
        effective_at=at(reversal.get("created")),
        transfer_id=transfer_id,
        amount_minor=int(reversal["amount"]),
        reversal_id=str(reversal["id"]),
    )


def charge_refunded(
    refund: Json, payment_id: str, reversal: Json | None = None
) -> facts.ChargeRefunded:
    """A refund, with the transfer reversal Stripe made for it (its own amount, as reported)."""
    return facts.ChargeRefunded(
        idempotency_key=f"stripe:refund:{refund['id']}",
        effective_at=at(refund["created"]),
        payment_id=payment_id,
        amount_minor=int(refund["amount"]),
        refund_id=str(refund["id"]),
        reversal_id=str(reversal["id"]) if reversal else None,
        reversal_minor=int(reversal["amount"]) if reversal else 0,
    )


def application_fee_refunded(payment_id: str, fee_refund: Json) -> facts.ApplicationFeeRefunded:
    return facts.ApplicationFeeRefunded(
        idempotency_key=f"stripe:fee_refund:{fee_refund['id']}",
        effective_at=at(fee_refund.get("created")),
        payment_id=payment_id,
        amount_minor=int(fee_refund["amount"]),
        fee_refund_id=str(fee_refund["id"]),
    )


def dispute_facts(
    dispute: Json, payment_id: str, known_status: str | None, closed_at: int | None = None
) -> list[facts.Fact]:
    """A dispute's withdrawal and reinstatement as their balance transactions say, and its loss.
    ``known_status`` is what the ledger already holds (None: nothing yet), so a refold adds
    only what is new."""
    dispute_id = str(dispute["id"])
    txns = dispute.get("balance_transactions", [])
    withdrawals = [t for t in txns if int(t.get("amount", 0)) < 0]
    reinstatements = [t for t in txns if int(t.get("amount", 0)) > 0]
    found: list[facts.Fact] = []
    if withdrawals and known_status is None:
        found.append(
            facts.DisputeFundsWithdrawn(
                idempotency_key=f"stripe:dispute:{dispute_id}:withdrawn",
                effective_at=at(withdrawals[0].get("created") or dispute["created"]),
                payment_id=payment_id,
                dispute_id=dispute_id,
                amount_minor=-int(withdrawals[0]["amount"]),
                fee_minor=int(withdrawals[0].get("fee", 0)),
            )
        )
    if reinstatements and known_status != "won":
        found.append(
            facts.DisputeFundsReinstated(
                idempotency_key=f"stripe:dispute:{dispute_id}:reinstated",
                effective_at=at(reinstatements[0].get("created") or dispute["created"]),
                payment_id=payment_id,
                dispute_id=dispute_id,
                amount_minor=int(reinstatements[0]["amount"]),
                fee_minor=int(reinstatements[0].get("fee", 0)),
            )
        )
    if dispute.get("status") == "lost" and withdrawals and known_status != "lost":
        found.append(
            facts.DisputeLost(
                idempotency_key=f"stripe:dispute:{dispute_id}:lost",
                effective_at=at(closed_at or dispute["created"]),
                payment_id=payment_id,
                dispute_id=dispute_id,
            )
        )
    return found


def payout_created(payout: Json, payout_id: str, holder: str) -> facts.PayoutCreated:
    return facts.PayoutCreated(
        idempotency_key=f"stripe:payout:{payout['id']}",
        effective_at=at(payout.get("created")),
        payout_id=payout_id,
        account_id=holder,
        currency=str(payout["currency"]),
        amount_minor=int(payout["amount"]),
    )


def topup_succeeded(topup: Json, txn: Json, holder: str) -> facts.TopUpSucceeded:
    return facts.TopUpSucceeded(
        idempotency_key=f"stripe:topup:{topup['id']}",
        effective_at=at(topup["created"]),
        account_id=holder,
        currency=str(topup["currency"]),
        amount_minor=int(topup["amount"]),
        available_on=at(txn["available_on"]),
        topup_id=str(topup["id"]),
    )


def profile_of(name: str | None, email: str | None, metadata: dict[str, str]) -> Json:
    """A profile as the fold compares them: name, email, metadata (sorted)."""
    return {
        "name": name or None,
        "email": email or None,
        "metadata": dict(sorted(metadata.items())),
    }


def account_profile(acct: Json) -> Json:
    """An account's name (its business profile's, else its dashboard display name, else the
    company's or the individual's), its email and its metadata, as Stripe holds them."""
    business = acct.get("business_profile") or {}
    dashboard = (acct.get("settings") or {}).get("dashboard") or {}
    company = acct.get("company") or {}
    person = acct.get("individual") or {}
    full_name = " ".join(str(p) for p in (person.get("first_name"), person.get("last_name")) if p)
    name = business.get("name") or dashboard.get("display_name") or company.get("name")
    metadata = {
        _printable(k, METADATA_KEY_LEN_MAX): _printable(v, METADATA_VALUE_LEN_MAX)
        for k, v in list((acct.get("metadata") or {}).items())[:METADATA_KEYS_MAX]
    }
    email = acct.get("email")
    return profile_of(
        _printable(name or full_name, PROFILE_TEXT_LEN_MAX) or None,
        _printable(email, PROFILE_TEXT_LEN_MAX) if email else None,
        {k: v for k, v in metadata.items() if k},
    )


def _printable(value: object, length_max: int) -> str:
    """A profile's text as the ledger keeps it: printable, within its bound. The profile only
    helps people find an account, so a control character or an overlong value from Stripe is
    tidied here rather than parking the account's event."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(value or ""))
    return text[:length_max]
