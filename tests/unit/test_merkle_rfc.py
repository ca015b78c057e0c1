"""The Merkle math against RFC 9162 §2.1, for every tree of 1..64 leaves.

The reference below is the RFC's recursive definitions transcribed literally (MTH, PATH,
SUBPROOF); ``adapters.merkle`` builds proofs from perfect subtrees and a compact range instead,
and verifies with the RFC's iterative loops. Both must agree, every proof must verify, and any
flipped bit (in a path hash, the leaf, a root, an index or a size) must fail.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ProofError,
    consistency_path,
    inclusion_path,
    leaf_hash,
    node_hash,
    perfect_from_leaves,
    root_of,
    split_point,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)

N_MAX = 64


# The RFC, literally ----------------------------------------------------------------------------


def mth(d: Sequence[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def path(m: int, d: Sequence[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = split_point(n)
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = split_point(n)
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


def leaves(n: int) -> list[bytes]:
    return [f"leaf {i}".encode() for i in range(n)]


def flipped(h: bytes, bit: int = 0) -> bytes:
    return bytes([h[0] ^ (1 << bit), *h[1:]])


# Tests -----------------------------------------------------------------------------------------


def test_known_values_the_empty_tree_and_one_leaf() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root_of([]) == EMPTY_ROOT
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert root_of([leaf_hash(b"a")]) == leaf_hash(b"a")
    assert node_hash(b"l", b"r") == hashlib.sha256(b"\x01lr").digest()
    assert [split_point(n) for n in (2, 3, 4, 5, 8, 9, 64, 65)] == [1, 2, 2, 4, 4, 8, 32, 64]


def test_every_tree_of_1_to_64_leaves_every_inclusion_and_consistency_proof() -> None:
    proofs = 0
    for n in range(1, N_MAX + 1):
        d = leaves(n)
        hashes = [leaf_hash(x) for x in d]
        perfect = perfect_from_leaves(hashes)
        root = mth(d)
        assert root_of(hashes) == root == subtree_hash(0, n, perfect)
        for m in range(n):
            proof = inclusion_path(m, n, perfect)
            assert proof == path(m, d), (m, n)
            verify_inclusion(m, n, hashes[m], proof, root)
            proofs += 1
        for m in range(n + 1):
            proof = consistency_path(m, n, perfect)
            assert proof == ([] if m in (0, n) else subproof(m, d, True)), (m, n)
            verify_consistency(m, n, mth(d[:m]), root, proof)
            proofs += 1
    assert proofs == sum(2 * n + 1 for n in range(1, N_MAX + 1))


def test_a_flipped_bit_anywhere_in_an_inclusion_proof_fails() -> None:
    for n in range(1, N_MAX + 1):
        hashes = [leaf_hash(x) for x in leaves(n)]
        perfect, root = perfect_from_leaves(hashes), root_of(hashes)
        for m in range(n):
            proof = inclusion_path(m, n, perfect)
            for i in range(len(proof)):
                bad = [*proof[:i], flipped(proof[i], i % 8), *proof[i + 1 :]]
                with pytest.raises(ProofError):
                    verify_inclusion(m, n, hashes[m], bad, root)
            for bad_leaf, bad_root in ((flipped(hashes[m]), root), (hashes[m], flipped(root))):
                with pytest.raises(ProofError):
                    verify_inclusion(m, n, bad_leaf, proof, bad_root)
            for bad_m, bad_n in ((m ^ 1, n), (m, n + 1), (m, n - 1), (n, n)):
                if (bad_m, bad_n) != (m, n) and hashes[m] != hashes[bad_m % n]:
                    with pytest.raises(ProofError):
                        verify_inclusion(bad_m, bad_n, hashes[m], proof, root)
            with pytest.raises(ProofError):  # a hash too many
                verify_inclusion(m, n, hashes[m], [*proof, root], root)
            if proof:
                with pytest.raises(ProofError):  # a hash too few
                    verify_inclusion(m, n, hashes[m], proof[:-1], root)


def test_a_flipped_bit_anywhere_in_a_consistency_proof_fails() -> None:
    for n in range(1, N_MAX + 1):
        hashes = [leaf_hash(x) for x in leaves(n)]
        perfect = perfect_from_leaves(hashes)
        root = root_of(hashes)
        for m in range(1, n + 1):
            old = root_of(hashes[:m])
            proof = consistency_path(m, n, perfect)
            for i in range(len(proof)):
                bad = [*proof[:i], flipped(proof[i], i % 8), *proof[i + 1 :]]
                with pytest.raises(ProofError):
                    verify_consistency(m, n, old, root, bad)
            for bad_old, bad_new in ((flipped(old), root), (old, flipped(root))):
                with pytest.raises(ProofError):
                    verify_consistency(m, n, bad_old, bad_new, proof)
            if m < n:
                with pytest.raises(ProofError):  # a hash too many, a hash too few
                    verify_consistency(m, n, old, root, [*proof, root])
                with pytest.raises(ProofError):
                    verify_consistency(m, n, old, root, proof[:-1])


def test_a_rewritten_history_has_no_consistency_proof() -> None:
    """An old tree whose leaf 3 changed is not a prefix of the new tree, whatever the proof."""
    hashes = [leaf_hash(x) for x in leaves(40)]
    rewritten = [*hashes[:3], leaf_hash(b"other"), *hashes[4:]]
    for m in range(4, 40):
        proof = consistency_path(m, 40, perfect_from_leaves(hashes))
        with pytest.raises(ProofError):
            verify_consistency(m, 40, root_of(rewritten[:m]), root_of(hashes), proof)


def test_the_compact_range_reports_exactly_the_perfect_subtrees_it_completes() -> None:
    hashes = [leaf_hash(x) for x in leaves(N_MAX)]
    tree = CompactRange()
    nodes: dict[tuple[int, int], bytes] = {}
    for n, h in enumerate(hashes, start=1):
        for level, index, value in tree.append(h):
            nodes[(level, index)] = value
        assert tree.root() == root_of(hashes[:n])
        assert len(tree.roots) == n.bit_count()
        again = CompactRange(tree.size, tree.roots)  # what the store keeps, reloaded
        assert again.root() == tree.root()
    for (level, index), value in nodes.items():
        assert value == root_of(hashes[index << level : (index + 1) << level])
    assert len(nodes) == N_MAX - 1  # a full tree of 64 leaves has 63 interior nodes
    with pytest.raises(ValueError):
        CompactRange(5, [EMPTY_ROOT])


def test_bad_arguments_are_refused_not_guessed() -> None:
    perfect = perfect_from_leaves([leaf_hash(b"x")] * 4)
    for call in (
        lambda: inclusion_path(4, 4, perfect),
        lambda: inclusion_path(-1, 4, perfect),
        lambda: consistency_path(5, 4, perfect),
        lambda: split_point(1),
    ):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ProofError):
        verify_inclusion(0, 0, leaf_hash(b"x"), [], EMPTY_ROOT)
    with pytest.raises(ProofError):
        verify_inclusion(0, 1, b"short", [], b"short")
    with pytest.raises(ProofError):  # the empty tree has one root
        verify_consistency(0, 3, b"\x00" * 32, EMPTY_ROOT, [])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3_000), st.data())
def test_larger_trees_agree_with_the_compact_range(n: int, data: st.DataObject) -> None:
    hashes = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n)]
    tree = CompactRange()
    nodes: dict[tuple[int, int], bytes] = {}
    for h in hashes:
        for level, index, value in tree.append(h):
            nodes[(level, index)] = value

    def stored(start: int, end: int) -> bytes:  # as the store answers: leaves and kept nodes
        level = (end - start).bit_length() - 1
        return hashes[start] if level == 0 else nodes[(level, start >> level)]

    root = tree.root()
    m = data.draw(st.integers(0, n - 1))
    verify_inclusion(m, n, hashes[m], inclusion_path(m, n, stored), root)
    first = data.draw(st.integers(0, n))
    old = CompactRange()
    for h in hashes[:first]:
        old.append(h)
    verify_consistency(first, n, old.root(), root, consistency_path(first, n, stored))
