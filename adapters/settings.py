"""Settings from the environment (prefix ``SLUICE_``) or a ``.env`` file."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./var/sluice.db"

# Roles of database connections, each with its own timeouts (seconds; 0 = off):
# api       the HTTP API's requests (short: a request has a deadline of its own);
# worker    dramatiq actors, the relay, the scheduler (a step may wait on Stripe);
# projector read-model batches;
# admin     the CLI and operators (db init, audit verify, rebuild: long, run by a person).
CONNECTION_ROLES = ("api", "worker", "projector", "admin")
STATEMENT_TIMEOUT_S = {"api": 5.0, "worker": 30.0, "projector": 60.0, "admin": 0.0}
IDLE_IN_TRANSACTION_TIMEOUT_S = {"api": 10.0, "worker": 60.0, "projector": 60.0, "admin": 600.0}
POOL_WAIT_S = {"api": 5.0, "worker": 10.0, "projector": 10.0, "admin": 30.0}


def key_livemode(api_key: str) -> bool | None:
    """Live (True) or test (False) mode, as a Stripe secret or restricted key says; None when
    the key says nothing (empty, or not a Stripe key)."""
    for prefix, live in (("sk_live_", True), ("rk_live_", True), ("sk_test_", False)):
        if api_key.startswith(prefix):
            return live
    return False if api_key.startswith("rk_test_") else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLUICE_", env_file=".env", extra="ignore")

    @model_validator(mode="after")
    def _one_mode(self) -> Settings:
        from_key = key_livemode(self.stripe_api_key)
        if from_key is not None and self.stripe_livemode not in (None, from_key):
            mode = "live" if from_key else "test"
            raise ValueError(
                f"SLUICE_STRIPE_LIVEMODE={str(self.stripe_livemode).lower()} contradicts the "
                f"{mode}-mode key in SLUICE_STRIPE_API_KEY: remove the setting or use a "
                f"{'test' if from_key else 'live'}-mode key"
            )
        return self

    @property
    def livemode(self) -> bool:
        """Which of Stripe's modes this Sluice books: the key's, else the setting, else test."""
        from_key = key_livemode(self.stripe_api_key)
        return from_key if from_key is not None else bool(self.stripe_livemode)

    # sqlite:///path (embedded default), postgresql://user@host:port/db[?schema=s], memory://
    database_url: str = DEFAULT_DATABASE_URL
    platform_account_id: str = "acct_platform"
    aggregate_cache_maxsize: int = Field(default=10_000, ge=0)
    postgres_pool_size: int = Field(default=5, ge=1, le=100)
    postgres_max_overflow: int = Field(default=10, ge=0, le=100)
    postgres_connect_timeout_s: int = Field(default=10, ge=1, le=300)
    # Fail fast instead of queueing forever behind a stuck writer of the events table.
    postgres_lock_timeout_s: int = Field(default=10, ge=1, le=300)
    sqlite_lock_timeout_s: int = Field(default=10, ge=1, le=300)
    # Per connection role (api, worker, projector, admin), overriding the defaults above, e.g.
    # SLUICE_POSTGRES_STATEMENT_TIMEOUT_S='{"api": 2}'. 0 turns a server-side timeout off.
    postgres_statement_timeout_s: dict[str, float] = Field(default_factory=dict)
    postgres_idle_in_transaction_timeout_s: dict[str, float] = Field(default_factory=dict)
    postgres_pool_wait_s: dict[str, float] = Field(default_factory=dict)
    # HTTP API: how long a GET with Sluice-Min-Position waits for the read models (at most 5 s).
    http_min_position_wait_s: float = Field(default=5.0, ge=0, le=5)
    # Every request's deadline: past it the answer is a 503 deadline_exceeded (Retry-After).
    http_request_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # Readiness (GET /readyz): how long the store may take to answer before it counts as stalled.
    http_ready_timeout_s: float = Field(default=2.0, gt=0, le=60)
    # API keys are checked against an in-memory copy of the keys table, refreshed this often
    # (a revoked key stops working within it) and on a miss (a new key works at once).
    http_key_refresh_s: float = Field(default=1.0, gt=0, le=60)
    # Worker steps without a time limit of their own (relay pass, scheduler tick, projector
    # batch) end here.
    worker_step_timeout_s: float = Field(default=60.0, gt=0, le=1800)

    # Stripe. The API base points at Stripe, or at the sandbox (`sluice sandbox`).
    stripe_api_key: str = ""
    stripe_api_base: str | None = None
    stripe_webhook_secret: str = ""  # whsec_…; comma-separated for several endpoints/rotation
    # Signatures older than this, or dated further than this in the future, are refused.
    stripe_webhook_tolerance_s: int = Field(default=300, ge=1, le=3600)
    # The mode comes from the key (sk_live_/rk_live_ or sk_test_/rk_test_). Set this only to
    # assert it: a setting the key contradicts refuses to start. Without a key: test mode.
    stripe_livemode: bool | None = None
    stripe_platform_account_id: str | None = None  # Stripe's acct_ id of the platform
    stripe_timeout_s: float = Field(default=30, gt=0, le=120)
    stripe_max_network_retries: int = Field(default=3, ge=0, le=10)

    # Auditor proofs (adapters/audit_log.py): the Ed25519 key that signs Merkle checkpoints, as a
    # file (PEM PKCS#8, or the 32-byte seed raw or in hex) or inline (PEM or hex); one of the two.
    # Only `sluice audit checkpoint` needs it; proofs and their verification use the public key.
    audit_signing_key_file: str | None = None
    audit_signing_key: str = ""
    # The log's name in every signed checkpoint (one line of printable ASCII, no spaces), so a
    # checkpoint of one Sluice store is never taken for another's.
    audit_log_origin: str = Field(
        default="sluice", min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$"
    )


@dataclass(frozen=True)
class RoleTimeouts:
    statement_s: float
    idle_in_transaction_s: float
    pool_wait_s: float

    @property
    def checkout_cap_s(self) -> float | None:
        """The client-side bound on one use of a pooled connection when no deadline is set:
        well past the server's statement timeout, so it only fires on a frozen server."""
        return None if self.statement_s <= 0 else 2 * self.statement_s + 5


def role_timeouts(settings: Settings, role: str) -> RoleTimeouts:
    if role not in CONNECTION_ROLES:
        raise ValueError(f"unknown connection role {role!r}: one of {', '.join(CONNECTION_ROLES)}")

    def pick(defaults: dict[str, float], overrides: dict[str, float]) -> float:
        return max(0.0, float(overrides.get(role, defaults[role])))

    return RoleTimeouts(
        statement_s=pick(STATEMENT_TIMEOUT_S, settings.postgres_statement_timeout_s),
        idle_in_transaction_s=pick(
            IDLE_IN_TRANSACTION_TIMEOUT_S, settings.postgres_idle_in_transaction_timeout_s
        ),
        pool_wait_s=max(0.1, pick(POOL_WAIT_S, settings.postgres_pool_wait_s)),
    )
