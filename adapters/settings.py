"""Settings from the environment (prefix ``SLUICE_``) or a ``.env`` file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./var/sluice.db"
DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"

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

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="`sqlite:///path` (embedded), `postgresql://user@host:port/db[?schema=s]`, "
        "or `memory://` (tests)",
    )
    platform_account_id: str = Field(
        default="acct_platform", description="the platform's own account in the books"
    )
    aggregate_cache_maxsize: int = Field(
        default=10_000,
        ge=0,
        description="in-memory aggregate cache (fast-forwarded from the store on every read)",
    )
    postgres_pool_size: int = Field(
        default=5, ge=1, le=100, description="PostgreSQL connections kept per pool"
    )
    postgres_max_overflow: int = Field(
        default=10, ge=0, le=100, description="connections a pool may open beyond its size"
    )
    postgres_connect_timeout_s: int = Field(
        default=10, ge=1, le=300, description="how long opening a PostgreSQL connection may take"
    )
    # Fail fast instead of queueing forever behind a stuck writer of the events table.
    postgres_lock_timeout_s: int = Field(
        default=10, ge=1, le=300, description="fail fast behind a stuck writer of the events table"
    )
    sqlite_lock_timeout_s: int = Field(
        default=10, ge=1, le=300, description="how long a SQLite writer waits for the lock"
    )
    # Per connection role (api, worker, projector, admin), overriding the defaults above, e.g.
    # SLUICE_POSTGRES_STATEMENT_TIMEOUT_S='{"api": 2}'. 0 turns a server-side timeout off.
    postgres_statement_timeout_s: dict[str, float] = Field(
        default_factory=dict,
        description='per connection role, JSON (`{"api": 2}`); defaults api 5, worker 30, '
        "projector 60, admin off",
    )
    postgres_idle_in_transaction_timeout_s: dict[str, float] = Field(
        default_factory=dict,
        description="per role, JSON; defaults api 10, worker 60, projector 60, admin 600",
    )
    postgres_pool_wait_s: dict[str, float] = Field(
        default_factory=dict,
        description="per role, JSON: how long to wait for a pooled connection; defaults api 5, "
        "worker 10, projector 10, admin 30",
    )
    http_min_position_wait_s: float = Field(
        default=5.0,
        ge=0,
        le=5,
        description="how long a GET with `Sluice-Min-Position` waits for the read models",
    )
    http_request_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="every request's deadline (then `503 deadline_exceeded`, `Retry-After`)",
    )
    http_ready_timeout_s: float = Field(
        default=2.0, gt=0, le=60, description="how long `/readyz` waits for the store"
    )
    # API keys are checked against an in-memory copy of the keys table, refreshed this often
    # (a revoked key stops working within it) and on a miss (a new key works at once).
    http_key_refresh_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="how often API keys are reloaded (a revoked key stops within it)",
    )
    worker_step_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=1800,
        description="the deadline of a relay pass, scheduler tick or projector batch",
    )
    broker_url: str = Field(
        default=DEFAULT_BROKER_URL,
        pattern=r"^(amqps?|rediss?|stub)://",
        description="the message broker: `amqp://` (RabbitMQ, publisher confirms), `redis://`, "
        "or `stub://` (in-memory: tests, embedded)",
    )
    queue_prefix: str = Field(
        default="",
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]*$",
        description="prefixes every queue name: isolates deployments sharing one broker",
    )
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto",
        description="`json` (one object per line), `console` (readable), or `auto` (console "
        "on a terminal, else json)",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = Field(
        default=None,
        description="the level of every logger (unset: INFO for long-running processes, "
        "WARNING for one-shot commands)",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65_535,
        description="the Prometheus port of a relay, scheduler, projector or workers (unset: "
        "none; `--metrics-port` too)",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="the address metrics ports listen on (a container sets `0.0.0.0`)",
    )
    metrics_http: bool = Field(
        default=True, description="whether the API serves `/metrics` (no key, counts only)"
    )
    health_port: int | None = Field(
        default=None,
        ge=1,
        le=65_535,
        description="the `/healthz` and `/readyz` port of a relay, scheduler, projector or "
        "workers (unset: none; `--health-port` too)",
    )
    health_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="the address health ports listen on (a container sets `0.0.0.0`)",
    )

    reconcile_interval_s: float = Field(
        default=3600.0,
        ge=0,
        le=86_400,
        description="how often the scheduler runs `reconcile` (Stripe's balance transactions "
        "beside the ledger); 0: never",
    )
    sync_accounts_interval_s: float = Field(
        default=3600.0,
        ge=0,
        le=86_400,
        description="how often the scheduler looks for connected accounts created at Stripe "
        "that Sluice was not told of; 0: never",
    )

    # Stripe. The API base points at Stripe, or at the sandbox (`sluice sandbox`).
    stripe_api_key: str = Field(
        default="",
        description="Stripe's secret (`sk_`) or restricted (`rk_`) key: its prefix decides the "
        "mode, test or live",
    )
    stripe_api_base: str | None = Field(
        default=None,
        description="the API base: unset for Stripe, `http://127.0.0.1:12111` for the sandbox",
    )
    stripe_webhook_secret: str = Field(
        default="",
        description="`whsec_…` signing secrets, comma-separated (the platform and Connect "
        "endpoints, or a rotation)",
    )
    stripe_webhook_tolerance_s: int = Field(
        default=300,
        ge=1,
        le=3600,
        description="signatures older than this, or dated further ahead, are refused",
    )
    stripe_livemode: bool | None = Field(
        default=None,
        description="asserts the mode: a key that contradicts it refuses to start (unset: the "
        "key decides; no key: test)",
    )
    stripe_platform_account_id: str | None = Field(
        default=None,
        description="Stripe's `acct_` id of the platform (its events map to the platform's "
        "account)",
    )
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/]+",
        description="Sluice's public base URL, where Stripe delivers webhooks "
        "(`/webhooks/stripe`); the default `--url` of `sluice stripe setup` and `check`",
    )
    stripe_timeout_s: float = Field(
        default=30, gt=0, le=120, description="each Stripe request's timeout"
    )
    stripe_max_network_retries: int = Field(
        default=3,
        ge=0,
        le=10,
        description="the SDK's retries of network errors and 409/429/5xx (same idempotency key)",
    )

    # Auditor proofs (adapters/audit_log.py): the Ed25519 key that signs Merkle checkpoints, as a
    # file (PEM PKCS#8, or the 32-byte seed raw or in hex) or inline (PEM or hex); one of the two.
    # Only `sluice audit checkpoint` needs it; proofs and their verification use the public key.
    audit_signing_key_file: str | None = Field(
        default=None,
        description="the Ed25519 key that signs Merkle checkpoints, as a file (`sluice audit "
        "generate-key`)",
    )
    audit_signing_key: str = Field(
        default="", description="the same key inline (PEM or hex), instead of the file"
    )
    audit_checkpoint_interval_s: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        description="how often the projector signs a checkpoint when the log grew (with a key)",
    )
    audit_checkpoint_step_events: int = Field(
        default=20_000,
        ge=1,
        le=1_000_000,
        description="leaves appended per projector step: bounds the work taken from read models",
    )
    audit_log_origin: str = Field(
        default="sluice",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="the log's name in every signed checkpoint (printable ASCII, no spaces)",
    )


def settings_problem(error: ValidationError) -> str:
    """One line naming each refused setting by its variable, without echoing a secret value."""
    parts = []
    for problem in error.errors():
        message = str(problem["msg"]).removeprefix("Value error, ")
        if problem["loc"]:
            message = f"SLUICE_{str(problem['loc'][0]).upper()}: {message}"
        parts.append(message)
    return "; ".join(parts)


def settings_table() -> str:
    """The README's settings table, generated from the model so the two cannot drift
    (tests/unit/test_settings_table.py compares them): one row per setting."""
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "—" if default in (None, "", {}) else f"`{default}`"
        rows.append(f"| `SLUICE_{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)


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


if __name__ == "__main__":  # `python -m adapters.settings`: the README's settings table
    print(settings_table())
