"""A local Standard Webhooks receiver for tests, on a real loopback socket.

It checks every request the way a receiver following https://www.standardwebhooks.com/ would, with its own
code (not the project's signing module): the `webhook-id`, `webhook-timestamp` and `webhook-signature`
headers, the timestamp within 5 minutes, and one `v1,` signature in the space-separated list equal to
base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")) for its key. A request that fails the check gets a 401
and is counted in `rejected`; a verified one is recorded in `received` (every attempt, duplicates included),
then answered as the test scripted: `fail_next(n, status)` for the next n requests, `refuse_account(...)`
for every message of an account, else 204 (after `delay_s`, for a slow receiver).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.http_server import BackgroundServer


@dataclass(frozen=True)
class Delivery:
    id: str
    timestamp: int
    message: dict[str, Any]
    body: bytes


@dataclass
class _Script:
    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)   # (status, headers) per request
    refused: dict[str, int] = field(default_factory=dict)                      # account_id -> status


class WebhookReceiver:
    """`start()` binds a free port; `url` takes a path with a token in its query (a secret, like many
    receivers' URLs); `secret` is the whsec_ secret to configure."""

    def __init__(self, key: bytes, path: str = "/hooks/health?token=s3cr3t-url-token") -> None:
        self.key = key
        self.secret = "whsec_" + base64.b64encode(key).decode()
        self._path = path
        self._lock = threading.Lock()
        self._script = _Script()
        self.received: list[Delivery] = []
        self.rejected: list[str] = []
        self.answered: list[int] = []
        self.delay_s = 0.0           # how long every answer takes (a slow receiver)
        self._server = BackgroundServer(Starlette(routes=[Route("/hooks/{name}", self._hook, methods=["POST"])]))

    @property
    def url(self) -> str:
        return self._server.base_url + self._path

    def start(self) -> WebhookReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    # -- scripting -------------------------------------------------------------------------------
    def fail_next(self, n: int, status: int = 500, headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self._script.failures.extend([(status, dict(headers or {}))] * n)

    def refuse_account(self, account_id: str, status: int = 400) -> None:
        with self._lock:
            self._script.refused[account_id] = status

    # -- reading -----------------------------------------------------------------------------------
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self.received)

    def accepted(self) -> list[Delivery]:
        """The deliveries answered 2xx, duplicates included, in arrival order."""
        with self._lock:
            return [d for d, status in zip(self.received, self.answered, strict=True) if 200 <= status < 300]

    def once_each(self) -> dict[str, list[Delivery]]:
        """Per account, the accepted messages a receiver deduplicating by webhook-id keeps, in arrival order."""
        seen: set[str] = set()
        out: dict[str, list[Delivery]] = {}
        for d in self.accepted():
            if d.id in seen:
                continue
            seen.add(d.id)
            out.setdefault(d.message["account_id"], []).append(d)
        return out

    # -- the endpoint ----------------------------------------------------------------------------
    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        problem = self._check(request.headers, body)
        if problem is not None:
            with self._lock:
                self.rejected.append(problem)
            return Response(problem, status_code=401)
        msg_id = request.headers["webhook-id"]
        delivery = Delivery(msg_id, int(request.headers["webhook-timestamp"]), json.loads(body), body)
        with self._lock:
            status, headers = 204, {}
            if self._script.failures:
                status, headers = self._script.failures.pop(0)
            elif delivery.message.get("account_id") in self._script.refused:
                status = self._script.refused[delivery.message["account_id"]]
            self.received.append(delivery)
            self.answered.append(status)
        return Response(b"" if status == 204 else b"nope", status_code=status, headers=headers)

    def _check(self, headers: Any, body: bytes) -> str | None:
        msg_id, stamp, signatures = (headers.get("webhook-id"), headers.get("webhook-timestamp"),
                                     headers.get("webhook-signature"))
        if not msg_id or not stamp or not signatures:
            return "missing headers"
        if not stamp.isdigit() or abs(int(stamp) - time.time()) > 300:
            return "bad timestamp"
        signed = f"{msg_id}.{stamp}.".encode() + body
        expected = base64.b64encode(hmac.new(self.key, signed, hashlib.sha256).digest())
        for candidate in signatures.split(" "):
            version, _, signature = candidate.partition(",")
            if version == "v1" and hmac.compare_digest(signature.encode(), expected):
                return None
        return "no matching signature"
