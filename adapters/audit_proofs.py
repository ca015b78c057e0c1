"""Proofs over the Merkle log (``adapters.audit_log``), as proof files for auditors.

- ``inclusion_proof``: one event, its leaf and its path to a signed checkpoint;
- ``account_proof``: every event behind an account's balance as of an instant (found by
  ``projections.audit.replay``), each with its path to one checkpoint;
- ``consistency_proof``: two checkpoints and the RFC 9162 §2.1.4 proof that the newer extends
  the older;
- ``verify_log``: re-reads the event store against a checkpoint (the tamper check) and names
  the first position that differs.

Proof files carry the event data as the store holds it now: if the store was altered after the
leaf was appended, the file still says so (its event does not encode to its leaf hash) and the
offline verifier (``adapters.proof_verifier``) fails it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from adapters.audit_format import Checkpoint, LeafEvent, proof_document
from adapters.audit_log import (
    PAGE_EVENTS,
    AuditError,
    MerkleStore,
    event_at,
    leaf_event,
    not_found,
    read_events,
)
from adapters.merkle import (
    CompactRange,
    PerfectHash,
    consistency_path,
    inclusion_path,
    leaf_hash,
    needed_subtrees,
)
from adapters.proof_verifier import VerificationError, verify_checkpoint
from ledger.application import Ledger
from projections.audit import replay

ACCOUNT_PROOF_EVENTS_MAX = 10_000  # events in one account proof (each with ~log2 n hashes)


def _with_store_hashes(store: MerkleStore, make: Callable[[PerfectHash], Any]) -> Any:
    """Runs ``make`` twice: a dry run to learn which subtrees it reads, then on their hashes,
    fetched in a few queries."""
    hashes = store.perfect_hashes(needed_subtrees(make))
    return make(lambda start, end: hashes[(start, end)])


def checkpoint_for(store: MerkleStore, tree_size: int | None) -> Checkpoint:
    checkpoint = store.checkpoint(tree_size)
    if checkpoint is None:
        if tree_size is None:
            raise not_found("no checkpoint yet: make one with `sluice audit checkpoint`")
        raise not_found(f"no checkpoint of size {tree_size}")
    return checkpoint


def _entries(
    ledger: Ledger, store: MerkleStore, checkpoint: Checkpoint, positions: list[int]
) -> list[dict[str, Any]]:
    leaves = store.leaves_at(positions)
    wanted: list[tuple[int, bytes, LeafEvent]] = []
    for position in positions:
        if position > checkpoint.last_position:
            raise AuditError(
                f"position {position} is after checkpoint {checkpoint.tree_size} (last"
                f" position {checkpoint.last_position}): make a newer checkpoint",
                code="position_not_covered",
            )
        if position not in leaves:
            raise not_found(f"no event at position {position}")
        index, stored = leaves[position]
        event = event_at(ledger, position)
        if event is None:  # the leaf is there but the event is gone: the log was altered
            raise AuditError(
                f"position {position}: the event store no longer holds the event behind leaf"
                f" {index} (the log was altered; run `sluice audit verify-log`)",
                code="event_missing",
                status=409,
            )
        wanted.append((index, stored, event))

    def make(perfect: PerfectHash) -> list[list[bytes]]:
        return [inclusion_path(index, checkpoint.tree_size, perfect) for index, _, _ in wanted]

    paths: list[list[bytes]] = _with_store_hashes(store, make)
    return [
        {
            "leaf_index": index,
            "leaf_hash": stored.hex(),
            "event": event.as_json(),
            "inclusion_path": [h.hex() for h in path],
        }
        for (index, stored, event), path in zip(wanted, paths, strict=True)
    ]


def inclusion_proof(
    ledger: Ledger, store: MerkleStore, position: int, tree_size: int | None = None
) -> dict[str, Any]:
    """The event at ``position`` and its inclusion in a checkpoint (default: the latest)."""
    checkpoint = checkpoint_for(store, tree_size)
    return proof_document(
        "inclusion",
        checkpoint=checkpoint.as_json(),
        entries=_entries(ledger, store, checkpoint, [position]),
    )


def account_proof(
    ledger: Ledger,
    store: MerkleStore,
    account: str,
    as_of: datetime | None,
    tree_size: int | None = None,
) -> dict[str, Any]:
    """Every event behind ``account``'s balances as of ``as_of`` (effective instants) that the
    checkpoint covers, each with its inclusion proof, and the balances they add up to. Events
    after the checkpoint are counted (``later_movements``), not proven."""
    checkpoint = checkpoint_for(store, tree_size)
    result = replay(ledger, account, as_of=as_of)
    covered = [m for m in result.movements if m["position"] <= checkpoint.last_position]
    positions = sorted({m["position"] for m in covered})
    if not positions:
        raise not_found(f"no movements of {account} in checkpoint {checkpoint.tree_size}")
    if len(positions) > ACCOUNT_PROOF_EVENTS_MAX:
        raise AuditError(
            f"{len(positions)} events behind {account}: more than {ACCOUNT_PROOF_EVENTS_MAX}"
            " in one proof; choose an earlier --as-of",
            code="proof_too_large",
        )
    balances: dict[str, dict[str, int]] = {}
    for m in covered:
        books = balances.setdefault(m["currency"], {"pending": 0, "available": 0, "reserved": 0})
        books[m["book"]] += m["amount"]
    return proof_document(
        "account",
        account=account,
        as_of=int(as_of.timestamp()) if as_of else None,
        checkpoint=checkpoint.as_json(),
        balances=[{"currency": cur, **books} for cur, books in sorted(balances.items())],
        movements=covered,
        later_movements=len(result.movements) - len(covered),
        entries=_entries(ledger, store, checkpoint, positions),
    )


def consistency_proof(store: MerkleStore, first: int, second: int) -> dict[str, Any]:
    """The proof that checkpoint ``second`` extends checkpoint ``first`` (sizes)."""
    if first > second:
        raise AuditError(f"the older checkpoint comes first: {first} is larger than {second}")
    old, new = checkpoint_for(store, first), checkpoint_for(store, second)

    def make(perfect: PerfectHash) -> list[bytes]:
        return consistency_path(first, second, perfect)

    path: list[bytes] = _with_store_hashes(store, make)
    return proof_document(
        "consistency",
        old_checkpoint=old.as_json(),
        new_checkpoint=new.as_json(),
        consistency_path=[h.hex() for h in path],
    )


# Re-verifying the log ----------------------------------------------------------------------------


@dataclass
class LogReport:
    """What ``verify_log`` found. ``ok``: the events re-hash to the checkpoint's signed root."""

    checkpoint: Checkpoint
    ok: bool
    events_checked: int
    first_bad_position: int | None = None
    problem: str = ""
    leaf_table_ok: bool = True

    def describe(self) -> str:
        cp = self.checkpoint
        if self.ok:
            note = "" if self.leaf_table_ok else " (but the leaf table was altered: re-append it)"
            checked = f"{self.events_checked} events"
            return f"log verifies against checkpoint {cp.tree_size} ({checked}){note}"
        return f"log does NOT verify against checkpoint {cp.tree_size}: {self.problem}"


