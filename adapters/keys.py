"""API keys: shown once at creation, stored only as a SHA-256 hash, each with one role.

Roles: ``admin`` (everything), ``finance`` (queries and exports), ``auditor`` (audit routes and
queries), ``account:<acct_id>`` (that account's own data only).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from projections.store import ReadModel

KEY_PREFIX = "sk_sluice_"
ROLES = ("admin", "finance", "auditor")
KEYS_DDL = (
    "CREATE TABLE IF NOT EXISTS rm_api_keys ("
    " id TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, role TEXT NOT NULL,"
    " created BIGINT NOT NULL, revoked BIGINT)",
)


class RoleError(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    key_id: str
    role: str

    @property
    def account(self) -> str | None:
        """The account an ``account:`` key is confined to."""
        return self.role.split(":", 1)[1] if self.role.startswith("account:") else None


def check_role(role: str) -> str:
    if role in ROLES:
        return role
    if role.startswith("account:acct_") and len(role) <= 80:
        return role
    raise RoleError(f"role must be one of {', '.join(ROLES)} or account:<acct_id>")


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(view: ReadModel, role: str) -> tuple[str, str]:
    """Returns (key id, the key itself). The key is not stored and cannot be shown again."""
    check_role(role)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = "key_" + secrets.token_hex(8)
    with view.write(None) as tx:
        tx.execute(
            "INSERT INTO rm_api_keys (id, key_hash, role, created, revoked)"
            " VALUES (%s, %s, %s, %s, NULL)",
            (key_id, _hash(key), role, int(time.time())),
        )
    return key_id, key


def authenticate(view: ReadModel, key: str) -> Principal | None:
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    with view.read() as tx:
        tx.execute(
            "SELECT id, role FROM rm_api_keys WHERE key_hash = %s AND revoked IS NULL",
            (_hash(key),),
        )
        row = tx.one()
    return Principal(row["id"], row["role"]) if row else None


def revoke_key(view: ReadModel, key_id: str) -> bool:
    with view.write(None) as tx:
        tx.execute(
            "UPDATE rm_api_keys SET revoked = %s WHERE id = %s AND revoked IS NULL",
            (int(time.time()), key_id),
        )
        tx.execute("SELECT revoked FROM rm_api_keys WHERE id = %s", (key_id,))
        row = tx.one()
    return bool(row and row["revoked"])
