"""Deterministic identifiers: uuid5 over natural keys, so a repeated command recreates nothing.

Sluice's own ids carry the brand ``sl_`` before a Stripe-like kind (``sl_po_…``, ``sl_txn_…``),
so none can be mistaken for an id Stripe minted (``po_…``, ``txn_…``); where an object mirrors
one of Stripe's, Stripe's id is kept as Stripe's (a payout's ``stripe_payout_id``).

Ids are data: events recorded before the brand keep their bare ids (``po_…``) forever, and
nothing rewrites them. The hash covers the kind and the natural key, not the brand, so a new id
and the id the same natural key had before share their hex, and ``*_aggregate_id`` maps both to
the one aggregate: a retry that spans the upgrade finds what was made before it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from hashlib import sha1
from uuid import UUID, uuid5

NAMESPACE = uuid5(UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8"), "https://sluice.dev/ids/v1")

PLATFORM_ACCOUNT_ID = "acct_platform"
WORLD = "world"  # owner of the outside books (customer_funds, stripe_fees)
SLUICE_PREFIX = "sl_"  # Stripe mints no id with it
_SLUICE_ID = re.compile(r"^sl_([a-z]{1,8})_([0-9a-f]{24})$")
# Ids are pure functions of their keys, and a routed payment derived 25 of them, the same
# accounts' and balances' over and over (uuid5 was 14% of a payment's time in a batch). Bounded:
# about 3 MB at most, and recent keys (this batch's) are what repeats.
IDS_CACHED_MAX = 16_384
_NAMESPACE_BYTES = NAMESPACE.bytes


def _uuid5_bytes(name: str) -> bytes:
    """``uuid5(NAMESPACE, name).bytes``, without building the UUID: a new payment derives nine
    ids that no cache has seen, and ``uuid5``'s UUID object, made only for its hex, was half its
    cost. The same SHA-1, version 5 in byte 6, the RFC 4122 variant in byte 8."""
    digest = bytearray(sha1(_NAMESPACE_BYTES + name.encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    return bytes(digest)


def _object_id(prefix: str, *natural_key: str) -> str:
    digest = _uuid5_bytes("|".join((prefix, *natural_key)))[:12].hex()
    return f"{SLUICE_PREFIX}{prefix}_{digest}"


# Sluice's prefixed id derived from a natural key, e.g. ``sl_py_3f2a…``.
object_id = lru_cache(maxsize=IDS_CACHED_MAX)(_object_id)


def is_sluice_id(value: str) -> bool:
    """Minted by Sluice since the ``sl_`` brand (older Sluice ids look like Stripe's)."""
    return _SLUICE_ID.match(value) is not None


def unbranded(value: str) -> str:
    """``sl_po_ab…`` → ``po_ab…``, the id the same natural key had before the brand; any other
    id unchanged. Only for aggregate keys: never shown, never stored."""
    return value[len(SLUICE_PREFIX) :] if is_sluice_id(value) else value


def balance_transaction_id(entry_id: str, account_id: str) -> str:
    """The one id of a movement: a journal entry as it lands on one account. The balance
    transactions read model, the auditor's replay, exports and proofs all name it so. An entry
    recorded before the brand keeps a bare ``txn_`` id, so a rebuild renames nothing."""
    movement = _object_id("txn", entry_id, account_id)  # not cached: each is derived once
    return movement if is_sluice_id(entry_id) else unbranded(movement)


@lru_cache(maxsize=IDS_CACHED_MAX)
def aggregate_id(kind: str, *natural_key: str) -> UUID:
    return UUID(bytes=_uuid5_bytes("|".join((kind, *natural_key))))


def account_aggregate_id(account_id: str) -> UUID:
    return aggregate_id("account", account_id)


def balance_aggregate_id(account_id: str, currency: str) -> UUID:
    return aggregate_id("balance", account_id, currency)


def payment_aggregate_id(payment_id: str) -> UUID:
    return aggregate_id("payment", unbranded(payment_id))


def transfer_aggregate_id(transfer_id: str) -> UUID:
    return aggregate_id("transfer", unbranded(transfer_id))


def payout_aggregate_id(payout_id: str) -> UUID:
    return aggregate_id("payout", unbranded(payout_id))


def command_record_id(idempotency_key: str) -> UUID:
    return aggregate_id("command", idempotency_key)
