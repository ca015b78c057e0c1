"""Settings from the environment (prefix ``SLUICE_``) or a ``.env`` file."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./var/sluice.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLUICE_", env_file=".env", extra="ignore")

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
    # HTTP API: how long a GET with Sluice-Min-Position waits for the read models (at most 5 s).
    http_min_position_wait_s: float = Field(default=5.0, ge=0, le=5)

    # Stripe. The API base points at Stripe, or at the sandbox (`sluice sandbox`).
    stripe_api_key: str = ""
    stripe_api_base: str | None = None
    stripe_webhook_secret: str = ""  # whsec_…; comma-separated for several endpoints/rotation
    stripe_webhook_tolerance_s: int = Field(default=300, ge=1, le=3600)
    stripe_livemode: bool = False  # events of the other mode are stored and ignored
    stripe_platform_account_id: str | None = None  # Stripe's acct_ id of the platform
    stripe_timeout_s: float = Field(default=30, gt=0, le=120)
    stripe_max_network_retries: int = Field(default=3, ge=0, le=10)
