"""django-hordak beside Sluice, same run, same PostgreSQL: hordak is installed from PyPI into the
bench's own environment (``var/bench/hordak-venv``, created on first use; never a dependency of
the project) and measured by ``bench_hordak_child.py`` in a schema of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bench_common import ROOT, Schemas

VENV = ROOT / "var" / "bench" / "hordak-venv"
PACKAGES = ("django-hordak", "psycopg2-binary")
INSTALL_TIMEOUT_S = 600
RUN_TIMEOUT_S_EXTRA = 300


def ensure_venv() -> tuple[Path | None, str | None]:
    """The environment's python, or None and why not (e.g. PyPI unreachable)."""
    python = VENV / "bin" / "python"
    if python.exists():
        return python, None
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(VENV)], check=True, timeout=120, capture_output=True
        )
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *PACKAGES],
            check=True,
            timeout=INSTALL_TIMEOUT_S,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", "") or ""
        return None, f"installing {' '.join(PACKAGES)} from PyPI failed: {error} {detail[-300:]}"
    return python, None  # fmt: skip


def measure_hordak(
    conninfo: str, schemas: Schemas, threads: list[int], seconds: float
) -> dict[str, Any]:
    python, why = ensure_venv()
    if python is None:
        return {"error": why}
    schema = schemas.name("hordak")
    import psycopg
    from psycopg import sql

    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    url = urlparse(conninfo)
    args = [
        str(python), str(ROOT / "scripts" / "bench_hordak_child.py"),
        "--host", url.hostname or "127.0.0.1", "--port", str(url.port or 5432),
        "--dbname", url.path.strip("/"), "--user", url.username or "postgres",
        "--schema", schema, "--threads", ",".join(map(str, threads)), "--seconds", str(seconds),
    ]  # fmt: skip
    timeout = len(threads) * seconds + RUN_TIMEOUT_S_EXTRA
    env = {**os.environ, "PGPASSWORD": url.password or ""}
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, check=True, env=env
        )
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as error:
        detail = getattr(error, "stderr", "") or ""
        return {"error": f"the hordak run failed: {error} {detail[-500:]}"}
