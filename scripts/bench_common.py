"""What the bench suites share: the machine and code facts, throwaway schemas, a Ledger with its
accounts open, percentiles, plain-text tables, and the JSON results file."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psycopg
from psycopg import sql

from adapters.bootstrap import bootstrap
from adapters.settings import Settings
from ledger import commands as c
from ledger.application import Ledger

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
PLATFORM = "acct_platform"
CURRENCY = "usd"
ERROR_SAMPLES_MAX = 5


def machine_facts(conninfo: str) -> dict[str, Any]:
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:

        def show(name: str) -> str:
            row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            return str(row[0]) if row else "?"

        facts = {
            "nproc": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else None,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "eventsourcing": metadata.version("eventsourcing"),
            "psycopg": metadata.version("psycopg"),
            "postgres_version": show("server_version"),
            "synchronous_commit": show("synchronous_commit"),
            "fsync": show("fsync"),
            "wal_sync_method": show("wal_sync_method"),
            "shared_buffers": show("shared_buffers"),
            "postgres_host": urlparse(conninfo).hostname,
            "loadavg_at_start": load_average(),
            **code_version(),
        }
    return facts


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: other work on the machine skews every figure."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def load_1m() -> float | None:
    """The 1 minute load average now, recorded beside each projections measurement."""
    load = load_average()
    return load[0] if load else None


def code_version() -> dict[str, Any]:
    """The commit measured, and whether the code under test differed from it."""

    def git(*cmd: str) -> str:
        try:
            done = subprocess.run(
                ["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "ledger", "adapters", "pyproject.toml")
    return {"commit": git("rev-parse", "--short", "HEAD") or None, "code_dirty": bool(dirty)}


class Schemas:
    """Creates uniquely named schemas and drops every one of them at the end."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        self.prefix = f"sluice_bench_{stamp}_{os.getpid()}"
        self.created: list[str] = []

    def name(self, label: str) -> str:
        name = f"{self.prefix}_{label}"
        self.created.append(name)
        return name

    def drop_all(self) -> None:
        if not self.created:
            return
        with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10) as conn:
            for name in self.created:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
                )
        self.created.clear()


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def open_ledger(
    conninfo: str,
    schema: str,
    sellers: Sequence[str],
    clock: Callable[[], datetime] | None = None,
) -> Ledger:
    """A Ledger in ``schema`` with the platform and ``sellers`` open, at ``clock``'s time."""
    now_of = clock or (lambda: datetime.now(UTC))
    app = bootstrap(
        Settings(database_url=f"{conninfo}?schema={schema}"), clock=clock, create_tables=True
    )
    setup: list[c.Command] = [
        c.OpenAccount(
            idempotency_key="setup-platform",
            effective_at=now_of(),
            account_id=PLATFORM,
            kind="platform",
        )
    ]
    for seller in sellers:
        now = now_of()
        setup.append(
            c.OpenAccount(idempotency_key=f"open-{seller}", effective_at=now, account_id=seller)
        )
        setup.append(
            c.UpdateAccount(
                idempotency_key=f"enable-{seller}",
                effective_at=now,
                account_id=seller,
                charges_enabled=True,
                payouts_enabled=True,
            )
        )
    for start in range(0, len(setup), 500):
        for result in app.execute_batch(setup[start : start + 500]):
            if not result.ok:
                raise SystemExit(f"set-up failed: {result.command}: {result.error}")
    return app


# Report -----------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def render_rows(header: Sequence[str], lines: list[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = []
    for n, line in enumerate([header, *lines]):
        cells = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(line)
        ]
        out.append("  ".join(cells))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def jsonable(value: Any) -> Any:
    """Plain JSON: NaN becomes null, tuple keys become strings, the rest str()."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def write_results(out_dir: Path, started: datetime, document: dict[str, Any]) -> Path:
    """Writes the run's results as plain JSON, named by its start instant; returns the path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(jsonable(document), indent=2, allow_nan=False) + "\n")
    return path
