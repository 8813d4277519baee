"""HTTP edge of ingest: `POST /v1/events`, served as a plain ASGI endpoint.

It is the hot path (thousands of requests a second on one core), so it skips the web framework's
per-request machinery (middleware stack, dependency solving, response models, routing tables):
`IngestApp` hands `/v1/events` straight to `EventsEndpoint`, everything else to FastAPI. The endpoint
reads the raw body itself (bounded, before any parsing), so it can name where JSON breaks, cap gzip
bombs and skip any per-event model round-trip beyond validation. The operation is documented in the
OpenAPI schema by `services.ingest.openapi`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from services.ingest import cloudevents
from services.ingest.body import Encoding, body_format, content_encoding, gunzip, parse_events
from services.ingest.intake import Intake, may_ingest
from shared.errors import BadRequest, ChurnsignalError, Forbidden, PayloadTooLarge, Unprocessable
from shared.http import KeyRing, error_response
from shared.metrics import IngestMetrics
from shared.settings import ApiKey

PATH = "/v1/events"
_JSON_HEADERS = [(b"content-type", b"application/json")]
_NOT_ALLOWED = orjson.dumps({"error": f"method not allowed on {PATH}: use POST"})


class _Headers:
    """The few request headers the endpoint reads, from the raw ASGI list (one pass)."""

    __slots__ = ("authorization", "content_type", "content_encoding", "content_length", "ce")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.authorization: str | None = None
        self.content_type: str | None = None
        self.content_encoding: str | None = None
        self.content_length: str | None = None
        self.ce: dict[str, str] | None = None  # CloudEvents binary mode: the `ce-*` headers
        for name, value in raw:
            if name == b"authorization":
                self.authorization = value.decode("latin-1")
            elif name == b"content-type":
                self.content_type = value.decode("latin-1")
            elif name == b"content-encoding":
                self.content_encoding = value.decode("latin-1")
            elif name == b"content-length":
                self.content_length = value.decode("latin-1")
            elif name[:3] == b"ce-":
                if self.ce is None:
                    self.ce = {}
                self.ce[name.decode("latin-1")] = value.decode("latin-1")


async def read_body(receive: Receive, declared_length: str | None, limit: int) -> bytes:
    """The raw body, refusing to hold more than `limit` bytes (checked before and while reading)."""
    if declared_length is not None and declared_length.isdigit() and int(declared_length) > limit:
        raise PayloadTooLarge(f"body is over the limit of {limit} bytes", limit_bytes=limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("the client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over the limit of {limit} bytes", limit_bytes=limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class EventsEndpoint:
    """`POST /v1/events` (docs/events.md): authenticate, read, parse, validate, publish, answer."""

    def __init__(self, intake: Intake, keyring: KeyRing, metrics: IngestMetrics, *, max_body_bytes: int,
                 max_events: int, cloudevents_type_prefix: str = "") -> None:
        self._intake = intake
        self._type_prefix = cloudevents_type_prefix
        self._keyring = keyring
        self._metrics = metrics
        self._max_body_bytes = max_body_bytes
        self._max_events = max_events
        self._accepted_requests = metrics.requests.labels("202")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        try:
            accepted = await self._accept(scope, receive)
        except ChurnsignalError as exc:
            self._metrics.requests.labels(str(exc.status_code)).inc()
            self._metrics.request_latency.observe(time.perf_counter() - started)
            await error_response(exc)(scope, receive, send)
            return
        except Exception:
            self._metrics.requests.labels("500").inc()  # the ASGI server logs it and answers 500
            raise
        payload = b'{"accepted":%d}' % accepted
        await send({"type": "http.response.start", "status": 202,
                    "headers": [*_JSON_HEADERS, (b"content-length", b"%d" % len(payload))]})
        await send({"type": "http.response.body", "body": payload})
        self._accepted_requests.inc()
        self._metrics.request_latency.observe(time.perf_counter() - started)

    async def _accept(self, scope: Scope, receive: Receive) -> int:
        headers = _Headers(scope["headers"])
        key = self._keyring.authenticate(headers.authorization)
        if not may_ingest(key):
            raise Forbidden(f"API key '{key.name}' lacks the 'ingest' scope")
        mode = cloudevents.mode_of(headers.content_type, headers.ce)
        if mode is not None:
            return await self._accept_cloudevents(mode, headers, key, receive)
        fmt = body_format(headers.content_type)
        encoding = content_encoding(headers.content_encoding)
        body = await read_body(receive, headers.content_length, self._max_body_bytes)
        if encoding is Encoding.GZIP:
            body = gunzip(body, self._max_body_bytes)
        raws = parse_events(body, fmt, self._max_events)
        del body
        self._metrics.batch_size.observe(len(raws))
        return await self._intake.accept(key, raws)  # empties `raws` before awaiting Kafka

    async def _accept_cloudevents(self, mode: cloudevents.Mode, headers: _Headers, key: ApiKey,
                                  receive: Receive) -> int:
        """A CloudEvents request (services.ingest.cloudevents): mapped onto native envelopes, then accepted
        like them; the envelope's 422 is named by CloudEvents attribute."""
        encoding = content_encoding(headers.content_encoding)
        body = await read_body(receive, headers.content_length, self._max_body_bytes)
        if encoding is Encoding.GZIP:
            body = gunzip(body, self._max_body_bytes)
        batch = cloudevents.parse(mode, body, content_type=headers.content_type, ce_headers=headers.ce,
                                  max_events=self._max_events, type_prefix=self._type_prefix)
        del body
        self._metrics.batch_size.observe(len(batch.raws))
        try:
            return await self._intake.accept(key, batch.raws)
        except Unprocessable as exc:
            raise batch.translate(exc) from exc


class IngestApp(FastAPI):
    """The ingest app: FastAPI for everything but `/v1/events` and the other plain ASGI endpoints of
    `posts` (path -> endpoint: Segment's paths), which are answered before the framework's middleware and
    routing (405 but for POST). Errors the endpoints do not map themselves reach the ASGI server, which logs
    them and answers 500."""

    def __init__(self, *, endpoint: EventsEndpoint, posts: Mapping[str, ASGIApp] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.events_endpoint = endpoint
        self.posts: dict[str, ASGIApp] = dict(posts or {})
        self._not_allowed = {path: orjson.dumps({"error": f"method not allowed on {path}: use POST"})
                             for path in self.posts}
        # Also in the route table (out of the OpenAPI document), so that what lists the app's routes sees them;
        # requests never get that far (`__call__` answers them first).
        for path, post in self.posts.items():
            self.router.routes.append(Route(path, post, methods=["POST"], include_in_schema=False))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
        elif scope["path"] != PATH:
            post = self.posts.get(scope["path"])
            if post is None:
                await super().__call__(scope, receive, send)
            elif scope["method"] == "POST":
                await post(scope, receive, send)
            else:
                body = self._not_allowed[scope["path"]]
                await send({"type": "http.response.start", "status": 405,
                            "headers": [*_JSON_HEADERS, (b"allow", b"POST"), (b"content-length", b"%d" % len(body))]})
                await send({"type": "http.response.body", "body": body})
        elif scope["method"] == "POST":
            await self.events_endpoint(scope, receive, send)
        else:
            await send({"type": "http.response.start", "status": 405,
                        "headers": [*_JSON_HEADERS, (b"allow", b"POST"),
                                    (b"content-length", b"%d" % len(_NOT_ALLOWED))]})
            await send({"type": "http.response.body", "body": _NOT_ALLOWED})
