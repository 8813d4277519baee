"""Free TCP ports for servers a test starts in another process."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port nothing listens on, taken BELOW the ephemeral range. A port the kernel hands out for
    `bind(0)` is an ephemeral one, which any outgoing connection on the machine (Kafka and database
    clients of concurrent tests) may take between this check and the child process's own bind."""
    high = min(_ephemeral_low(), 65536) - 1
    for _ in range(200):
        port = random.randint(20_000, high)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
