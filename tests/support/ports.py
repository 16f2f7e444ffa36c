"""The one free-port helper: a port on 127.0.0.1 that nothing listens on (the kernel's pick, closed again)."""

import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
