"""The tests' ``free_port``: a port is never handed out twice in one run (two servers of one test
once drew the same port, and one failed to bind), and each is free as it is handed out."""

from __future__ import annotations

import socket

from tests.support import free_port


def test_ports_are_never_handed_out_twice_and_are_free() -> None:
    ports = [free_port() for _ in range(500)]  # the kernel repeats itself well within 500
    assert len(set(ports)) == len(ports)
    for port in ports[-5:]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
