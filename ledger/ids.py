"""Deterministic identifiers: uuid5 over natural keys, so a repeated command recreates nothing."""

from __future__ import annotations

from uuid import UUID, uuid5

NAMESPACE = uuid5(UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8"), "https://sluice.dev/ids/v1")

PLATFORM_ACCOUNT_ID = "acct_platform"
WORLD = "world"  # owner of the outside books (customer_funds, stripe_fees)


def object_id(prefix: str, *natural_key: str) -> str:
    """A Stripe-style prefixed id derived from a natural key, e.g. ``py_3f2a…``."""
    return f"{prefix}_{uuid5(NAMESPACE, '|'.join((prefix, *natural_key))).hex[:24]}"


def aggregate_id(kind: str, *natural_key: str) -> UUID:
    return uuid5(NAMESPACE, "|".join((kind, *natural_key)))


def account_aggregate_id(account_id: str) -> UUID:
    return aggregate_id("account", account_id)


def balance_aggregate_id(account_id: str, currency: str) -> UUID:
    return aggregate_id("balance", account_id, currency)


def payment_aggregate_id(payment_id: str) -> UUID:
    return aggregate_id("payment", payment_id)


def transfer_aggregate_id(transfer_id: str) -> UUID:
    return aggregate_id("transfer", transfer_id)


def payout_aggregate_id(payout_id: str) -> UUID:
    return aggregate_id("payout", payout_id)


def command_record_id(idempotency_key: str) -> UUID:
    return aggregate_id("command", idempotency_key)
