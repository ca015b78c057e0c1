"""`project rebuild`, `audit replay` and `audit verify` show a progress bar on a terminal and
nothing of it when their output goes to a pipe or a log (real processes, a real pseudo-terminal)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.merkle_support import OPS, SELLER, Books, books_on

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 120  # a CLI start and a few hundred events: seconds; the bound is for a hang
COMMANDS = {
    "rebuilding balances": ("project", "rebuild", "balances"),
    f"replaying {SELLER}": ("audit", "replay", "--account", SELLER),
    "rebuilding in scratch": ("audit", "verify"),
}


@pytest.fixture(scope="module")
def books(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Books]:
    with books_on("sqlite", tmp_path_factory.mktemp("progress")) as books:
        for n in range(30):
            books.apply(OPS[n % 4], 100 + n)
        yield books


def _run(books: Books, args: tuple[str, ...], tty: bool) -> tuple[int, str]:
    """Runs ``sluice ARGS``; stderr to a pseudo-terminal (``tty``) or a pipe. Returns the exit
    code and what stderr received."""
    env = os.environ | {"SLUICE_DATABASE_URL": books.url, "TERM": "xterm"}
    command = [sys.executable, "-m", "adapters.cli", *args]
    if not tty:
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        return done.returncode, done.stderr
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=slave
        )
        os.close(slave)
        received = b""
        while True:  # ends when the child closes the terminal (EOF/EIO), or at the timeout
            ready, _, _ = select.select([master], [], [], RUN_TIMEOUT_S)
            if not ready:
                process.kill()
                raise AssertionError(f"{args}: no output within {RUN_TIMEOUT_S} s")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child's side closed
                break
            if not chunk:
                break
            received += chunk
        return process.wait(RUN_TIMEOUT_S), received.decode("utf-8", "replace")
    finally:
        os.close(master)


@pytest.mark.parametrize("label", COMMANDS)
def test_progress_shows_on_a_terminal_and_not_in_a_pipe(books: Books, label: str) -> None:
    code, on_terminal = _run(books, COMMANDS[label], tty=True)
    assert code == 0, on_terminal
    assert label in on_terminal
    code, in_pipe = _run(books, COMMANDS[label], tty=False)
    assert code == 0, in_pipe
    assert label not in in_pipe and "\x1b[" not in in_pipe
