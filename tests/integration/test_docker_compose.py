"""docker-compose.yml stays valid and declares the services the tests rely on.

Uses `docker-compose config`, which validates offline; no Docker engine needed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import require_service

REPO_ROOT = Path(__file__).resolve().parents[2]


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    if exe is None:
        require_service("docker-compose", "not on PATH (apt-get install -y docker-compose)")
    return subprocess.run(
        [exe, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_docker_compose_file_is_valid() -> None:
    result = _compose("config", "-q")
    assert result.returncode == 0, f"docker-compose config -q failed:\n{result.stderr}"


def test_compose_declares_postgres_and_rabbitmq() -> None:
    result = _compose("config", "--services")
    assert result.returncode == 0, result.stderr
    services = set(result.stdout.split())
    assert {"postgres", "rabbitmq", "redis"} <= services, services
