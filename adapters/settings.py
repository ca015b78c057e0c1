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
