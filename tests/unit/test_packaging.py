"""What ships: `sluice --version` from the package metadata, the Apache-2.0 license declared
and copied into the image, a Keep a Changelog changelog, and a `py.typed` marker in every
package, listed as package data so the wheel carries it."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ledger", "projections", "adapters", "workers", "stripe_sandbox")
# sha256 of the Apache License 2.0 as published at https://www.apache.org/licenses/LICENSE-2.0.txt
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
CLI_TIMEOUT_S = 60


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_sluice_version_prints_the_installed_distribution_s_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "adapters.cli", "--version"],
        cwd=ROOT, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"sluice {version('sluice-ledger')}"


def test_the_license_is_apache_2_and_pyproject_says_so() -> None:
    text = (ROOT / "LICENSE").read_bytes()
    assert hashlib.sha256(text).hexdigest() == APACHE_2_SHA256
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]


def test_the_image_copies_every_file_the_build_needs() -> None:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = {
        name
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for name in line.split()[1:-1]
    }
    assert {"pyproject.toml", project["readme"], *project["license-files"]} <= copied


def test_every_package_ships_a_py_typed_marker() -> None:
    for package in PACKAGES:
        assert (ROOT / package / "py.typed").is_file(), package
    data = _pyproject()["tool"]["setuptools"]["package-data"]  # type: ignore[index]
    assert "py.typed" in data["*"]


def test_the_changelog_keeps_a_changelog() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog")
    assert "keepachangelog.com" in text
    assert "## [Unreleased]" in text
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", text, re.MULTILINE)
    assert version("sluice-ledger") in released, released  # the installed version is listed
    for heading in re.findall(r"^### (.+)$", text, re.MULTILINE):
        assert heading in {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
