"""The HTTP side of Segment on ingest, plain ASGI endpoints like `POST /v1/events` (no framework per request):

- Segment's HTTP Tracking API, for a Segment source (or any of Segment's libraries) pointed at ingest:
  `POST /v1/track`, `/v1/identify`, `/v1/group`, `/v1/page`, `/v1/screen`, `/v1/alias` (one message, its
  type given by the path) and `/v1/batch` (`{"batch": [...], "context", "sentAt"}`). The write key is an
  ingest API key: `Authorization: Basic base64(<key>:)` as Segment's libraries send it, or `Bearer <key>`,
  or, without that header, the body's `writeKey`.
- `POST /v1/sources/segment` for Segment's (classic) Webhooks destination: one message per request, signed
  with the destination's shared secret (`X-Signature`: hex HMAC-SHA1 of the body), the secret being
  `CHURNSIGNAL_SOURCE_SECRETS`'s `segment`.

Bodies may be gzip (`Content-Encoding`); the body limits of `/v1/events` apply. A request is answered
`200 {"success": true}` once its events were accepted like `/v1/events`' (validation, scopes, all or nothing,
Kafka's acknowledgement; `Intake.accept`) and its memberships written; messages that map to nothing are
counted (`churnsignal_ingest_segment_unmapped_total{type, reason}`), not refused. Errors are ingest's own:
400 (not JSON), 401, 403, 413, 415 (an encoding other than gzip), 422 (located in the request as sent),
503 (Kafka, or the Segment user directory still loading at start-up, with `Retry-After`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gc
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from services.ingest.api import read_body
from services.ingest.body import Encoding, content_encoding, gunzip, json_document
from services.ingest.intake import Intake, may_ingest
from services.ingest.segment.config import SegmentMapping
from services.ingest.segment.directory import UserAccounts
from services.ingest.segment.mapping import Mapped, map_messages
from shared.errors import (
    BadRequest,
    BusUnavailable,
    ChurnsignalError,
    Forbidden,
    PayloadTooLarge,
    Unauthorized,
    Unprocessable,
)
from shared.http import KeyRing, error_response
from shared.metrics import IngestMetrics, SegmentMetrics
from shared.settings import ApiKey

_EMPTY = "request body is empty: send a Segment message (a JSON object)"

SOURCE = "segment"
WEBHOOK_PATH = "/v1/sources/segment"
SIGNATURE = "x-signature"
CALLS = ("track", "identify", "group", "page", "screen", "alias")
BATCH_PATH = "/v1/batch"
_SUCCESS = b'{"success":true}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_SUCCESS))]


class SourceNotConfigured(ChurnsignalError):
    status_code = 503


class _Headers:
    __slots__ = ("authorization", "content_encoding", "content_length", "signature")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.authorization: str | None = None
        self.content_encoding: str | None = None
        self.content_length: str | None = None
        self.signature: str | None = None
        for name, value in raw:
            if name == b"authorization":
                self.authorization = value.decode("latin-1")
            elif name == b"content-encoding":
                self.content_encoding = value.decode("latin-1")
            elif name == b"content-length":
                self.content_length = value.decode("latin-1")
            elif name == b"x-signature":
                self.signature = value.decode("latin-1")


class SegmentEndpoints:
    """Every Segment path, sharing one intake, one key ring and one user directory."""

    def __init__(self, intake: Intake, keyring: KeyRing, users: UserAccounts, mapping: SegmentMapping,
                 metrics: IngestMetrics, segment_metrics: SegmentMetrics, *, max_body_bytes: int,
                 max_events: int, retry_after_s: int, secret: SecretStr | None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._intake = intake
        self._keyring = keyring
        self._users = users
        self._mapping = mapping
        self._metrics = metrics
        self._segment = segment_metrics
        self._max_body_bytes = max_body_bytes
        self._max_events = max_events
        self._retry_after_s = retry_after_s
        self._secret = secret
        self._clock = clock
        self._webhook_key = ApiKey(name=f"source:{SOURCE}", sha256="0" * 64, scopes=["ingest"])

    def routes(self) -> dict[str, ASGIApp]:
        """Path -> ASGI endpoint (POST only; `IngestApp` answers 405 to other methods)."""
        routes: dict[str, ASGIApp] = {f"/v1/{kind}": self._endpoint(self._call(kind)) for kind in CALLS}
        routes[BATCH_PATH] = self._endpoint(self._tracking(self._batch_of))
        routes[WEBHOOK_PATH] = self._endpoint(self._webhook, basic=False)
        return routes

    def _endpoint(self, handle: Callable[[Scope, Receive], Awaitable[None]], *, basic: bool = True) -> ASGIApp:
        return _Endpoint(handle, self._metrics, basic=basic)

    # -- the Tracking API --------------------------------------------------------------------------------
    def _call(self, kind: str) -> Callable[[Scope, Receive], Awaitable[None]]:
        def messages(decoded: Any) -> _Messages:
            if not isinstance(decoded, dict):
                raise Unprocessable(f"a Segment {kind} call is one JSON object", errors=[
                    {"loc": [], "msg": f"must be an object (a Segment message), got {_kind_of(decoded)}"}])
            return _Messages([decoded], batch=False, kind=kind)

        return self._tracking(messages)

    def _tracking(self, parse: Callable[[Any], _Messages]) -> Callable[[Scope, Receive], Awaitable[None]]:
        async def handle(scope: Scope, receive: Receive) -> None:
            headers = _Headers(scope["headers"])
            key = self._key_from_header(headers.authorization)
            raw = await self._body(headers, receive)
            await self._accept(key, raw, parse)

        return handle

    def _batch_of(self, body: Any) -> _Messages:
        if not isinstance(body, dict):
            raise Unprocessable("a Segment batch is a JSON object with a 'batch' array", errors=[
                {"loc": [], "msg": f"must be an object with a 'batch' array, got {_kind_of(body)}"}])
        messages = body.get("batch")
        if not isinstance(messages, list):
            raise Unprocessable("a Segment batch is a JSON object with a 'batch' array", errors=[
                {"loc": ["batch"], "msg": "required: an array of Segment messages" if messages is None
                 else f"must be an array of Segment messages, got {_kind_of(messages)}"}])
        if not messages:
            raise BadRequest("the batch is empty: send at least one message")
        if len(messages) > self._max_events:
            raise PayloadTooLarge(f"{len(messages)} messages in one request; the limit is {self._max_events}",
                                  limit_events=self._max_events)
        context = body.get("context")
        if context is not None and not isinstance(context, dict):
            raise Unprocessable("the batch's context must be an object", errors=[
                {"loc": ["context"], "msg": f"must be an object, got {_kind_of(context)}"}])
        return _Messages(messages, batch=True, context=context, sent_at=body.get("sentAt"))

    def _key_from_header(self, authorization: str | None) -> ApiKey | None:
        """The key of `Authorization` (Basic with the write key as user name, or Bearer); None without one."""
        if authorization is None or not authorization.strip():
            return None
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise Unauthorized("Authorization: Basic credentials are not base64 of '<write key>:'") from None
            user, _, password = decoded.partition(":")
            write_key = user or password
            if not write_key:
                raise Unauthorized("Authorization: Basic carries no write key (expected base64 of "
                                   "'<write key>:', the write key being an ingest API key)")
            return self._authorized(write_key)
        if scheme.lower() == "bearer" and credentials.strip():
            return self._authorized(credentials.strip())
        raise Unauthorized("Authorization header must be 'Basic base64(<write key>:)' or 'Bearer <api key>'")

    def _key_from_body(self, body: Any) -> ApiKey:
        write_key = body.get("writeKey") if isinstance(body, dict) else None
        if not isinstance(write_key, str) or not write_key.strip():
            raise Unauthorized("missing write key: send 'Authorization: Basic base64(<write key>:)' (as "
                               "Segment's libraries do) or 'writeKey' in the body; the write key is an ingest "
                               "API key")
        return self._authorized(write_key.strip())

    def _authorized(self, key_text: str) -> ApiKey:
        key = self._keyring.authenticate("Bearer " + key_text)
        if not may_ingest(key):
            raise Forbidden(f"API key '{key.name}' lacks the 'ingest' scope")
        return key

    async def _body(self, headers: _Headers, receive: Receive) -> bytes:
        encoding = content_encoding(headers.content_encoding)
        body = await read_body(receive, headers.content_length, self._max_body_bytes)
        return gunzip(body, self._max_body_bytes) if encoding is Encoding.GZIP else body

    # -- the Webhooks destination ----------------------------------------------------------------------
    async def _webhook(self, scope: Scope, receive: Receive) -> None:
        if self._secret is None:
            raise SourceNotConfigured(
                f"source '{SOURCE}' is not configured: set its shared secret in CHURNSIGNAL_SOURCE_SECRETS, "
                f"e.g. {{\"{SOURCE}\": \"<the shared secret of Segment's Webhooks destination>\"}}",
                source=SOURCE)
        headers = _Headers(scope["headers"])
        raw = await self._body(headers, receive)
        self._verify(headers.signature, raw)
        await self._accept(self._webhook_key, raw, self._delivered)

    def _delivered(self, payload: Any) -> _Messages:
        """What the Webhooks destination posts: one message (a batch is taken too)."""
        if isinstance(payload, dict) and "batch" in payload and "type" not in payload:
            return self._batch_of(payload)
        if not isinstance(payload, dict):
            raise Unprocessable("a Segment webhook posts one JSON object (a Segment message)", errors=[
                {"loc": [], "msg": f"must be an object (a Segment message), got {_kind_of(payload)}"}])
        return _Messages([payload], batch=False)

    def _verify(self, signature: str | None, body: bytes) -> None:
        """X-Signature: the hex HMAC-SHA1 of the body (the JSON Segment sends), keyed by the shared secret."""
        assert self._secret is not None
        if signature is None or not signature.strip():
            raise Unauthorized("missing X-Signature header: Segment's Webhooks destination signs every "
                               "request with its shared secret")
        expected = hmac.new(self._secret.get_secret_value().encode(), body, hashlib.sha1).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode("utf-8", "replace")):
            raise Unauthorized("X-Signature does not match the body: check the shared secret set in "
                               "CHURNSIGNAL_SOURCE_SECRETS against the Webhooks destination's")

    # -- both ----------------------------------------------------------------------------------------------
    async def _accept(self, key: ApiKey | None, raw: bytes, parse: Callable[[Any], _Messages]) -> None:
        """Decode (`parse` finds the messages), map, accept, remember; `key` None: the body's `writeKey`.

        The decoded body is a tree (JSON has no cycles) that reference counting frees: the cyclic collector
        is paused while it is built and mapped, and it is let go before Kafka is awaited. (Objects that live
        across that wait, or that a collection finds alive, reach the collector's older generations: a large
        CPU cost under load.) A 422 of the events' validation is therefore located by mapping the body
        again, with the accounts the first mapping was given."""
        now = self._clock()
        asked: dict[str, str | None] = {}

        def account_of(user: str) -> str | None:
            if user not in asked:
                asked[user] = self._users.account_of(user)
            return asked[user]

        with _collector_paused():
            decoded = json_document(raw, _EMPTY)
            if key is None:
                key = self._key_from_body(decoded)
            request = parse(decoded)
            del decoded
            if not self._users.ready:
                raise BusUnavailable("the Segment user directory is still loading; retry later",
                                     retry_after=self._retry_after_s)
            self._metrics.batch_size.observe(len(request.items))
            mapped = map_messages(request.items, self._mapping, account_of, now=now, batch=request.batch,
                                  context=request.context, sent_at=request.sent_at, kind=request.kind,
                                  locate=False)
            request.items.clear()
            del request
        self._count_unmapped(mapped)
        if mapped.events:
            try:
                await self._intake.accept(key, mapped.events)  # empties the list
            except Unprocessable as exc:
                again = parse(json_document(raw, _EMPTY))
                located = map_messages(again.items, self._mapping, asked.get, now=now, batch=again.batch,
                                       context=again.context, sent_at=again.sent_at, kind=again.kind)
                raise located.translate(exc) from exc
        if mapped.memberships:
            try:
                await self._users.remember(mapped.memberships)
            except BusUnavailable as exc:
                self._metrics.producer_errors.inc()
                raise BusUnavailable(f"the Segment users of the request were not written: {exc.message}; "
                                     "retry later", retry_after=self._retry_after_s) from exc

    def _count_unmapped(self, mapped: Mapped) -> None:
        for (kind, reason), n in mapped.unmapped.items():
            self._segment.unmapped.labels(kind, reason).inc(n)


class _Endpoint:
    """One path as an ASGI app: `handle` does the work, this answers (200 `{"success": true}`, or the error)
    and counts (`churnsignal_ingest_requests_total`, the latency histogram, like `/v1/events`)."""

    def __init__(self, handle: Callable[[Scope, Receive], Awaitable[None]], metrics: IngestMetrics, *,
                 basic: bool) -> None:
        self._handle = handle
        self._metrics = metrics
        self._ok = metrics.requests.labels("200")
        self._basic = basic

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = self._metrics
        started = time.perf_counter()
        try:
            await self._handle(scope, receive)
        except ChurnsignalError as exc:
            metrics.requests.labels(str(exc.status_code)).inc()
            metrics.request_latency.observe(time.perf_counter() - started)
            response = error_response(exc)
            if exc.status_code == 401:  # the write key is Basic auth's user name; a webhook is signed
                if self._basic:
                    response.headers["www-authenticate"] = 'Basic realm="churnsignal ingest"'
                else:
                    del response.headers["www-authenticate"]
            await response(scope, receive, send)
            return
        except Exception:
            metrics.requests.labels("500").inc()  # the ASGI server logs it and answers 500
            raise
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": _SUCCESS})
        self._ok.inc()
        metrics.request_latency.observe(time.perf_counter() - started)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (nothing in it may await); as it was before, after."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@dataclass(slots=True)
class _Messages:
    """The messages of one request, and what the request gives all of them."""

    items: list[Any]
    batch: bool
    kind: str | None = None      # the single-call paths' type
    context: Any = None          # a batch's own context and sentAt
    sent_at: Any = None


def _kind_of(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")
