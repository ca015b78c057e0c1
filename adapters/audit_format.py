"""The tamper-evident log's formats: the leaf encoding of an event, the signed checkpoint, and
the JSON proof file. Standard library only (the offline verifier uses it).

Leaf encoding ``sluice-event/1``: one byte string per stored event, whatever the store
returns (a UUID or its text, bytes or a memoryview), fields in this order, integers big-endian:

    magic            12 bytes   ASCII "SLUICE-EVENT"
    encoding version  1 byte    1
    position          8 bytes   unsigned: the event's notification id in the log
    originator id    16 bytes   the aggregate's UUID (RFC 4122 byte order)
    originator ver.   8 bytes   unsigned: the event's version within its aggregate
    topic             4 bytes   unsigned length n, then n bytes of UTF-8
    state             4 bytes   unsigned length n, then the n state bytes exactly as stored
    recorded at       8 bytes   signed: microseconds since 1970-01-01T00:00:00Z (the event's
                                ``timestamp``, the instant Sluice recorded it)

Every field has a fixed width or a length prefix, so no two events share an encoding. A new
encoding gets a new version byte (and name); checkpoints sign the name of the one they use, so
proofs made today still verify after a schema change.

Checkpoint (a signed tree head): Ed25519 over the UTF-8 text below, each line ending in "\\n":

    sluice checkpoint v1
    origin <origin>                       the log's name (settings.audit_log_origin)
    leaf-encoding sluice-event/1
    tree-size <n>
    root-hash <64 hex digits>             RFC 9162 MTH of the first n leaves
    last-position <position of leaf n-1, 0 when n = 0>
    timestamp <YYYY-MM-DDTHH:MM:SS.ffffffZ>
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from adapters.merkle import HASH_SIZE

LEAF_ENCODING = "sluice-event/1"
LEAF_MAGIC = b"SLUICE-EVENT"
LEAF_VERSION = 1
CHECKPOINT_HEADER = "sluice checkpoint v1"
PROOF_OBJECT = "sluice_proof"
PROOF_FORMAT = 1
PROOF_KINDS = ("inclusion", "account", "consistency")
U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
ORIGIN_LEN_MAX = 200
SIGNATURE_SIZE = 64  # Ed25519
# The fixed-width head of a leaf, up to the topic: magic, version, position, originator id,
# originator version, topic length. One compiled Struct, as the checkpointer encodes every event.
_LEAF_HEAD = struct.Struct(">12sBQ16sQI")
_LEAF_U32 = struct.Struct(">I")
_LEAF_I64 = struct.Struct(">q")


class FormatError(ValueError):
    """A field of a proof file or a stored event cannot be read as the format says."""


# Instants ------------------------------------------------------------------------------------


def to_micros(instant: datetime) -> int:
    if instant.tzinfo is None:
        raise FormatError("an instant without a time zone")
    return (instant - EPOCH) // MICROSECOND  # exact: integer arithmetic, no float


def from_micros(micros: int) -> datetime:
    return EPOCH + micros * MICROSECOND


def format_instant(micros: int) -> str:
    return from_micros(micros).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_instant(text: Any, what: str) -> int:
    """The canonical text (``format_instant``) back to microseconds; nothing else is read."""
    if not isinstance(text, str):
        raise FormatError(f"{what}: expected an instant like 2026-01-31T09:00:00.000000Z")
    try:
        micros = to_micros(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC))
    except ValueError:
        raise FormatError(f"{what}: expected an instant like 2026-01-31T09:00:00.000000Z") from None
    if format_instant(micros) != text:
        raise FormatError(f"{what}: not in canonical form: {text!r}")
    return micros


# Field readers for JSON documents ---------------------------------------------------------------


def get_int(data: Mapping[str, Any], key: str, lo: int = 0, hi: int = U64_MAX) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise FormatError(f"{key}: expected an integer from {lo} to {hi}")
    return value


def get_str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise FormatError(f"{key}: expected a string")
    return value


def get_hex(data: Mapping[str, Any], key: str, size: int) -> bytes:
    text = get_str(data, key)
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise FormatError(f"{key}: expected {2 * size} hex digits") from None
    if len(value) != size or value.hex() != text:
        raise FormatError(f"{key}: expected {2 * size} lowercase hex digits")
    return value


def get_hashes(data: Mapping[str, Any], key: str) -> list[bytes]:
    values = data.get(key)
    if not isinstance(values, list) or len(values) > 64:
        raise FormatError(f"{key}: expected a list of at most 64 hashes")
    return [get_hex({key: v}, key, HASH_SIZE) for v in values]


# The leaf ----------------------------------------------------------------------------------


def encode_leaf(
    position: int,
    originator_id: bytes,
    originator_version: int,
    topic: bytes,
    state: bytes | bytearray | memoryview,
    recorded_at_us: int,
) -> bytes:
    """The ``sluice-event/1`` bytes of one event (fields as the module docstring lays out).
    ``struct`` refuses a value outside its field's width (``FormatError``)."""
    try:
        return b"".join(
            (
                _LEAF_HEAD.pack(
                    LEAF_MAGIC, LEAF_VERSION, position, originator_id, originator_version,
                    len(topic),
                ),
                topic,
                _LEAF_U32.pack(len(state)),
                state,
                _LEAF_I64.pack(recorded_at_us),
            )
        )  # fmt: skip
    except struct.error as error:
        raise FormatError(f"an event field is out of its range: {error}") from None


