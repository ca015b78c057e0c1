"""Bounds shared by more than one room: each defined once, here, with its reason."""

from __future__ import annotations

# Stripe accepts idempotency keys of up to 255 characters; Sluice's own keys share the bound so
# that a key accepted by the API can always be passed on to Stripe unchanged.
IDEMPOTENCY_KEY_LEN_MAX = 255
# Ids, codes and other text parameters: printable, and short enough for an index entry.
TEXT_LEN_MAX = 255
