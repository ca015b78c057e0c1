"""One settings model: every setting is a field of ``Settings`` with a description, the README's
table is the one generated from the model, and no process reads a ``SLUICE_`` variable around it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.settings import Settings, settings_table
from workers.broker import broker_url, queue_prefix

ROOT = Path(__file__).resolve().parents[2]
# Test hooks, read where they act (a crash on purpose): not settings of the product.
NOT_SETTINGS = {"SLUICE_TEST_CRASH_AFTER_STRIPE"}
SETTINGS = {f"SLUICE_{name.upper()}" for name in Settings.model_fields}


def test_the_readme_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- settings:begin[^>]*-->\n(.*?)<!-- settings:end -->", readme, re.S)
    assert found, "README.md lost its settings markers"
    assert found.group(1).strip() == settings_table(), (
        "README.md's settings table differs from the model: paste `python -m adapters.settings`"
    )


def test_every_setting_says_what_it_means() -> None:
    missing = [name for name, f in Settings.model_fields.items() if not f.description]
    assert missing == []


# A read of the environment: os.environ.get(X), os.getenv(X), or os.environ[X] not assigned to.
READS = re.compile(
    r"(?:environ\.get|getenv)\(\s*([\"']?\w+[\"']?)|environ\[\s*([\"']?\w+[\"']?)\s*\](?!\s*=[^=])"
)


def _read_names(text: str) -> set[str]:
    """The ``SLUICE_`` variables a module reads from the environment, through a literal or a
    module constant holding one."""
    constants = dict(re.findall(r"^(\w+)\s*=\s*[\"'](SLUICE_\w+)[\"']", text, re.M))
    names = set()
    for found in READS.finditer(text):
        token = (found.group(1) or found.group(2)).strip("\"'")
        names.add(constants.get(token, token))
    return {n for n in names if n.startswith("SLUICE_")}


def test_no_process_reads_a_sluice_variable_around_the_model() -> None:
    """Every ``SLUICE_…`` name in the product's code is a field of the model (named in a message,
    or exported to a child process) or a test hook; only the model reads one."""
    stray = set()
    for folder in ("adapters", "ledger", "projections", "workers", "stripe_sandbox"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            where = path.relative_to(ROOT)
            names = set(re.findall(r"[\"'](SLUICE_[A-Z0-9_]+)", text))
            stray |= {f"{where}: {n} is no setting" for n in names - SETTINGS - NOT_SETTINGS}
            read = _read_names(text) - NOT_SETTINGS
            if read and where != Path("adapters/settings.py"):
                stray.add(f"{where}: reads {sorted(read)} around the model")
    assert stray == set()


def test_broker_settings_come_from_dotenv_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLUICE_BROKER_URL", raising=False)
    monkeypatch.delenv("SLUICE_QUEUE_PREFIX", raising=False)
    (tmp_path / ".env").write_text(
        "SLUICE_BROKER_URL=redis://127.0.0.1:6379/3\nSLUICE_QUEUE_PREFIX=blue_\n"
    )
    assert broker_url() == "redis://127.0.0.1:6379/3"
    assert queue_prefix() == "blue_"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SLUICE_BROKER_URL", "kafka://x"),
        ("SLUICE_QUEUE_PREFIX", "a b"),
        ("SLUICE_LOG_FORMAT", "xml"),
    ],
)
def test_a_bad_setting_is_refused_by_name(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert name.removeprefix("SLUICE_").lower() in str(refused.value)


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"SLUICE_LOG_FORMAT": "xml"}, "SLUICE_LOG_FORMAT: Input should be"),
        (
            {"SLUICE_STRIPE_API_KEY": "sk_live_" + "0" * 24, "SLUICE_STRIPE_LIVEMODE": "false"},
            "SLUICE_STRIPE_LIVEMODE=false contradicts the live-mode key",
        ),
    ],
)
def test_the_cli_refuses_a_bad_setting_in_one_line(
    env: dict[str, str], said: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "adapters.cli", "inbox", "status"],
        env={**os.environ, **env, "SLUICE_DATABASE_URL": f"sqlite:///{tmp_path}/s.db"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 2, output
    assert output.startswith("error settings: ") and said in output, output
    assert len(output.splitlines()) == 1 and "Traceback" not in output
