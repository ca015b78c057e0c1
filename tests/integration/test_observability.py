"""Logs and metrics of a real `sluice serve` process (SQLite store, real HTTP): every stderr
line is one JSON object when stderr is not a terminal, a request's lines carry its request id,
`--log-format console` reads as text, and /metrics counts the requests it served."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
START_WAIT_S = 30.0  # imports and the store, on a shared machine
STOP_WAIT_S = 10.0


def sluice(*args: str, env: dict[str, str], stderr: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "adapters.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr.open("wb"),
        start_new_session=True,
    )


def get(url: str, **headers: str) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers), response.read().decode()


@dataclass
class Served:
    env: dict[str, str]
    stderr: Path
    port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, *options: str) -> str:
        """Starts `sluice [options] serve`; returns its base URL once it answers."""
        self.procs.append(sluice(*options, "serve", "--port", str(self.port), env=self.env,
                                 stderr=self.stderr))  # fmt: skip
        base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + START_WAIT_S
        while time.monotonic() < deadline:
            assert self.procs[-1].poll() is None, self.stderr.read_text()
            try:
                get(f"{base}/healthz")
                return base
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"serve did not start in {START_WAIT_S}s: {self.stderr.read_text()}")

    def lines(self) -> list[str]:
        time.sleep(0.5)  # the access line is written after the response's last byte
        return [line for line in self.stderr.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_WAIT_S)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=STOP_WAIT_S)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env["SLUICE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'obs.db'}"
    init = subprocess.run(
        [sys.executable, "-m", "adapters.cli", "db", "migrate"],
        cwd=ROOT, env=env, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    s = Served(env, tmp_path / "serve.stderr")
    try:
        yield s
    finally:
        s.stop()


def test_serve_logs_json_lines_with_the_request_id_and_counts_requests(served: Served) -> None:
    base = served.start()
    status, headers, _ = get(f"{base}/healthz", **{"Request-Id": "req_obs_test_1"})
    assert status == 200
    assert headers.get("request-id") == "req_obs_test_1"
    _, generated, _ = get(f"{base}/healthz")
    assert generated["request-id"].startswith("req_")
    _, _, metrics = get(f"{base}/metrics")
    assert 'route="/healthz"' in metrics and "sluice_http_requests_total{" in metrics
    records = [json.loads(line) for line in served.lines()]  # every line is one JSON object
    for record in records:
        assert {"timestamp", "level", "logger", "event", "process"} <= set(record), record
    access = [r for r in records if r.get("request_id") == "req_obs_test_1"]
    assert access and access[0]["route"] == "/healthz" and access[0]["status"] == 200
    assert any(r["logger"].startswith("uvicorn") for r in records)  # uvicorn's lines join in


def test_console_format_is_text_for_a_person(served: Served) -> None:
    base = served.start("--log-format", "console")
    get(f"{base}/healthz")
    lines = served.lines()
    assert lines
    for line in lines:
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
