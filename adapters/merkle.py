"""Merkle tree math of RFC 9162 §2.1 (Certificate Transparency v2), with no I/O.

- Hash: SHA-256. A leaf hashes as ``H(0x00 || leaf)``, an interior node as
  ``H(0x01 || left || right)``: the prefixes keep a leaf from passing for a node.
- The tree of ``n`` leaves is split at ``k``, the largest power of two strictly below ``n``; it is
  not padded, so a right subtree may be smaller than its left sibling. The empty tree hashes to
  ``SHA-256("")``.
- Every left subtree in that recursion is *perfect* (a power-of-two number of leaves) and aligned
  (it starts at a multiple of its size); only subtrees on a right edge are not. So any subtree
  hash, and so any proof, can be put together from perfect subtrees, which is what a store keeps
  (``PerfectHash``: ``(start, end) → hash`` of ``D[start:end]`` with ``end - start`` a power of two
  and ``start`` a multiple of it). ``CompactRange`` keeps a growing tree's O(log n) perfect roots,
  so appending costs O(1) amortised and the root O(log n), at any size.

Proof generation follows the RFC's recursive definitions (``PATH`` §2.1.3.1, ``SUBPROOF``
§2.1.4.1); verification follows its verifier loops (§2.1.3.2, §2.1.4.2) to the letter.
Imports only the standard library: the offline verifier uses it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()
TREE_SIZE_MAX = 2**63 - 1  # positions and sizes are BIGINTs in the store
PATH_LENGTH_MAX = 64  # a tree of at most 2**63 leaves has proofs of at most 63 (+1) hashes

# D[start:end] → its hash, for perfect aligned subtrees only (see the module docstring).
PerfectHash = Callable[[int, int], bytes]


class ProofError(ValueError):
    """A proof does not verify; the message says which check failed."""


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split_point(n: int) -> int:
    """k: the largest power of two strictly less than ``n`` (n ≥ 2)."""
    if n < 2:
        raise ValueError(f"a tree of {n} leaves has no split")
    return 1 << ((n - 1).bit_length() - 1)


def is_perfect(start: int, end: int) -> bool:
    size = end - start
    return size > 0 and size & (size - 1) == 0 and start % size == 0


def subtree_hash(start: int, end: int, perfect: PerfectHash) -> bytes:
    """MTH(D[start:end]) for a subtree of the RFC tree, from perfect subtrees. Recursion only
    follows the right edge, so it is at most log2(n) deep."""
    if end <= start:
        raise ValueError(f"empty subtree [{start}, {end})")
    if is_perfect(start, end):
        return perfect(start, end)
    k = split_point(end - start)
    return node_hash(perfect(start, start + k), subtree_hash(start + k, end, perfect))


def _check_size(size: int) -> None:
    if not 0 <= size <= TREE_SIZE_MAX:
        raise ValueError(f"tree size out of range: {size}")


def inclusion_path(index: int, size: int, perfect: PerfectHash) -> list[bytes]:
    """PATH(index, D[size]) (RFC 9162 §2.1.3.1): sibling hashes from the leaf up to the root."""
    _check_size(size)
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:  # halves the range each turn: at most 63 turns
        k = split_point(end - start)
        if index < start + k:
            path.append(subtree_hash(start + k, end, perfect))
            end = start + k
        else:
            path.append(subtree_hash(start, start + k, perfect))
            start += k
    path.reverse()  # the recursion appends from the root down; the proof lists leaf-up
    return path


def consistency_path(first: int, second: int, perfect: PerfectHash) -> list[bytes]:
    """PROOF(first, D[second]) = SUBPROOF(first, D[second], true) (RFC 9162 §2.1.4.1)."""
    _check_size(second)
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from {first} to {second}")
    if first in (0, second):
        return []  # every tree extends the empty tree; a tree is consistent with itself
    tail: list[bytes] = []
    start, end, whole = 0, second, True  # whole: SUBPROOF's b (still on the left edge)
    while first != end:  # the RFC's recursion, unrolled: at most 63 turns
        k = split_point(end - start)
        if first - start <= k:
            tail.append(subtree_hash(start + k, end, perfect))
            end = start + k
        else:
            tail.append(subtree_hash(start, start + k, perfect))
            start += k
            whole = False
    head = [] if whole else [subtree_hash(start, end, perfect)]
    return head + tail[::-1]


def perfect_from_leaves(leaf_hashes: Sequence[bytes]) -> PerfectHash:
    """A ``PerfectHash`` over a list of leaf hashes (tests, small trees): O(size) per call."""

    def perfect(start: int, end: int) -> bytes:
        return root_of(leaf_hashes[start:end])

    return perfect


def root_of(leaf_hashes: Iterable[bytes]) -> bytes:
    """MTH over leaf hashes, in one pass through a compact range."""
    tree = CompactRange()
    for h in leaf_hashes:
        tree.append(h)
    return tree.root()


def needed_subtrees(make: Callable[[PerfectHash], object]) -> list[tuple[int, int]]:
    """The perfect subtrees a proof reads, found by a dry run (so a store fetches them at once)."""
    seen: dict[tuple[int, int], None] = {}

    def record(start: int, end: int) -> bytes:
        seen[(start, end)] = None
        return bytes(HASH_SIZE)

    make(record)
    return list(seen)


class CompactRange:
    """The perfect roots of a tree of ``size`` leaves, largest first: one per set bit of
    ``size`` (so at most 63). Appending a leaf merges equal-sized roots, and each merge is a
    perfect subtree just completed, which ``append`` returns for a store to keep."""

    def __init__(self, size: int = 0, roots: Sequence[bytes] = ()) -> None:
        _check_size(size)
        if len(roots) != size.bit_count():
            raise ValueError(
                f"a tree of {size} leaves has {size.bit_count()} roots, not {len(roots)}"
            )
        self.size = size
        self.roots = list(roots)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Adds a leaf hash; returns the completed perfect subtrees above it as
        ``(level, index, hash)``: D[index·2^level : (index+1)·2^level], level ≥ 1."""
        if self.size >= TREE_SIZE_MAX:
            raise ValueError("the tree is full")
        completed: list[tuple[int, int, bytes]] = []
        h, level, index = leaf, 0, self.size
        while (index >> level) & 1:  # one merge per trailing set bit of size: at most 63
            h = node_hash(self.roots.pop(), h)
            level += 1
            completed.append((level, index >> level, h))
        self.roots.append(h)
        self.size += 1
        return completed

    def root(self) -> bytes:
        if not self.roots:
            return EMPTY_ROOT
        h = self.roots[-1]
        for left in reversed(self.roots[:-1]):
            h = node_hash(left, h)
        return h


