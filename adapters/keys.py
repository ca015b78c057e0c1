"""API keys: shown once at creation, stored only as a SHA-256 hash, each with one role.

Roles: ``admin`` (everything), ``finance`` (queries and exports), ``auditor`` (audit routes and
queries), ``account:<acct_id>`` (that account's own data only).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass

from adapters import deadlines
from projections.store import ReadModel, Tx

log = logging.getLogger("sluice.keys")

KEY_PREFIX = "sk_sluice_"
ROLES = ("admin", "finance", "auditor")
LABEL_LENGTH_MAX = 200
GRACE_S_MAX = 30 * 86_400  # a rotated key overlaps its successor at most 30 days
# The table as the migrations leave it (migrations/: 0001, plus label and replaced_by in 0002),
# for scratch stores built without migrations (``audit verify``).
KEYS_DDL = (
    "CREATE TABLE IF NOT EXISTS rm_api_keys ("
    " id TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, role TEXT NOT NULL,"
    " created BIGINT NOT NULL, revoked BIGINT, label TEXT, replaced_by TEXT)",
)


class RoleError(ValueError):
    pass


class KeyRefused(LookupError):
    """A key id that names no key, or a key that can no longer be changed (one line)."""


@dataclass(frozen=True)
class Principal:
    key_id: str
    role: str

    @property
    def account(self) -> str | None:
        """The account an ``account:`` key is confined to."""
        return self.role.split(":", 1)[1] if self.role.startswith("account:") else None


@dataclass(frozen=True)
class KeyInfo:
    """What ``sluice keys list`` shows: never the key, nor its hash."""

    id: str
    role: str
    label: str | None
    created: int  # unix seconds
    revoked: int | None  # when it stops (or stopped) working; in the future during a grace
    replaced_by: str | None

    def active(self, now: float) -> bool:
        return self.revoked is None or now < self.revoked


def check_role(role: str) -> str:
    if role in ROLES:
        return role
    if role.startswith("account:acct_") and len(role) <= 80:
        return role
    raise RoleError(f"role must be one of {', '.join(ROLES)} or account:<acct_id>")


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _check_label(label: str | None) -> str | None:
    if label is not None and (len(label) > LABEL_LENGTH_MAX or not label.isprintable()):
        raise RoleError(f"a label is printable text of at most {LABEL_LENGTH_MAX} characters")
    return label


def _insert(tx: Tx, role: str, label: str | None, key_id: str | None = None) -> tuple[str, str]:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = key_id or "key_" + secrets.token_hex(8)
    tx.execute(
        "INSERT INTO rm_api_keys (id, key_hash, role, created, revoked, label)"
        " VALUES (%s, %s, %s, %s, NULL, %s)",
        (key_id, _hash(key), role, int(time.time()), label),
    )
    return key_id, key


def create_key(
    view: ReadModel, role: str, label: str | None = None, key_id: str | None = None
) -> tuple[str, str]:
    """Returns (key id, the key itself). The key is not stored and cannot be shown again.
    ``key_id`` (the API's, derived from an Idempotency-Key) replaces a random id."""
    check_role(role)
    _check_label(label)
    with view.write(None) as tx:
        return _insert(tx, role, label, key_id)


def well_formed(key: str) -> bool:
    return key.startswith(KEY_PREFIX) and len(key) <= 200 and key.isascii()


def authenticate(view: ReadModel, key: str) -> Principal | None:
    if not well_formed(key):
        return None
    with view.read() as tx:
        tx.execute(
            "SELECT id, role FROM rm_api_keys WHERE key_hash = %s"
            " AND (revoked IS NULL OR revoked > %s)",
            (_hash(key), int(time.time())),
        )
        row = tx.one()
    return Principal(row["id"], row["role"]) if row else None


def list_keys(view: ReadModel) -> list[KeyInfo]:
    """Every key, oldest first, revoked ones included (the table is small: one row per key)."""
    with view.read() as tx:
        tx.execute(
            "SELECT id, role, label, created, revoked, replaced_by FROM rm_api_keys"
            " ORDER BY created, id"
        )
        rows = tx.all()
    return [_info(row) for row in rows]


def _info(row: dict[str, object]) -> KeyInfo:
    revoked = row["revoked"]
    return KeyInfo(
        id=str(row["id"]),
        role=str(row["role"]),
        label=None if row["label"] is None else str(row["label"]),
        created=int(str(row["created"])),
        revoked=None if revoked is None else int(str(revoked)),
        replaced_by=None if row["replaced_by"] is None else str(row["replaced_by"]),
    )


def _get(tx: Tx, key_id: str) -> KeyInfo:
    tx.execute(
        "SELECT id, role, label, created, revoked, replaced_by FROM rm_api_keys WHERE id = %s",
        (key_id,),
    )
    row = tx.one()
    if row is None:
        raise KeyRefused(f"no API key {key_id!r} (see `sluice keys list`)")
    return _info(row)


def revoke_key(view: ReadModel, key_id: str) -> KeyInfo:
    """Stops the key now (a key in a rotation's grace stops now too); revoking a revoked key
    changes nothing. Raises ``KeyRefused`` for an unknown id. Servers stop accepting it within
    their key refresh (``SLUICE_HTTP_KEY_REFRESH_S``)."""
    now = int(time.time())
    with view.write(None) as tx:
        found = _get(tx, key_id)
        if found.active(now):
            tx.execute("UPDATE rm_api_keys SET revoked = %s WHERE id = %s", (now, key_id))
            found = _get(tx, key_id)
    return found


def rotate_key(
    view: ReadModel, key_id: str, grace_s: int = 0, new_id: str | None = None
) -> tuple[KeyInfo, str]:
    """A new key with the old one's role and label (returned with the key itself, shown once);
    the old key works ``grace_s`` longer, then stops. One transaction: both or neither."""
    if not 0 <= grace_s <= GRACE_S_MAX:
        raise KeyRefused(f"the grace period is 0 to {GRACE_S_MAX // 86_400} days")
    now = int(time.time())
    with view.write(None) as tx:
        old = _get(tx, key_id)
        if not old.active(now):
            raise KeyRefused(f"{key_id} is revoked: create a new key instead")
        if old.replaced_by is not None:
            raise KeyRefused(f"{key_id} was already rotated to {old.replaced_by}")
        new_id, key = _insert(tx, old.role, old.label, new_id)
        tx.execute(
            "UPDATE rm_api_keys SET revoked = %s, replaced_by = %s WHERE id = %s",
            (now + grace_s, new_id, key_id),
        )
        return _get(tx, new_id), key


class KeyCache:
    """The keys table in memory, so that checking a key never waits on the store: a bad key is
    refused even while the database is unreachable or frozen.

    A background thread reloads the table every ``refresh_s`` (a revoked key stops working
    within that) and at once when a key is not found (a key created a moment ago works at
    once): ``lookup`` waits for a reload that started after it asked, at most ``miss_wait_s``,
    then answers from what it has. Reloads run one at a time, at most one per
    ``MISS_RELOAD_MIN_S`` for misses, so a flood of bad keys costs one small query per interval.
    If reloads fail (the store is down), the last copy stays in use.
    """

    MISS_RELOAD_MIN_S = 0.05  # reloads triggered by unknown keys: at most 20 per second
    LOAD_TIMEOUT_S = 2.0  # deadline of one reload (the keys table is small)

    def __init__(self, view: ReadModel, refresh_s: float = 1.0, miss_wait_s: float = 0.5) -> None:
        self.view = view
        self.refresh_s = refresh_s
        self.miss_wait_s = miss_wait_s
        self._keys: dict[str, tuple[Principal, int | None]] = {}  # hash → (who, stops at)
        self._cond = threading.Condition()
        self._wanted = False
        self._started_seq = 0  # reloads started
        self._done_seq = 0  # reloads finished (successfully or not)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.loaded_at: float | None = None  # monotonic time of the last successful load
        self.failures = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sluice-keys", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(self.LOAD_TIMEOUT_S + 1)

    def load(self) -> bool:
        """Reloads the table (bounded by ``LOAD_TIMEOUT_S``); False if the store did not answer."""
        try:
            with deadlines.within(self.LOAD_TIMEOUT_S), self.view.read() as tx:
                tx.execute(
                    "SELECT key_hash, id, role, revoked FROM rm_api_keys"
                    " WHERE revoked IS NULL OR revoked > %s",
                    (int(time.time()),),
                )
                rows = tx.all()
        except Exception as error:  # any store failure: keep the last copy, try again later
            self.failures += 1
            log.warning("API keys not reloaded: %s", error)
            return False
        self._keys = {
            r["key_hash"]: (
                Principal(r["id"], r["role"]),
                None if r["revoked"] is None else int(r["revoked"]),
            )
            for r in rows
        }
        self.loaded_at = time.monotonic()
        return True

    def _run(self) -> None:
        last_miss_reload = 0.0
        # Runs for the app's life (until stop()); each turn waits at most refresh_s and each
        # reload is bounded by LOAD_TIMEOUT_S.
        while not self._stop.is_set():
            with self._cond:
                if not self._wanted:
                    self._cond.wait(self.refresh_s)
                if self._stop.is_set():
                    return
                triggered = self._wanted
                self._wanted = False
                self._started_seq += 1
                seq = self._started_seq
            if triggered:
                pause = self.MISS_RELOAD_MIN_S - (time.monotonic() - last_miss_reload)
                if pause > 0:
                    self._stop.wait(pause)
                last_miss_reload = time.monotonic()
            self.load()
            with self._cond:
                self._done_seq = seq
                self._cond.notify_all()

    def cached(self, key: str) -> Principal | None:
        """The key's principal if it works now: a key whose grace ended between two reloads
        stops at its instant, not at the next reload."""
        found = self._keys.get(_hash(key)) if well_formed(key) else None
        if found is None:
            return None
        principal, stops = found
        return principal if stops is None or time.time() < stops else None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def request_reload(self) -> int:
        """Asks for a reload; returns the number a reload starting from now will have."""
        with self._cond:
            self._wanted = True
            self._cond.notify_all()
            return self._started_seq + 1  # one in progress started before this request

    def reloaded(self, seq: int) -> bool:
        return self._done_seq >= seq

    async def lookup(self, key: str) -> Principal | None:
        """The key's principal, or None, without blocking the event loop: a miss waits (at most
        ``miss_wait_s``, polling) for a reload that started after it asked."""
        import asyncio

        if not well_formed(key):
            return None
        found = self.cached(key)
        if found is not None or not self.running:
            return found
        seq = self.request_reload()
        end = time.monotonic() + self.miss_wait_s
        while not self.reloaded(seq) and time.monotonic() < end and not self._stop.is_set():
            await asyncio.sleep(0.01)  # bounded by miss_wait_s above
        return self.cached(key)
