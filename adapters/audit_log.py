"""The tamper-evident history: a Merkle log over the stored events, and signed checkpoints.

Off the write path. The ``Checkpointer`` follows the notification log after its last leaf
(``select_notifications``, paged), encodes each event as a leaf (``sluice-event/1``, see
``adapters.audit_format``), and appends in one read-model transaction per page: the leaf hashes,
the perfect subtrees each page completes, and its head (size, last position and the compact
range: one root per set bit of the size). So a checkpoint at any size costs O(new events), and
a proof O(log n) stored hashes. It never touches the events table but to read it: on PostgreSQL
it takes no lock a writer needs; on SQLite (one writer per file) its write transactions are one
page long, like a projection's batches.

Tables (``AUDIT_DDL``, in the read-model database, both dialects; hashes are lowercase hex):
``sl_merkle_leaves`` (leaf index → position, leaf hash), ``sl_merkle_nodes`` (level ≥ 1, index →
hash of leaves [index·2^level, (index+1)·2^level)), ``sl_merkle_head`` (one row), and
``sl_merkle_checkpoints`` (signed tree heads, by tree size).

The signing key (Ed25519) comes from settings (``audit_signing_key_file`` or
``audit_signing_key``); only ``checkpoint()`` needs it. Proofs: ``adapters.audit_proofs``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from eventsourcing.persistence import IntegrityError, JSONTranscoder

from adapters.audit_format import (
    Checkpoint,
    FormatError,
    LeafEvent,
    check_origin,
    encode_leaf,
    key_id,
    to_micros,
)
from adapters.merkle import CompactRange, is_perfect, leaf_hash
from adapters.settings import Settings
from ledger.application import Ledger
from projections.store import ReadModel, Tx

AUDIT_DDL = (
    "CREATE TABLE IF NOT EXISTS sl_merkle_leaves ("
    " leaf_index BIGINT PRIMARY KEY, position BIGINT NOT NULL UNIQUE, leaf_hash TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sl_merkle_nodes ("
    " level BIGINT NOT NULL, node_index BIGINT NOT NULL, node_hash TEXT NOT NULL,"
    " PRIMARY KEY (level, node_index))",
    "CREATE TABLE IF NOT EXISTS sl_merkle_head ("
    " name TEXT PRIMARY KEY, tree_size BIGINT NOT NULL, last_position BIGINT NOT NULL,"
    " compact_range TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sl_merkle_checkpoints ("
    " tree_size BIGINT PRIMARY KEY, root_hash TEXT NOT NULL, last_position BIGINT NOT NULL,"
    " timestamp_us BIGINT NOT NULL, origin TEXT NOT NULL, key_id TEXT NOT NULL,"
    " signature TEXT NOT NULL)",
)
AUDIT_TABLES = ("sl_merkle_checkpoints", "sl_merkle_head", "sl_merkle_nodes", "sl_merkle_leaves")
HEAD_NAME = "default"
LEAF_COLUMNS = ("leaf_index", "position", "leaf_hash")
NODE_COLUMNS = ("level", "node_index", "node_hash")
PAGE_EVENTS = 1_000  # events read, and leaves appended, per transaction
CATCH_UP_EVENTS_MAX = 2_000_000  # one checkpoint() call appends at most this many leaves
INSERT_ROWS_MAX = 300  # SQLite rows per INSERT: 3 parameters each stays under its 999
LOOKUP_KEYS_MAX = 300  # keys per SELECT … IN (…) when fetching proof hashes
LIST_LIMIT_MAX = 100
KEY_FILE_BYTES_MAX = 16 * 1024


class AuditError(Exception):
    """A request the audit log cannot answer; ``status`` as HTTP would say it."""

    def __init__(self, message: str, *, code: str = "audit_error", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


def not_found(message: str) -> AuditError:
    return AuditError(message, code="resource_missing", status=404)


# Keys ------------------------------------------------------------------------------------------


def parse_private_key(data: bytes, where: str) -> Ed25519PrivateKey:
    """PEM (PKCS#8, unencrypted), the 32-byte seed raw, or the seed as 64 hex digits."""
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text, password=None)
        except (ValueError, TypeError) as error:
            raise AuditError(f"{where}: unreadable PEM private key ({error})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise AuditError(f"{where}: not an Ed25519 private key")
        return key
    if len(data) == 32:
        return Ed25519PrivateKey.from_private_bytes(data)
    try:
        seed = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        seed = b""
    if len(seed) != 32:
        raise AuditError(f"{where}: expected a PEM Ed25519 key, or its 32-byte seed raw or in hex")
    return Ed25519PrivateKey.from_private_bytes(seed)


def signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The checkpoint signing key from ``audit_signing_key_file`` or ``audit_signing_key``."""
    inline, path = settings.audit_signing_key, settings.audit_signing_key_file
    if inline and path:
        raise AuditError("set SLUICE_AUDIT_SIGNING_KEY or SLUICE_AUDIT_SIGNING_KEY_FILE, not both")
    if inline:
        return parse_private_key(inline.encode("utf-8"), "SLUICE_AUDIT_SIGNING_KEY")
    if not path:
        raise AuditError(
            "no audit signing key: set SLUICE_AUDIT_SIGNING_KEY_FILE (create one with"
            " `sluice audit generate-key FILE`)",
            code="signing_key_missing",
        )
    try:
        with open(path, "rb") as handle:
            data = handle.read(KEY_FILE_BYTES_MAX + 1)
    except OSError as error:
        raise AuditError(f"audit signing key file {path}: {error.strerror or error}") from None
    if len(data) > KEY_FILE_BYTES_MAX:
        raise AuditError(f"audit signing key file {path}: too large to be a key")
    return parse_private_key(data, f"audit signing key file {path}")


def generate_key_file(path: Path) -> Ed25519PrivateKey:
    """A new key in PEM, readable by its owner only; refuses to overwrite a file."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AuditError(f"{path} exists: a signing key is never overwritten") from None
    except OSError as error:
        raise AuditError(f"{path}: {error.strerror or error}") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return key


def public_key_bytes(key: Ed25519PublicKey, fmt: str) -> bytes:
    """The public key as ``pem`` (SubjectPublicKeyInfo), ``raw`` (32 bytes) or ``hex``."""
    if fmt == "pem":
        return key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if fmt == "raw":
        return raw
    if fmt == "hex":
        return raw.hex().encode("ascii") + b"\n"
    raise AuditError(f"unknown public key format {fmt!r}: pem, raw or hex")


def key_fingerprint(key: Ed25519PublicKey) -> str:
    return key_id(public_key_bytes(key, "raw"))


# Leaves ----------------------------------------------------------------------------------------


def _plain_state(ledger: Ledger, notification: Any) -> bytes:
    """The state as the transcoder reads it: deciphered and decompressed, as the mapper does."""
    mapper = ledger.mapper
    state = notification.state
    if mapper.cipher is not None:
        state = mapper.cipher.decrypt(state)
    if mapper.compressor is not None:
        state = mapper.compressor.decompress(state)
    return bytes(state)


def _timestamp_fast(state: bytes) -> datetime | None:
    """The ``timestamp`` of a JSONTranscoder state without decoding the rest: the C parser
    with no object hook, then the one ``datetime_iso`` value, read as DatetimeAsISO reads it.
    None when the state is not shaped so (the caller then decodes it all); a third of the
    checkpointer's time went to decoding whole states for this one field."""
    try:
        data = json.loads(state)
    except ValueError:
        return None
    if not isinstance(data, dict) or "_type_" in data:
        return None
    raw = data.get("timestamp")
    if not isinstance(raw, dict) or raw.keys() != {"_type_", "_data_"}:
        return None
    text = raw["_data_"]
    if raw["_type_"] != "datetime_iso" or not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def recorded_at_us(ledger: Ledger, notification: Any) -> int:
    """The event's recorded instant (its ``timestamp``) in microseconds since the epoch."""
    state = _plain_state(ledger, notification)
    transcoder = ledger.mapper.transcoder
    timestamp = _timestamp_fast(state) if type(transcoder) is JSONTranscoder else None
    if timestamp is None:
        timestamp = transcoder.decode(state).get("timestamp")
    if not isinstance(timestamp, datetime) or timestamp.tzinfo is None:
        raise AuditError(f"the event at position {notification.id} has no recorded instant")
    return to_micros(timestamp)


def leaf_event(ledger: Ledger, notification: Any) -> LeafEvent:
    """A stored event as the log commits to it; the recorded instant is the event's
    ``timestamp``, read from its state (deciphered and decompressed as the mapper does)."""
    return LeafEvent.of(
        notification.id,
        notification.originator_id,
        notification.originator_version,
        notification.topic,
        notification.state,
        recorded_at_us(ledger, notification),
    )


def leaf_hash_of(ledger: Ledger, notification: Any) -> bytes:
    """``leaf_hash(leaf_event(…).encode())`` without the intermediate objects: the
    checkpointer's per-event work."""
    oid = notification.originator_id
    uuid = oid if isinstance(oid, UUID) else UUID(str(oid))
    return leaf_hash(
        encode_leaf(
            notification.id,
            uuid.bytes,
            notification.originator_version,
            notification.topic.encode("utf-8"),
            notification.state,
            recorded_at_us(ledger, notification),
        )
    )


def read_events(ledger: Ledger, after: int, limit: int, stop: int | None = None) -> list[Any]:
    """One page of the notification log after ``after`` (up to ``stop``, inclusive)."""
    return list(
        ledger.recorder.select_notifications(
            start=after, limit=limit, stop=stop, inclusive_of_start=False
        )
    )


def event_at(ledger: Ledger, position: int) -> LeafEvent | None:
    page = ledger.recorder.select_notifications(start=position, limit=1, stop=position)
    return leaf_event(ledger, page[0]) if page and page[0].id == position else None


# The store -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    tree_size: int
    last_position: int
    roots: tuple[bytes, ...]

    def tree(self) -> CompactRange:
        return CompactRange(self.tree_size, self.roots)


def _insert(
    tx: Tx, dialect: str, table: str, columns: Sequence[str], rows: Sequence[tuple[int, int, str]]
) -> None:
    """Bulk INSERT of (BIGINT, BIGINT, hex TEXT) rows. PostgreSQL: one statement per page,
    the columns as three arrays (``unnest``), so the statement is parsed once, whatever the page
    size. SQLite (in-process, no round trips): multi-row VALUES, ``INSERT_ROWS_MAX`` rows each."""
    names = ", ".join(columns)
    if not rows:
        return
    if dialect == "postgres":
        # Each column as one comma-joined text (integers and hex need no quoting): psycopg
        # sends three strings, where lists would be dumped item by item.
        tx.execute(
            f"INSERT INTO {table} ({names}) SELECT * FROM unnest("
            "string_to_array(%s, ',')::bigint[], string_to_array(%s, ',')::bigint[],"
            " string_to_array(%s, ','))",
            [",".join(map(str, column)) for column in zip(*rows, strict=True)],
        )
        return
    for lo in range(0, len(rows), INSERT_ROWS_MAX):
        chunk = rows[lo : lo + INSERT_ROWS_MAX]
        marks = ", ".join(["(%s, %s, %s)"] * len(chunk))
        tx.execute(
            f"INSERT INTO {table} ({names}) VALUES {marks}",
            [value for row in chunk for value in row],
        )


def _checkpoint_from_row(row: dict[str, Any]) -> Checkpoint:
    return Checkpoint(
        origin=row["origin"],
        tree_size=int(row["tree_size"]),
        root_hash=bytes.fromhex(row["root_hash"]),
        last_position=int(row["last_position"]),
        timestamp_us=int(row["timestamp_us"]),
        signature=bytes.fromhex(row["signature"]),
        key_id=row["key_id"],
    )


class MerkleStore:
    """The log's tables in the read-model database, through ``ReadModel``'s portable SQL."""

    def __init__(self, view: ReadModel, *, create_tables: bool = True) -> None:
        self.view = view
        if create_tables:  # IF NOT EXISTS, as the relay's table; `sluice db init` may add them
            with view.write(None) as tx:
                for ddl in AUDIT_DDL:
                    tx.execute(ddl)

    def head(self) -> Head:
        with self.view.read() as tx:
            tx.execute(
                "SELECT tree_size, last_position, compact_range FROM sl_merkle_head"
                " WHERE name = %s",
                (HEAD_NAME,),
            )
            row = tx.one()
        if row is None:
            return Head(0, 0, ())
        roots = tuple(bytes.fromhex(h) for h in json.loads(row["compact_range"]))
        return Head(int(row["tree_size"]), int(row["last_position"]), roots)

    def append(
        self,
        leaves: Sequence[tuple[int, int, bytes]],
        nodes: Sequence[tuple[int, int, bytes]],
        head: Head,
    ) -> None:
        """One page in one transaction: leaves (index, position, hash), completed nodes
        (level, index, hash) and the new head. A second checkpointer appending the same leaf
        indexes fails on the primary key, and its transaction changes nothing."""
        dialect = self.view.dialect
        try:
            self._append(dialect, leaves, nodes, head)
        except IntegrityError:
            raise AuditError(
                "another checkpointer appended the same leaves meanwhile: run again",
                code="checkpoint_conflict",
                status=409,
            ) from None

    def _append(
        self,
        dialect: str,
        leaves: Sequence[tuple[int, int, bytes]],
        nodes: Sequence[tuple[int, int, bytes]],
        head: Head,
    ) -> None:
        with self.view.write(None) as tx:
            leaf_rows = [(i, p, h.hex()) for i, p, h in leaves]
            _insert(tx, dialect, "sl_merkle_leaves", LEAF_COLUMNS, leaf_rows)
            if nodes:
                node_rows = [(lv, i, h.hex()) for lv, i, h in nodes]
                _insert(tx, dialect, "sl_merkle_nodes", NODE_COLUMNS, node_rows)
            tx.execute(
                "INSERT INTO sl_merkle_head (name, tree_size, last_position, compact_range)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET"
                " tree_size = excluded.tree_size, last_position = excluded.last_position,"
                " compact_range = excluded.compact_range",
                (
                    HEAD_NAME,
                    head.tree_size,
                    head.last_position,
                    json.dumps([r.hex() for r in head.roots]),
                ),
            )

    def perfect_hashes(self, subtrees: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Hashes of perfect aligned subtrees [start, end): leaves and stored nodes."""
        wanted = list(subtrees)
        for start, end in wanted:
            if not is_perfect(start, end):
                raise ValueError(f"[{start}, {end}) is not a perfect aligned subtree")
        found: dict[tuple[int, int], bytes] = {}
        leaves = [start for start, end in wanted if end - start == 1]
        nodes = [
            ((end - start).bit_length() - 1, start) for start, end in wanted if end - start > 1
        ]
        with self.view.read() as tx:
            for lo in range(0, len(leaves), LOOKUP_KEYS_MAX):
                chunk = leaves[lo : lo + LOOKUP_KEYS_MAX]
                tx.execute(
                    "SELECT leaf_index, leaf_hash FROM sl_merkle_leaves WHERE leaf_index IN ("
                    + ", ".join(["%s"] * len(chunk)) + ")",
                    chunk,
                )  # fmt: skip
                for row in tx.all():
                    i = int(row["leaf_index"])
                    found[(i, i + 1)] = bytes.fromhex(row["leaf_hash"])
            for lo in range(0, len(nodes), LOOKUP_KEYS_MAX):
                chunk2 = nodes[lo : lo + LOOKUP_KEYS_MAX]
                tx.execute(
                    "SELECT level, node_index, node_hash FROM sl_merkle_nodes WHERE "
                    + " OR ".join(["(level = %s AND node_index = %s)"] * len(chunk2)),
                    [v for level, start in chunk2 for v in (level, start >> level)],
                )  # fmt: skip
                for row in tx.all():
                    level, index = int(row["level"]), int(row["node_index"])
                    found[(index << level, (index + 1) << level)] = bytes.fromhex(row["node_hash"])
        missing = [key for key in wanted if key not in found]
        if missing:
            raise AuditError(f"the Merkle store lacks subtrees {missing[:3]}: it was altered")
        return found

    def leaves_at(self, positions: Sequence[int]) -> dict[int, tuple[int, bytes]]:
        """position → (leaf index, leaf hash), for the positions that have a leaf."""
        found: dict[int, tuple[int, bytes]] = {}
        with self.view.read() as tx:
            for lo in range(0, len(positions), LOOKUP_KEYS_MAX):
                chunk = list(positions[lo : lo + LOOKUP_KEYS_MAX])
                tx.execute(
                    "SELECT position, leaf_index, leaf_hash FROM sl_merkle_leaves"
                    " WHERE position IN (" + ", ".join(["%s"] * len(chunk)) + ")",
                    chunk,
                )
                for row in tx.all():
                    found[int(row["position"])] = (
                        int(row["leaf_index"]),
                        bytes.fromhex(row["leaf_hash"]),
                    )
        return found

    def leaves_page(self, start: int, end: int, limit: int) -> list[tuple[int, int, bytes]]:
        """Leaves with index in [start, end), in order, at most ``limit``."""
        with self.view.read() as tx:
            tx.execute(
                "SELECT leaf_index, position, leaf_hash FROM sl_merkle_leaves"
                " WHERE leaf_index >= %s AND leaf_index < %s ORDER BY leaf_index LIMIT %s",
                (start, end, limit),
            )
            rows = tx.all()
        return [
            (int(r["leaf_index"]), int(r["position"]), bytes.fromhex(r["leaf_hash"])) for r in rows
        ]

    # Checkpoints -------------------------------------------------------------------------------

    def add_checkpoint(self, checkpoint: Checkpoint) -> Checkpoint:
        """Stores a checkpoint; one of the same size already there wins (returned)."""
        existing = self.checkpoint(checkpoint.tree_size)
        if existing is not None:
            return existing
        with self.view.write(None) as tx:
            tx.execute(
                "INSERT INTO sl_merkle_checkpoints (tree_size, root_hash, last_position,"
                " timestamp_us, origin, key_id, signature) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (tree_size) DO NOTHING",
                (
                    checkpoint.tree_size, checkpoint.root_hash.hex(), checkpoint.last_position,
                    checkpoint.timestamp_us, checkpoint.origin, checkpoint.key_id,
                    checkpoint.signature.hex(),
                ),
            )  # fmt: skip
        return self.checkpoint(checkpoint.tree_size) or checkpoint

    def checkpoint(self, tree_size: int | None = None) -> Checkpoint | None:
        """The checkpoint of ``tree_size``, or the latest one (None: there is none)."""
        with self.view.read() as tx:
            if tree_size is None:
                tx.execute("SELECT * FROM sl_merkle_checkpoints ORDER BY tree_size DESC LIMIT 1")
            else:
                tx.execute("SELECT * FROM sl_merkle_checkpoints WHERE tree_size = %s", (tree_size,))
            row = tx.one()
        return _checkpoint_from_row(row) if row else None

    def checkpoints(self, limit: int, before: int | None = None) -> list[Checkpoint]:
        """Newest first, at most ``limit``; ``before``: only sizes below it (paging). A list
        asks for one more than it shows, to know whether there are more."""
        if not 1 <= limit <= LIST_LIMIT_MAX + 1:
            raise AuditError(f"limit must be between 1 and {LIST_LIMIT_MAX}")
        with self.view.read() as tx:
            tx.execute(
                "SELECT * FROM sl_merkle_checkpoints WHERE tree_size < %s"
                " ORDER BY tree_size DESC LIMIT %s",
                (2**63 - 1 if before is None else before, limit),
            )
            rows = tx.all()
        return [_checkpoint_from_row(row) for row in rows]

    def reset(self) -> None:
        """Empties the log's tables (benchmarks and tests only: checkpoints are evidence)."""
        with self.view.write(None) as tx:
            for table in AUDIT_TABLES:
                tx.execute(f"DELETE FROM {table}")


# The checkpointer ------------------------------------------------------------------------------


def system_clock() -> datetime:
    return datetime.now(UTC)


class Checkpointer:
    """Appends the events after its last leaf, then signs a checkpoint of the whole tree."""

    def __init__(
        self,
        ledger: Ledger,
        store: MerkleStore,
        *,
        key: Ed25519PrivateKey | None = None,
        origin: str = "sluice",
        clock: Callable[[], datetime] = system_clock,
        page_events: int = PAGE_EVENTS,
    ) -> None:
        check_origin(origin)
        if not 1 <= page_events <= 10_000:
            raise ValueError("page_events must be between 1 and 10000")
        self.ledger = ledger
        self.store = store
        self.key = key
        self.origin = origin
        self.clock = clock
        self.page_events = page_events

    def catch_up(self, max_events: int = CATCH_UP_EVENTS_MAX) -> int:
        """Appends leaves for up to ``max_events`` events after the head; returns how many."""
        head = self.store.head()
        tree = head.tree()
        appended = 0
        while appended < max_events:  # bounded by max_events; each turn reads ≥ 1 event
            page = read_events(
                self.ledger, head.last_position, min(self.page_events, max_events - appended)
            )
            if not page:
                break
            leaves: list[tuple[int, int, bytes]] = []
            nodes: list[tuple[int, int, bytes]] = []
            for notification in page:
                h = leaf_hash_of(self.ledger, notification)
                leaves.append((tree.size, notification.id, h))
                nodes.extend(tree.append(h))
            head = Head(tree.size, page[-1].id, tuple(tree.roots))
            self.store.append(leaves, nodes, head)
            appended += len(page)
        return appended

    def checkpoint(self, max_events: int = CATCH_UP_EVENTS_MAX) -> Checkpoint:
        """Catches up (at most ``max_events``) and signs the tree as it then is. Signing the
        same size twice returns the first checkpoint."""
        if self.key is None:
            raise AuditError("checkpoints need the signing key", code="signing_key_missing")
        self.catch_up(max_events)
        head = self.store.head()
        existing = self.store.checkpoint(head.tree_size)
        if existing is not None:
            return existing
        unsigned = Checkpoint(
            origin=self.origin,
            tree_size=head.tree_size,
            root_hash=head.tree().root(),
            last_position=head.last_position,
            timestamp_us=to_micros(self.clock()),
            key_id=key_fingerprint(self.key.public_key()),
        )
        signed = replace(unsigned, signature=self.key.sign(unsigned.signed_message()))
        return self.store.add_checkpoint(signed)


def open_checkpointer(
    ledger: Ledger, view: ReadModel, settings: Settings, *, need_key: bool = True
) -> Checkpointer:
    key = signing_key(settings) if need_key else None
    return Checkpointer(ledger, MerkleStore(view), key=key, origin=settings.audit_log_origin)


# Benchmark -------------------------------------------------------------------------------------


def _timed_read(ledger: Ledger, max_events: int, page_events: int, decode: bool) -> float:
    """Seconds to page through the first ``max_events`` notifications (decoded or not)."""
    began, position, read = time.perf_counter(), 0, 0
    while read < max_events:  # bounded: each turn reads at least one event
        page = read_events(ledger, position, min(page_events, max_events - read))
        if not page:
            break
        if decode:
            for notification in page:
                ledger.mapper.to_domain_event(notification)
        read += len(page)
        position = page[-1].id
    return time.perf_counter() - began


def bench_checkpointing(
    ledger: Ledger,
    view: ReadModel,
    *,
    max_events: int = 200_000,
    page_events: int = PAGE_EVENTS,
    reset: bool = False,
) -> dict[str, Any]:
    """Checkpointing throughput beside the read rate of the same notifications, in one run.

    Reads the first ``max_events`` notifications bare (``select_notifications`` pages, the
    floor under any reader) and decoded (``+ mapper.to_domain_event``, as projections read),
    then appends them through a Checkpointer from an empty tree and signs (``reset=True``
    empties the audit tables first: only on a scratch store), then signs again with nothing new.
    """
    store = MerkleStore(view)
    if reset:
        store.reset()
    elif store.head().tree_size:
        raise AuditError("the audit tables are not empty: pass reset=True on a scratch store")
    raw_s = _timed_read(ledger, max_events, page_events, decode=False)
    decoded_s = _timed_read(ledger, max_events, page_events, decode=True)
    key = Ed25519PrivateKey.generate()
    checkpointer = Checkpointer(ledger, store, key=key, page_events=page_events)
    began = time.perf_counter()
    appended = checkpointer.catch_up(max_events)
    append_s = time.perf_counter() - began
    checkpoint = checkpointer.checkpoint(max_events=0)
    total_s = time.perf_counter() - began
    began = time.perf_counter()
    again = Checkpointer(ledger, store, key=key).checkpoint(max_events=0)
    idle_s = time.perf_counter() - began
    per_s = appended / total_s if total_s else float("nan")
    return {
        "events": appended,
        "page_events": page_events,
        "raw_read_per_s": appended / raw_s if raw_s else float("nan"),
        "decoded_read_per_s": appended / decoded_s if decoded_s else float("nan"),
        "checkpointing_s": total_s,
        "checkpointing_per_s": per_s,
        "x_raw_read": (appended / raw_s) / per_s if raw_s and appended else None,
        "x_decoded_read": (appended / decoded_s) / per_s if decoded_s and appended else None,
        "sign_s": total_s - append_s,
        "checkpoint_with_nothing_new_s": idle_s,
        "tree_size": checkpoint.tree_size,
        "same_checkpoint_again": again == checkpoint,
    }


__all__ = [
    "AUDIT_DDL",
    "AuditError",
    "Checkpointer",
    "FormatError",
    "Head",
    "MerkleStore",
    "bench_checkpointing",
    "event_at",
    "generate_key_file",
    "leaf_event",
    "open_checkpointer",
    "public_key_bytes",
    "signing_key",
]
