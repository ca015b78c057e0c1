"""The auditor's offline verifier: a proof file (JSON) and the log's public key in, a verdict out.

Needs no database and nothing of Sluice's core: it imports the standard library,
``cryptography`` (Ed25519) and two standard-library-only modules beside it
(``adapters.merkle``, ``adapters.audit_format``). Run it alone::

    python -m adapters.proof_verifier proof.json --public-key sluice-audit.pub

It checks, for every proof kind: each checkpoint's Ed25519 signature (and that its key id names
the key given); for each event in the file, that the event data re-encodes to its leaf
(``sluice-event/1``), that the recorded instant is the one in the event's state, and that the
leaf's inclusion path leads to the checkpoint's root; for a consistency proof, that the newer
tree extends the older one (RFC 9162 §2.1.4.2). Exit status 0 when everything verifies, 1 when
something does not (one line saying what), 2 when the files cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from adapters.audit_format import (
    LEAF_ENCODING,
    PROOF_FORMAT,
    PROOF_KINDS,
    PROOF_OBJECT,
    Checkpoint,
    FormatError,
    LeafEvent,
    get_hashes,
    get_int,
    key_id,
    to_micros,
)
from adapters.merkle import ProofError, leaf_hash, verify_consistency, verify_inclusion

PROOF_FILE_BYTES_MAX = 256 * 1024 * 1024  # a file larger than this is refused, not read
ENTRIES_MAX = 100_000  # events in one proof file


class VerificationError(ValueError):
    """The proof does not verify (exit 1); the message names the first failed check."""


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key as PEM (SubjectPublicKeyInfo), 32 raw bytes, or 64 hex digits."""
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text)
        except ValueError as error:
            raise FormatError(f"public key: unreadable PEM ({error})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise FormatError("public key: not an Ed25519 key")
        return key
    if len(data) == 32:
        return Ed25519PublicKey.from_public_bytes(data)
    try:
        raw = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raw = b""
    if len(raw) != 32:
        raise FormatError("public key: expected PEM, 32 raw bytes or 64 hex digits")
    return Ed25519PublicKey.from_public_bytes(raw)


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def verify_checkpoint(checkpoint: Checkpoint, key: Ed25519PublicKey) -> None:
    own = key_id(raw_public_key(key))
    if checkpoint.key_id and checkpoint.key_id != own:
        raise VerificationError(
            f"checkpoint {checkpoint.tree_size} was signed by key {checkpoint.key_id},"
            f" not by the key given ({own})"
        )
    try:
        key.verify(checkpoint.signature, checkpoint.signed_message())
    except InvalidSignature:
        raise VerificationError(
            f"checkpoint {checkpoint.tree_size}: the signature does not verify"
        ) from None


def state_timestamp(state: bytes) -> int | None:
    """The ``timestamp`` an eventsourcing JSON state carries, if it is one (else None)."""
    try:
        data = json.loads(state)
        text = data["timestamp"]["_data_"]
        return to_micros(datetime.fromisoformat(text)) if isinstance(text, str) else None
    except (ValueError, TypeError, KeyError, FormatError):
        return None


def verify_entry(entry: Any, checkpoint: Checkpoint) -> LeafEvent:
    """One event of a proof file against ``checkpoint``; returns the event."""
    if not isinstance(entry, dict):
        raise FormatError("entry: expected an object")
    event = LeafEvent.from_json(entry.get("event"))
    where = f"position {event.position}"
    computed = leaf_hash(event.encode())
    claimed = entry.get("leaf_hash")
    if claimed is not None and claimed != computed.hex():
        raise VerificationError(f"{where}: the event data does not encode to its leaf hash")
    recorded = state_timestamp(event.state)
    if recorded is not None and recorded != event.recorded_at_us:
        raise VerificationError(f"{where}: recorded_at is not the timestamp in the state")
    index = get_int(entry, "leaf_index", 0, 2**63 - 1)
    if event.position > checkpoint.last_position:
        raise VerificationError(f"{where}: after the checkpoint's last position")
    if index == checkpoint.tree_size - 1 and event.position != checkpoint.last_position:
        raise VerificationError(f"{where}: the last leaf is not at the checkpoint's last position")
    try:
        path = get_hashes(entry, "inclusion_path")
        verify_inclusion(index, checkpoint.tree_size, computed, path, checkpoint.root_hash)
    except ProofError as error:
        raise VerificationError(f"{where}: {error}") from None
    return event


def _verify_entries(doc: dict[str, Any], checkpoint: Checkpoint) -> list[str]:
    entries = doc.get("entries")
    if not isinstance(entries, list) or not entries or len(entries) > ENTRIES_MAX:
        raise FormatError(f"entries: expected a list of 1 to {ENTRIES_MAX} events")
    positions = [verify_entry(entry, checkpoint).position for entry in entries]
    if positions != sorted(set(positions)):
        raise VerificationError("entries: positions repeat or are out of order")
    lines = [
        f"event at position {p}: included in checkpoint {checkpoint.tree_size}" for p in positions
    ]
    if doc["kind"] == "account":
        movements = doc.get("movements")
        if not isinstance(movements, list) or not all(isinstance(m, dict) for m in movements):
            raise FormatError("movements: expected a list of objects")
        unproven = sorted({m.get("position") for m in movements} - set(positions), key=str)
        if unproven:
            raise VerificationError(f"movements at positions without a proof: {unproven}")
        lines.append(f"every movement of {doc.get('account')} comes from a proven event")
    return lines


def verify_document(doc: Any, key: Ed25519PublicKey) -> list[str]:
    """Verifies a proof document; returns what was checked, one line each, or raises
    ``VerificationError`` (does not verify) or ``FormatError`` (not a proof file)."""
    if not isinstance(doc, dict) or doc.get("object") != PROOF_OBJECT:
        raise FormatError(f"not a proof file (object must be {PROOF_OBJECT!r})")
    if doc.get("format") != PROOF_FORMAT or doc.get("leaf_encoding") != LEAF_ENCODING:
        raise FormatError(f"this verifier reads format {PROOF_FORMAT}, leaves {LEAF_ENCODING}")
    kind = doc.get("kind")
    if kind not in PROOF_KINDS:
        raise FormatError(f"kind: one of {', '.join(PROOF_KINDS)}")
    if kind == "consistency":
        return _verify_consistency(doc, key)
    checkpoint = Checkpoint.from_json(doc.get("checkpoint"))
    verify_checkpoint(checkpoint, key)
    lines = [
        f"checkpoint {checkpoint.tree_size} ({checkpoint.origin}, root"
        f" {checkpoint.root_hash.hex()[:16]}…): signature verifies"
    ]
    return lines + _verify_entries(doc, checkpoint)


def _verify_consistency(doc: dict[str, Any], key: Ed25519PublicKey) -> list[str]:
    old = Checkpoint.from_json(doc.get("old_checkpoint"))
    new = Checkpoint.from_json(doc.get("new_checkpoint"))
    for checkpoint in (old, new):
        verify_checkpoint(checkpoint, key)
    if old.origin != new.origin:
        raise VerificationError(f"checkpoints of two logs: {old.origin} and {new.origin}")
    try:
        path = get_hashes(doc, "consistency_path")
        verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, path)
    except ProofError as error:
        raise VerificationError(f"consistency {old.tree_size} → {new.tree_size}: {error}") from None
    if old.tree_size == new.tree_size and old.last_position != new.last_position:
        raise VerificationError("two checkpoints of one size name different last positions")
    return [
        f"checkpoints {old.tree_size} and {new.tree_size}: signatures verify",
        f"checkpoint {new.tree_size} extends checkpoint {old.tree_size}: the first"
        f" {old.tree_size} events are unchanged",
    ]


def read_json_file(path: Path) -> Any:
    if path.stat().st_size > PROOF_FILE_BYTES_MAX:
        raise FormatError(f"{path}: larger than {PROOF_FILE_BYTES_MAX} bytes")
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as error:
        raise FormatError(f"{path}: not JSON ({error})") from None


def verify_files(proof: Path, public_key: Path) -> list[str]:
    return verify_document(read_json_file(proof), load_public_key(public_key.read_bytes()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adapters.proof_verifier", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("proof", type=Path, help="the proof file (JSON)")
    parser.add_argument("--public-key", type=Path, required=True, help="PEM, raw or hex")
    args = parser.parse_args(argv)
    try:
        lines = verify_files(args.proof, args.public_key)
    except VerificationError as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    except (FormatError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in lines:
        print(f"ok: {line}")
    print("proof verifies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
