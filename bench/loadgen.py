"""A lean HTTP/1.1 load generator, run as its own process so it never shares the server's event loop.

`python -m bench.loadgen --port P --bodies FILE --concurrency N --warmup S --duration S [...]`
keeps N keep-alive connections busy, each sending pre-encoded `POST` requests in turn (bodies cycled
from FILE: 4-byte big-endian length + bytes, repeated), and prints one JSON line: responses by status
and latency percentiles, counted only for requests completed inside the measuring window.

Raw asyncio protocol, no HTTP client library: on a 2-core machine the client's own CPU cost is part
of what is measured, so it is kept to parsing a status line and a Content-Length.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import time
from collections import Counter
from pathlib import Path
from typing import cast


def write_bodies(path: Path, bodies: list[bytes]) -> None:
    with path.open("wb") as f:
        for body in bodies:
            f.write(struct.pack(">I", len(body)))
            f.write(body)


def read_bodies(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (size,) = struct.unpack_from(">I", data, pos)
        out.append(data[pos + 4:pos + 4 + size])
        pos += 4 + size
    return out


class KeepAliveConnection(asyncio.Protocol):
    """One keep-alive connection: send a request, wait for its response's status."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection closed by the server"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._try_complete()

    def _try_complete(self) -> None:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0 or self._waiter is None:
            return
        head = bytes(self._buf[:end]).decode("latin-1")
        status = int(head[9:12])
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
                break
        total = end + 4 + length
        if len(self._buf) < total:
            return
        del self._buf[:total]
        waiter, self._waiter = self._waiter, None
        if not waiter.done():
            waiter.set_result(status)

    async def request(self, raw: bytes) -> int:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self._waiter


async def _worker(host: str, port: int, requests: list[bytes], offset: int, start_at: float, stop_at: float,
                  measure_from: float, statuses: Counter[int], latencies: list[float]) -> None:
    loop = asyncio.get_running_loop()
    conn: KeepAliveConnection | None = None
    i = offset
    await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
    while time.perf_counter() < stop_at:
        if conn is None or conn.transport is None or conn.transport.is_closing():
            _, conn = await loop.create_connection(KeepAliveConnection, host, port)
        raw = requests[i % len(requests)]
        i += 1
        sent = time.perf_counter()
        try:
            status = await conn.request(raw)
        except ConnectionError:
            statuses[-1] += 1
            conn = None
            continue
        done = time.perf_counter()
        if measure_from <= done <= stop_at:
            statuses[status] += 1
            latencies.append(done - sent)
    if conn is not None and conn.transport is not None:
        conn.transport.close()


def build_requests(host: str, port: int, path: str, bodies: list[bytes],
                   headers: dict[str, str]) -> list[bytes]:
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return [f"{head}Content-Length: {len(b)}\r\n\r\n".encode("latin-1") + b for b in bodies]


async def run(host: str, port: int, requests: list[bytes], concurrency: int, warmup_s: float,
              duration_s: float) -> dict[str, object]:
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    start_at = time.perf_counter() + 0.2
    measure_from = start_at + warmup_s
    stop_at = measure_from + duration_s
    step = max(1, len(requests) // concurrency)
    await asyncio.gather(*(_worker(host, port, requests, n * step, start_at, stop_at, measure_from, statuses,
                                   latencies) for n in range(concurrency)))
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    return {"statuses": {str(k): v for k, v in sorted(statuses.items())}, "window_s": duration_s,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": latencies[-1] * 1000 if latencies else 0.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/events")
    parser.add_argument("--bodies", type=Path, required=True)
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args(argv)
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    requests = build_requests(args.host, args.port, args.path, read_bodies(args.bodies), headers)
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    result = runner(run(args.host, args.port, requests, args.concurrency, args.warmup, args.duration))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