UNREADABLE_INSTANT_US = 0  # no stored event was recorded at the epoch


def _events_until(ledger: Ledger, stop: int) -> Iterator[LeafEvent]:
    position = 0
    while True:  # one page per turn, ends at the first empty page (positions only grow)
        page = read_events(ledger, position, PAGE_EVENTS, stop=stop)
        if not page:
            return
        for notification in page:
            try:
                yield leaf_event(ledger, notification)
            except (ValueError, AuditError):
                # State no decoder reads (bytes edited in place) still has a leaf: its bytes with
                # no instant, which differs from what was checkpointed, so the position is named
                # as altered instead of the verification stopping at it.
                yield LeafEvent.of(
                    notification.id,
                    notification.originator_id,
                    notification.originator_version,
                    notification.topic,
                    notification.state,
                    UNREADABLE_INSTANT_US,
                )
        position = page[-1].id


def _leaves_until(store: MerkleStore, size: int) -> Iterator[tuple[int, int, bytes]]:
    index = 0
    while index < size:  # one page per turn; a short page means the table lacks leaves
        page = store.leaves_page(index, size, PAGE_EVENTS)
        yield from page
        if len(page) < min(PAGE_EVENTS, size - index):
            raise AuditError(f"the leaf table lacks leaves below {size}: it was altered")
        index += len(page)


def _compare(position: int, stored: bytes, event: LeafEvent | None) -> tuple[int, str] | None:
    if event is None:
        return position, f"the event at position {position} is missing (the log ends early)"
    if event.position < position:
        return event.position, (
            f"an event at position {event.position} that the checkpoint does not hold (inserted)"
        )
    if event.position > position:
        return position, f"the event at position {position} is missing (deleted)"
    if leaf_hash(event.encode()) != stored:
        return position, f"the event at position {position} differs from its leaf (altered)"
    return None


def verify_log(
    ledger: Ledger,
    store: MerkleStore,
    public_key: Ed25519PublicKey | None = None,
    tree_size: int | None = None,
) -> LogReport:
    """Re-encodes every event a checkpoint covers (default: the latest), compares each with its
    stored leaf to name the first position that differs, and checks the events' root against
    the checkpoint's signed root (and its signature, given the public key). O(n), paged."""
    checkpoint = checkpoint_for(store, tree_size)
    if public_key is not None:
        try:
            verify_checkpoint(checkpoint, public_key)
        except VerificationError as error:
            return LogReport(checkpoint, False, 0, None, str(error))
    events = _events_until(ledger, checkpoint.last_position)
    from_events, from_table = CompactRange(), CompactRange()
    first: tuple[int, str] | None = None
    for _, position, stored in _leaves_until(store, checkpoint.tree_size):
        from_table.append(stored)
        event = next(events, None)
        if first is None:
            first = _compare(position, stored, event)
        if event is not None:
            from_events.append(leaf_hash(event.encode()))
    extra = next(events, None)
    if first is None and extra is not None:
        first = extra.position, f"an event at position {extra.position} the checkpoint lacks"
    ok = from_events.size == checkpoint.tree_size and from_events.root() == checkpoint.root_hash
    table_ok = from_table.root() == checkpoint.root_hash
    if ok:
        return LogReport(checkpoint, True, from_events.size, leaf_table_ok=table_ok)
    if first is not None:
        return LogReport(checkpoint, False, from_events.size, first[0], first[1], table_ok)
    problem = "the events match the leaf table but not the signed root (both were altered)"
    return LogReport(checkpoint, False, from_events.size, None, problem, table_ok)


def compare_with_store(ledger: Ledger, document: dict[str, Any]) -> list[str]:
    """Whether the store still holds the events of a proof file as the file has them: one line
    per event that differs or is gone (none: unchanged). The file itself still verifies
    offline; this says the store has since been altered."""
    entries = document.get("entries")
    if not isinstance(entries, list) or len(entries) > ACCOUNT_PROOF_EVENTS_MAX:
        raise AuditError("not a proof file with events")
    changed: list[str] = []
    for entry in entries:
        then = LeafEvent.from_json(entry.get("event") if isinstance(entry, dict) else None)
        now = event_at(ledger, then.position)
        if now is None:
            changed.append(f"position {then.position}: the event is gone from the store")
        elif now != then:
            changed.append(f"position {then.position}: the store holds another event now")
    return changed
