"""docker-compose.yml stays valid and declares the services the tests rely on, and the whole
stack (tests/integration/test_compose_stack.py runs it as local processes).

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


SLUICE_SERVICES = {"migrate", "api", "projector", "relay", "scheduler", "worker"}


def test_compose_declares_the_whole_stack_and_the_sandbox_profile() -> None:
    plain = _compose("config", "--services")
    with_sandbox = _compose("--profile", "sandbox", "config", "--services")
    assert plain.returncode == 0 and with_sandbox.returncode == 0, plain.stderr
    assert set(plain.stdout.split()) >= SLUICE_SERVICES, plain.stdout
    assert {"sandbox", "sandbox-setup"} <= set(with_sandbox.stdout.split())


def test_every_service_has_a_health_check_and_waits_on_health() -> None:
    import yaml

    result = _compose("--profile", "sandbox", "config")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no health check"
        for dependency, how in (service.get("depends_on") or {}).items():
            assert how["condition"] in (
                "service_healthy",
                "service_completed_successfully",
            ), (name, dependency, how)
    assert services["api"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["migrate"]["command"] == ["sluice", "db", "migrate"]