@dataclass(frozen=True)
class LeafEvent:
    """A stored event as the log commits to it (see the module docstring)."""

    position: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes
    recorded_at_us: int

    @classmethod
    def of(
        cls,
        position: int,
        originator_id: UUID | str,
        originator_version: int,
        topic: str,
        state: bytes | bytearray | memoryview,
        recorded_at: datetime | int,
    ) -> LeafEvent:
        """Normalises what a store returns: an id as a UUID or its text, state as any buffer."""
        try:
            uuid = originator_id if isinstance(originator_id, UUID) else UUID(str(originator_id))
        except ValueError:
            raise FormatError(f"originator_id: not a UUID: {originator_id!r}") from None
        at = recorded_at if isinstance(recorded_at, int) else to_micros(recorded_at)
        return cls(position, uuid, originator_version, topic, bytes(state), at)

    def encode(self) -> bytes:
        topic = self.topic.encode("utf-8")
        for name, value, hi in (
            ("position", self.position, U64_MAX),
            ("originator_version", self.originator_version, U64_MAX),
            ("topic length", len(topic), U32_MAX),
            ("state length", len(self.state), U32_MAX),
        ):
            if not 0 <= value <= hi:
                raise FormatError(f"{name} out of range: {value}")
        return encode_leaf(
            self.position,
            self.originator_id.bytes,
            self.originator_version,
            topic,
            self.state,
            self.recorded_at_us,
        )

    def as_json(self) -> dict[str, Any]:
        """The event in a proof file: the state as UTF-8 text when it is (so a person can read
        it), else base64; either way exactly the stored bytes."""
        try:
            state, encoding = self.state.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            state, encoding = base64.b64encode(self.state).decode("ascii"), "base64"
        return {
            "position": self.position,
            "originator_id": str(self.originator_id),
            "originator_version": self.originator_version,
            "topic": self.topic,
            "state": state,
            "state_encoding": encoding,
            "recorded_at": format_instant(self.recorded_at_us),
        }

    @classmethod
    def from_json(cls, data: Any) -> LeafEvent:
        if not isinstance(data, dict):
            raise FormatError("event: expected an object")
        encoding, text = get_str(data, "state_encoding"), get_str(data, "state")
        if encoding == "utf-8":
            state = text.encode("utf-8")
        elif encoding == "base64":
            try:
                state = base64.b64decode(text, validate=True)
            except binascii.Error:
                raise FormatError("state: not base64") from None
        else:
            raise FormatError("state_encoding: expected utf-8 or base64")
        return cls.of(
            get_int(data, "position"),
            get_str(data, "originator_id"),
            get_int(data, "originator_version"),
            get_str(data, "topic"),
            state,
            parse_instant(data.get("recorded_at"), "recorded_at"),
        )


# The checkpoint ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A signed tree head."""

    origin: str
    tree_size: int
    root_hash: bytes
    last_position: int
    timestamp_us: int
    signature: bytes = b""
    key_id: str = ""  # the signing key's fingerprint (``key_id``), to tell keys apart

    def signed_message(self) -> bytes:
        check_origin(self.origin)
        return (
            f"{CHECKPOINT_HEADER}\n"
            f"origin {self.origin}\n"
            f"leaf-encoding {LEAF_ENCODING}\n"
            f"tree-size {self.tree_size}\n"
            f"root-hash {self.root_hash.hex()}\n"
            f"last-position {self.last_position}\n"
            f"timestamp {format_instant(self.timestamp_us)}\n"
        ).encode()

    def as_json(self) -> dict[str, Any]:
        return {
            "object": "checkpoint",
            "origin": self.origin,
            "leaf_encoding": LEAF_ENCODING,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "last_position": self.last_position,
            "timestamp": format_instant(self.timestamp_us),
            "key_id": self.key_id,
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, data: Any) -> Checkpoint:
        if not isinstance(data, dict):
            raise FormatError("checkpoint: expected an object")
        if data.get("leaf_encoding") != LEAF_ENCODING:
            raise FormatError(f"leaf_encoding: this verifier reads {LEAF_ENCODING} only")
        origin = get_str(data, "origin")
        check_origin(origin)
        return cls(
            origin=origin,
            tree_size=get_int(data, "tree_size", 0, 2**63 - 1),
            root_hash=get_hex(data, "root_hash", HASH_SIZE),
            last_position=get_int(data, "last_position", 0, 2**63 - 1),
            timestamp_us=parse_instant(data.get("timestamp"), "timestamp"),
            signature=get_hex(data, "signature", SIGNATURE_SIZE),
            key_id=get_str(data, "key_id"),
        )


def check_origin(origin: str) -> None:
    """An origin is one line of printable ASCII without spaces (it is part of the signed text)."""
    if not 0 < len(origin) <= ORIGIN_LEN_MAX or not all(33 <= ord(ch) <= 126 for ch in origin):
        raise FormatError(
            f"origin: 1 to {ORIGIN_LEN_MAX} printable ASCII characters without spaces"
        )


def key_id(raw_public_key: bytes) -> str:
    """A public key's fingerprint: the first 8 bytes of SHA-256 of its 32 raw bytes, in hex."""
    return hashlib.sha256(raw_public_key).digest()[:8].hex()


def proof_document(kind: str, **fields: Any) -> dict[str, Any]:
    """The envelope of every proof file."""
    if kind not in PROOF_KINDS:
        raise ValueError(f"unknown proof kind {kind!r}")
    return {
        "object": PROOF_OBJECT,
        "format": PROOF_FORMAT,
        "kind": kind,
        "hash": "sha256 (RFC 9162 §2.1)",
        "leaf_encoding": LEAF_ENCODING,
        **fields,
    }
