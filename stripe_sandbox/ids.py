"""Deterministic ids with Stripe's prefixes: the n-th id of a prefix is a hash of (seed, prefix, n).

Ids of one prefix do not depend on how many ids of another prefix were made, so adding an event
type to a flow does not renumber its charges.
"""

from __future__ import annotations

import hashlib
import string
from collections import Counter

ALPHABET = string.digits + string.ascii_letters
ID_LENGTHS = {"acct_": 16, "req_": 14, "whsec_": 32, "sk_test_": 40, "ca_": 32}
DEFAULT_ID_LENGTH = 24


def token(material: str, length: int) -> str:
    """`length` base62 characters derived from `material`."""
    number = int.from_bytes(hashlib.sha256(material.encode()).digest(), "big")
    chars = []
    for _ in range(length):
        number, digit = divmod(number, len(ALPHABET))
        chars.append(ALPHABET[digit])
    return "".join(chars)


class IdFactory:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._counts: Counter[str] = Counter()

    def new(self, prefix: str) -> str:
        n = self._counts[prefix]
        self._counts[prefix] += 1
        length = ID_LENGTHS.get(prefix, DEFAULT_ID_LENGTH)
        return prefix + token(f"{self.seed}:{prefix}:{n}", length)

    def fixed(self, prefix: str, name: str) -> str:
        """An id that depends on the seed and a name only (the platform, its keys)."""
        length = ID_LENGTHS.get(prefix, DEFAULT_ID_LENGTH)
        return prefix + token(f"{self.seed}:{prefix}:fixed:{name}", length)