# Verification (RFC 9162 §2.1.3.2 and §2.1.4.2) ---------------------------------------------------


def _check_hashes(hashes: Sequence[bytes], what: str) -> None:
    if len(hashes) > PATH_LENGTH_MAX:
        raise ProofError(f"{what} has {len(hashes)} hashes, more than any tree needs")
    for h in hashes:
        if len(h) != HASH_SIZE:
            raise ProofError(f"{what} holds a hash of {len(h)} bytes, not {HASH_SIZE}")


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """The root an inclusion path leads to (§2.1.3.2 steps 1 to 4); raises ``ProofError``."""
    _check_hashes([leaf, *path], "the inclusion proof")
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not below the tree size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ProofError("the inclusion path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the inclusion path is shorter than the tree is deep")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes
) -> None:
    """Raises ``ProofError`` unless ``leaf`` (a leaf hash) is leaf ``index`` of the tree of
    ``size`` leaves with ``root``."""
    if root_from_inclusion(index, size, leaf, path) != root:
        raise ProofError(f"leaf {index} is not in the tree of {size} with that root")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]
) -> None:
    """Raises ``ProofError`` unless the tree of ``second`` leaves with ``second_root`` extends
    the tree of ``first`` leaves with ``first_root`` (RFC 9162 §2.1.4.2)."""
    _check_hashes([first_root, second_root, *path], "the consistency proof")
    if not 0 <= first <= second:
        raise ProofError(f"a tree of {first} leaves cannot be a prefix of one of {second}")
    if first in (0, second):
        if path:
            raise ProofError("a proof from an empty or equal tree must be empty")
        if first == second and first_root != second_root:
            raise ProofError(f"two different roots for the same size {first}")
        if first == 0 and first_root != EMPTY_ROOT:
            raise ProofError("the root of the empty tree is not SHA-256 of nothing")
        return
    if not path:
        raise ProofError("the consistency proof is empty")  # step 1
    proof = [first_root, *path] if first & (first - 1) == 0 else list(path)  # step 2
    fn, sn = first - 1, second - 1  # step 3
    while fn & 1:  # step 4
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]  # step 5
    for c in proof[1:]:  # step 6
        if sn == 0:
            raise ProofError("the consistency path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:  # step 7
        raise ProofError("the consistency path is shorter than the tree is deep")
    if fr != first_root:
        raise ProofError(f"the proof does not lead to the old root (size {first})")
    if sr != second_root:
        raise ProofError(f"the proof does not lead to the new root (size {second})")
