"""`sluice audit` proof commands (adapters/audit_proofs_cli.py) and the standalone verifier, on
SQLite: every command's happy path, and every failure as one line with a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters.audit_proofs_cli import EXIT_ERROR, EXIT_FAILED, app
from tests.integration.merkle_support import Books, Tamperer, books_on

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def books(tmp_path: Path) -> Iterator[Books]:
    with books_on("sqlite", tmp_path) as books:
        for op, amount in (("charge", 5_000), ("transfer", 1_000), ("topup", 300)):
            books.apply(op, amount)
        yield books


class Cli:
    def __init__(self, env: dict[str, str]) -> None:
        self.runner = CliRunner()
        self.env = env

    def __call__(self, *args: str, code: int = 0) -> str:
        result = self.runner.invoke(app, list(args), env=self.env, catch_exceptions=False)
        assert result.exit_code == code, (args, result.exit_code, result.output)
        if code:
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.output)
            assert "Traceback" not in result.output
        return result.output


@pytest.fixture
def cli(books: Books, tmp_path: Path) -> Cli:
    key = tmp_path / "audit.pem"
    CliRunner().invoke(app, ["generate-key", str(key)], catch_exceptions=False)
    return Cli({"SLUICE_DATABASE_URL": books.url, "SLUICE_AUDIT_SIGNING_KEY_FILE": str(key)})


def verifier(proof: Path, public_key: Path) -> subprocess.CompletedProcess[str]:
    """The standalone verifier, in its own interpreter, as an auditor runs it."""
    command = [sys.executable, "-m", "adapters.proof_verifier", str(proof)]
    return subprocess.run(
        [*command, "--public-key", str(public_key)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def _json(text: str) -> Any:
    return json.loads(text)


def test_checkpoint_prove_and_verify_round_trip(cli: Cli, books: Books, tmp_path: Path) -> None:
    assert "no checkpoints yet" in cli("checkpoint", "--list")
    first = _json(cli("checkpoint"))
    assert first["tree_size"] == books.head() and first["last_position"] == books.head()
    assert _json(cli("checkpoint")) == first  # nothing new: the same checkpoint
    books.apply("charge", 7_000)
    second = _json(cli("checkpoint"))
    listed = cli("checkpoint", "--list").splitlines()
    assert [int(line.split()[0]) for line in listed] == [second["tree_size"], first["tree_size"]]
    assert [c["tree_size"] for c in _json(cli("checkpoint", "--list", "--json"))] == [
        second["tree_size"],
        first["tree_size"],
    ]
    public = tmp_path / "audit.pub"
    cli("export-public-key", "-o", str(public))
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert len(bytes.fromhex(cli("export-public-key", "--format", "hex").strip())) == 32
    proofs = {
        "one": ("prove", "--position", "3"),
        "old": ("prove", "--position", "3", "--checkpoint", str(first["tree_size"])),
        "account": ("prove", "--account", "acct_platform", "--as-of", "2026-03-09"),
        "consistency": ("consistency", str(first["tree_size"]), str(second["tree_size"])),
    }
    for name, args in proofs.items():
        path = tmp_path / f"{name}.json"
        cli(*args, "-o", str(path))
        out = cli("verify-proof", str(path), "--public-key", str(public))
        assert out.strip().endswith("proof verifies"), (name, out)
        standalone = verifier(path, public)
        assert standalone.returncode == 0, standalone.stderr
    assert "log verifies" in cli("verify-log")


def test_an_altered_proof_file_fails_with_one_line(cli: Cli, tmp_path: Path) -> None:
    cli("checkpoint")
    public, path = tmp_path / "audit.pub", tmp_path / "p.json"
    cli("export-public-key", "--format", "hex", "-o", str(public))
    document = _json(cli("prove", "--position", "4"))
    entry = document["entries"][0]
    alterations: dict[str, Callable[[], None]] = {
        "state": lambda: entry["event"].__setitem__("state", entry["event"]["state"] + " "),
        "path": lambda: entry["inclusion_path"].__setitem__(0, "00" * 32),
        "root": lambda: document["checkpoint"].__setitem__("root_hash", "11" * 32),
        "size": lambda: document["checkpoint"].__setitem__("tree_size", 99),
        "index": lambda: entry.__setitem__("leaf_index", entry["leaf_index"] + 1),
    }
    original = json.dumps(document)
    for name, alter in alterations.items():
        document = _json(original)
        entry = document["entries"][0]
        alter()
        path.write_text(json.dumps(document))
        out = cli("verify-proof", str(path), "--public-key", str(public), code=EXIT_FAILED)
        assert "does not verify" in out, (name, out)
        standalone = verifier(path, public)
        assert standalone.returncode == 1 and standalone.stderr.startswith("FAILED: "), name
        assert len(standalone.stderr.strip().splitlines()) == 1


def test_verify_log_names_the_first_bad_position(cli: Cli, books: Books) -> None:
    cli("checkpoint")
    Tamperer(books).run("edit", 5)
    out = cli("verify-log", code=EXIT_FAILED)
    assert "first bad position 5" in out and "altered" in out


def test_every_error_is_one_line_and_a_non_zero_exit(
    cli: Cli, books: Books, tmp_path: Path
) -> None:
    cli("prove", "--position", "3", code=EXIT_ERROR)  # no checkpoint yet
    cli("checkpoint")
    for args in (
        ("prove",),
        ("prove", "--position", "3", "--account", "acct_a"),
        ("prove", "--position", "x"),
        ("prove", "--position", "9999"),
        ("prove", "--position", "3", "--checkpoint", "1"),
        ("prove", "--account", "acct_a", "--as-of", "yesterday"),
        ("prove", "--account", "acct_nobody"),
        ("consistency", "5", "2"),
        ("consistency", "1", "2"),
        ("verify-proof", str(tmp_path / "missing.json"), "--public-key", str(tmp_path / "k")),
        ("verify-proof", str(tmp_path / "missing.json")),
        ("export-public-key", "--format", "raw"),
        ("export-public-key", "--format", "der"),
        ("generate-key", str(tmp_path / "audit.pem")),  # exists: never overwritten
        ("checkpoint", "--database-url", "mysql://nowhere"),
        ("no-such-command",),
    ):
        cli(*args, code=EXIT_ERROR)
    no_key = Cli({"SLUICE_DATABASE_URL": books.url})
    no_key("checkpoint", code=EXIT_ERROR)
    no_key("export-public-key", code=EXIT_ERROR)
    bad_key = tmp_path / "bad.pem"
    bad_key.write_text("not a key")
    Cli({"SLUICE_DATABASE_URL": books.url, "SLUICE_AUDIT_SIGNING_KEY_FILE": str(bad_key)})(
        "checkpoint", code=EXIT_ERROR
    )
