"""The deadline watchdog (adapters.deadlines.Watchdog) on real sockets: each watched socket is
shut down when its deadline passes, whether its watch came before or after earlier ones (the
thread is woken only for a new earliest deadline), and a block that ends in time is untouched."""

from __future__ import annotations

import os
import socket
import time
from contextlib import ExitStack

from adapters.deadlines import Watchdog

SLACK_S = 0.5  # a loaded 2-core machine: the thread runs a little after the deadline


def shut_within(peer: socket.socket, seconds: float) -> bool:
    """Whether the watched end was shut down: its peer reads end-of-file in time."""
    peer.settimeout(seconds)
    try:
        return peer.recv(1) == b""
    except TimeoutError:
        return False


def test_every_watch_fires_at_its_deadline_in_any_order() -> None:
    dog = Watchdog()
    pairs = [socket.socketpair() for _ in range(4)]
    now = time.monotonic()
    # A late one first (the thread sleeps towards it), then an earlier one (it must be woken),
    # then two later than that earliest (no wake-up needed; each still fires on time).
    deadlines = [now + 3.0, now + 0.3, now + 0.6, now + 0.9]
    try:
        with ExitStack() as stack:
            watches = [
                stack.enter_context(dog.watch(ours.fileno(), at, f"w{n}"))
                for n, ((ours, _), at) in enumerate(zip(pairs, deadlines, strict=True))
            ]
            for n in (1, 2, 3):
                left = deadlines[n] - time.monotonic()
                assert shut_within(pairs[n][1], left + SLACK_S), f"w{n} did not fire in time"
                assert watches[n].fired
            assert not watches[0].fired  # its deadline has not come
        assert dog.fired == 3
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_a_block_that_ends_in_time_is_untouched() -> None:
    dog = Watchdog()
    ours, peer = socket.socketpair()
    try:
        with dog.watch(ours.fileno(), time.monotonic() + 0.2, "quick") as watch:
            pass
        time.sleep(0.4)
        assert not watch.fired and dog.fired == 0
        ours.sendall(b"x")
        assert peer.recv(1) == b"x"
    finally:
        ours.close()
        peer.close()


def test_watches_leave_no_descriptor_open() -> None:
    """Each watch holds a duplicate of the socket's descriptor while it runs, and closes it."""
    dog = Watchdog()
    ours, peer = socket.socketpair()
    try:
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(1_000):
            with dog.watch(ours.fileno(), time.monotonic() + 60, "many") as watch:
                assert watch.fd is not None and watch.fd != ours.fileno()
        assert len(os.listdir("/proc/self/fd")) == before
        assert dog.fired == 0
    finally:
        ours.close()
        peer.close()


def test_a_descriptor_that_is_no_socket_is_left_alone() -> None:
    """Nothing to guard: the deadline passes without a shutdown, a count or a log line."""
    dog = Watchdog()
    read_end, write_end = os.pipe()
    try:
        with dog.watch(write_end, time.monotonic() + 0.1, "pipe") as watch:
            time.sleep(0.1 + SLACK_S)
            os.write(write_end, b"x")
        assert os.read(read_end, 1) == b"x"
        assert not watch.fired and dog.fired == 0
    finally:
        os.close(read_end)
        os.close(write_end)
