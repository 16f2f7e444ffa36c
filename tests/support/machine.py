"""What the machine runs beside the platform, which no tenant's code may reach: PostgreSQL, Redis, MariaDB,
RabbitMQ, NATS and Mosquitto (CI's machines run them all), and a probe that tells whether one answers."""

from __future__ import annotations

import socket

MACHINE_SERVICES = {
    "PostgreSQL": 5432,
    "Redis": 6379,
    "MariaDB": 3306,
    "RabbitMQ": 5672,
    "NATS": 4222,
    "Mosquitto": 1883,
}


def listening(port: int, host: str = "127.0.0.1", timeout: float = 1) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def host_targets(ports) -> dict[str, int]:
    """The platform's own ports (tests/support/live.py Ports) and every machine service that is running:
    each answers a process on the host, which is the control for a test that no tenant reaches them."""
    targets = {"portal": ports.portal, "runtime": ports.runtime, "gateway": ports.gateway}
    targets.update({name: port for name, port in MACHINE_SERVICES.items() if listening(port)})
    assert all(listening(port) for port in targets.values()), targets
    return targets


def reach_py(targets: dict[str, int], *, print_it: bool = False) -> str:
    """Python code whose last expression maps each target's name to how connecting to it on 127.0.0.1
    ended, plus the internet (1.1.1.1:80); with print_it, a script that prints that mapping's repr."""
    result = (
        f"{{name: reach('127.0.0.1', port) for name, port in {targets!r}.items()}}"
        " | {'internet': reach('1.1.1.1', 80)}"
    )
    return (
        "import socket\n"
        "def reach(host, port):\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=3).close()\n"
        "        return 'connected'\n"
        "    except OSError as exc:\n"
        "        return type(exc).__name__ + ': ' + str(exc)\n"
    ) + (f"print(repr({result}))\n" if print_it else result)
