#!/usr/bin/env python3
"""Check that a Kafka broker answers a Metadata request.

Usage: kafka_probe.py HOST:PORT [--timeout SECONDS]

Exit status 0 and one line "cluster=<id> brokers=<n> controller=<id>" when the
broker answers with at least one live broker; 1 otherwise. Standard library
only, so it runs before the project's virtualenv exists.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys

API_METADATA = 3
METADATA_VERSION = 4  # oldest version still served by Kafka 4.x, non-flexible encoding
CORRELATION_ID = 0x6373


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str | None:
        length = self.take(">h")
        if length < 0:
            return None
        value = self.data[self.pos : self.pos + length].decode()
        self.pos += length
        return value


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        chunks.extend(chunk)
    return bytes(chunks)


def metadata(host: str, port: int, timeout: float) -> tuple[str | None, int, int]:
    client_id = b"churnsignal-probe"
    header = struct.pack(">hhih", API_METADATA, METADATA_VERSION, CORRELATION_ID, len(client_id))
    body = struct.pack(">ib", -1, 0)  # all topics, no auto-creation
    request = header + client_id + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        reader = _Reader(_recv_exact(sock, size))
    if reader.take(">i") != CORRELATION_ID:
        raise ValueError("unexpected correlation id in response")
    reader.take(">i")  # throttle_time_ms
    brokers = reader.take(">i")
    for _ in range(max(brokers, 0)):
        reader.take(">i")  # node_id
        reader.string()  # host
        reader.take(">i")  # port
        reader.string()  # rack
    cluster_id = reader.string()
    controller_id = reader.take(">i")
    return cluster_id, brokers, controller_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="HOST:PORT of a broker listener")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args()
    host, _, port = args.address.rpartition(":")
    try:
        cluster_id, brokers, controller_id = metadata(host.strip("[]"), int(port), args.timeout)
    except (OSError, ValueError, struct.error) as exc:
        print(f"no metadata from {args.address}: {exc}", file=sys.stderr)
        return 1
    if brokers < 1:
        print(f"{args.address} answered but lists no live broker yet", file=sys.stderr)
        return 1
    print(f"cluster={cluster_id} brokers={brokers} controller={controller_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
