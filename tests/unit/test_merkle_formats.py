"""The leaf encoding, the signed checkpoint text and the offline verifier's isolation."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.audit_format import (
    Checkpoint,
    FormatError,
    LeafEvent,
    format_instant,
    parse_instant,
    proof_document,
    to_micros,
)
from adapters.audit_log import AuditError, parse_private_key, public_key_bytes
from adapters.merkle import inclusion_path, leaf_hash, perfect_from_leaves, root_of
from adapters.proof_verifier import (
    VerificationError,
    load_public_key,
    verify_checkpoint,
    verify_document,
)

ROOT = Path(__file__).resolve().parents[2]
ID = UUID("3f72ef56-fe22-53a1-95ea-e9e68c168b57")
AT = datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC)
GOLDEN_LEAF_HASH = "fbcafd447a97bb7dc011fcd4cd9115f57a8dd1a305ef8e6c66f476880e1a65e3"
STATE = b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-03-02T09:00:00.123456+00:00"}}'


def event(**changes: Any) -> LeafEvent:
    return replace(LeafEvent.of(7, ID, 2, "ledger.payments:Payment.Captured", STATE, AT), **changes)


def test_the_leaf_encoding_byte_for_byte() -> None:
    encoded = event().encode()
    topic = b"ledger.payments:Payment.Captured"
    expected = (
        b"SLUICE-EVENT\x01"
        + (7).to_bytes(8, "big")
        + ID.bytes
        + (2).to_bytes(8, "big")
        + len(topic).to_bytes(4, "big")
        + topic
        + len(STATE).to_bytes(4, "big")
        + STATE
        + to_micros(AT).to_bytes(8, "big", signed=True)
    )
    assert encoded == expected
    assert leaf_hash(encoded) == hashlib.sha256(b"\x00" + expected).digest()
    # A golden value: a change here breaks every proof already handed out (a new version).
    assert leaf_hash(encoded).hex() == GOLDEN_LEAF_HASH


def test_one_encoding_whatever_the_store_returns() -> None:
    a = LeafEvent.of(7, ID, 2, "t", STATE, AT)
    b = LeafEvent.of(7, ID.hex, 2, "t", memoryview(STATE), to_micros(AT))
    c = LeafEvent.of(7, str(ID).upper(), 2, "t", bytearray(STATE), AT.astimezone())
    assert a.encode() == b.encode() == c.encode()
    with pytest.raises(FormatError):
        LeafEvent.of(7, "not-a-uuid", 2, "t", STATE, AT)


def test_every_field_is_in_the_leaf() -> None:
    base = event().encode()
    for change in (
        {"position": 8},
        {"originator_id": UUID(int=1)},
        {"originator_version": 3},
        {"topic": "ledger.payments:Payment.Refunded"},
        {"state": STATE + b" "},
        {"recorded_at_us": to_micros(AT) + 1},
    ):
        assert event(**change).encode() != base, change
    # Length prefixes: moving a byte from the topic to the state is another leaf.
    assert event(topic="ab", state=b"c").encode() != event(topic="a", state=b"bc").encode()


def test_the_event_json_round_trips_to_the_same_bytes() -> None:
    for state in (STATE, b"\xff\x00binary", "ünïcode".encode(), b""):
        e = event(state=state)
        again = LeafEvent.from_json(json.loads(json.dumps(e.as_json())))
        assert again == e and again.encode() == e.encode()
    assert event(state=b"\xff").as_json()["state_encoding"] == "base64"


def test_instants_have_one_text_form() -> None:
    micros = to_micros(AT)
    assert format_instant(micros) == "2026-03-02T09:00:00.123456Z"
    assert parse_instant("2026-03-02T09:00:00.123456Z", "t") == micros
    for text in ("2026-03-02T09:00:00Z", "2026-03-02T09:00:00.123456+00:00", 5, None):
        with pytest.raises(FormatError):
            parse_instant(text, "t")


def test_the_signed_checkpoint_text_and_its_signature() -> None:
    key = Ed25519PrivateKey.generate()
    unsigned = Checkpoint("sluice", 3, b"\xab" * 32, 9, to_micros(AT), key_id="")
    assert unsigned.signed_message() == (
        b"sluice checkpoint v1\norigin sluice\nleaf-encoding sluice-event/1\ntree-size 3\n"
        b"root-hash " + b"ab" * 32 + b"\nlast-position 9\n"
        b"timestamp 2026-03-02T09:00:00.123456Z\n"
    )
    signed = replace(unsigned, signature=key.sign(unsigned.signed_message()))
    assert Checkpoint.from_json(json.loads(json.dumps(signed.as_json()))) == signed
    verify_checkpoint(signed, key.public_key())
    for forged in (
        replace(signed, tree_size=4),
        replace(signed, root_hash=b"\xac" * 32),
        replace(signed, timestamp_us=signed.timestamp_us + 1),
        replace(signed, last_position=10),
        replace(signed, origin="other"),
    ):
        with pytest.raises(VerificationError):
            verify_checkpoint(forged, key.public_key())
    with pytest.raises(VerificationError):
        verify_checkpoint(signed, Ed25519PrivateKey.generate().public_key())
    with pytest.raises(FormatError):
        replace(signed, origin="two words").signed_message()


def test_keys_load_as_pem_raw_or_hex() -> None:
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    raw = public_key_bytes(public, "raw")
    for fmt in ("pem", "raw", "hex"):
        assert public_key_bytes(load_public_key(public_key_bytes(public, fmt)), "raw") == raw
    from cryptography.hazmat.primitives import serialization

    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for data in (seed, seed.hex().encode(), pem):
        assert public_key_bytes(parse_private_key(data, "k").public_key(), "raw") == raw
    with pytest.raises(AuditError):
        parse_private_key(b"nonsense", "k")
    with pytest.raises(FormatError):
        load_public_key(b"nonsense")


def test_the_verifier_imports_no_database_and_nothing_of_the_core() -> None:
    """An auditor runs it alone: importing it loads no driver, no eventsourcing, no Sluice
    core, no web framework (checked in a fresh interpreter)."""
    code = (
        "import sys, adapters.proof_verifier\n"
        "bad = ('psycopg', 'eventsourcing', 'projections', 'ledger', 'fastapi', 'pydantic',"
        " 'sqlite3', 'adapters.settings', 'adapters.audit_log')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in bad or m in bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def _document(events: list[LeafEvent], key: Ed25519PrivateKey, chosen: list[int]) -> dict[str, Any]:
    """A proof file made without any store: the tree of ``events``, ``chosen`` proven."""
    hashes = [leaf_hash(e.encode()) for e in events]
    perfect = perfect_from_leaves(hashes)
    unsigned = Checkpoint("sluice", len(events), root_of(hashes), events[-1].position, 0)
    signed = replace(unsigned, signature=key.sign(unsigned.signed_message()))
    entries = [
        {
            "leaf_index": i,
            "leaf_hash": hashes[i].hex(),
            "event": events[i].as_json(),
            "inclusion_path": [h.hex() for h in inclusion_path(i, len(events), perfect)],
        }
        for i in chosen
    ]
    return proof_document("inclusion", checkpoint=signed.as_json(), entries=entries)


def test_the_verifier_on_a_proof_file_made_without_a_store() -> None:
    key = Ed25519PrivateKey.generate()
    events = [
        event(position=10 + 2 * i, recorded_at_us=to_micros(AT), originator_version=i + 1)
        for i in range(9)
    ]
    doc = _document(events, key, [0, 4, 8])
    assert len(verify_document(json.loads(json.dumps(doc)), key.public_key())) == 4
    as_account = {**doc, "kind": "account", "movements": [{"position": 18}]}
    verify_document(as_account, key.public_key())
    refused: list[tuple[dict[str, Any], type[Exception]]] = [
        ({**as_account, "movements": [{"position": 12}]}, VerificationError),  # unproven
        ({**doc, "entries": doc["entries"][::-1]}, VerificationError),  # out of order
        ({**doc, "entries": []}, FormatError),
        ({**doc, "kind": "other"}, FormatError),
        ({**doc, "object": "list"}, FormatError),
        ({**doc, "leaf_encoding": "sluice-event/2"}, FormatError),
    ]
    for bad, error in refused:
        with pytest.raises(error):
            verify_document(bad, key.public_key())
    # A leaf whose recorded instant is not its state's timestamp was never a true leaf.
    lying = [*events[:8], replace(events[8], recorded_at_us=to_micros(AT) + 1)]
    with pytest.raises(VerificationError, match="recorded_at"):
        verify_document(_document(lying, key, [8]), key.public_key())


# The checkpointer reads each event's recorded instant without decoding the whole state; the
# fast path must read exactly what the transcoder reads, or decline (None) and let it decode.
def _transcoder() -> Any:
    from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, UUIDAsHex

    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DatetimeAsISO(), DecimalAsStr()):
        transcoder.register(transcoding)
    return transcoder


_json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=20),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))])),
    st.uuids(),
)  # fmt: skip
_payloads = st.recursive(
    _json_leaves,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(
        st.sampled_from(["timestamp", "_type_", "_data_", "amount", "ö\n"]), inner, max_size=3
    ),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    timestamp=st.one_of(
        st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3))])), _payloads
    ),
    others=st.dictionaries(st.text(max_size=8), _payloads, max_size=4),
)
def test_the_fast_recorded_instant_is_the_transcoders(timestamp: Any, others: Any) -> None:
    from eventsourcing.persistence import TranscodingNotRegisteredError

    from adapters.audit_log import _timestamp_fast

    transcoder = _transcoder()
    state = transcoder.encode(others | {"timestamp": timestamp})
    fast = _timestamp_fast(state)
    try:
        decoded = transcoder.decode(state)["timestamp"]
    except (TranscodingNotRegisteredError, TypeError, KeyError):  # a "_type_" it cannot read:
        # no event is stored so
        return
    if fast is not None:
        assert fast == decoded and fast.utcoffset() == decoded.utcoffset()
    if isinstance(timestamp, datetime):  # what every stored event has: the fast path answers
        assert fast == timestamp
