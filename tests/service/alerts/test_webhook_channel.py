"""Signed webhooks against a real local HTTP receiver, through the shared aiohttp session."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.alerts.domain.content import render
from services.alerts.domain.targets import Target
from services.alerts.notify.delivery import Deliverer
from services.alerts.notify.http import MAX_ERROR_BODY_BYTES, new_session, post
from services.alerts.notify.secrets import SecretLookup
from services.alerts.notify.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookChannel,
    verify,
)
from shared.errors import PermanentFailure, RetryableFailure
from tests.domain.alerts.factories import make_risk
from tests.support.http_server import BackgroundServer
from tests.support.tls import openssl_available, self_signed_contexts

SECRET = "whsec-test-0123456789"
TARGET = Target(kind="webhook", address="crm", receiver="crm", url_ref="CRM_URL", secret_ref="CRM_SECRET")

Answer = tuple[int, dict[str, str], bytes]


class Receiver:
    """`/hook` records every request and answers the scripted `(status, headers, body)` in order, then 204;
    `/slow` answers after `delay_s`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.answers: deque[Answer] = deque()
        self.delay_s = 0.0
        self.server = BackgroundServer(Starlette(routes=[Route("/hook", self.hook, methods=["POST"]),
                                                         Route("/slow", self.slow, methods=["POST"])]))

    def script(self, *statuses: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        with self.lock:
            self.answers.extend((status, headers or {}, body) for status in statuses)

    def url(self, path: str = "/hook", *, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.server.port}{path}"

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            self.received.append((dict(request.headers), body))
            status, headers, content = self.answers.popleft() if self.answers else (204, {}, b"")
        return Response(content, status_code=status, headers=headers)

    async def slow(self, request: Request) -> Response:
        await request.body()
        await asyncio.sleep(self.delay_s)
        return Response(b"", status_code=204)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.server.start()
    yield r
    r.server.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_session() as s:
        yield s


def channel(session: aiohttp.ClientSession, url: str, secret: str = SECRET, **kwargs) -> WebhookChannel:
    return WebhookChannel(session, SecretLookup({"CRM_URL": url, "CRM_SECRET": secret}),
                          clock=lambda: 1_740_000_000.0, **kwargs)


def note(risk_id: str = "acme:usage_drop:1"):
    return render(make_risk(risk_id=risk_id), TARGET, "http://cs.example")


async def test_signature_is_verifiable(receiver: Receiver, session: aiohttp.ClientSession) -> None:
    risk = make_risk()
    n = render(risk, TARGET, "http://cs.example")
    await channel(session, receiver.url()).send(n)
    [(headers, body)] = receiver.received
    assert verify(SECRET, body, headers[SIGNATURE_HEADER.lower()])
    assert not verify("another-secret", body, headers[SIGNATURE_HEADER.lower()])
    assert not verify(SECRET, body + b" ", headers[SIGNATURE_HEADER.lower()])
    payload = json.loads(body)
    assert payload["sent_at"] == int(headers[TIMESTAMP_HEADER.lower()]) == 1_740_000_000
    assert payload["risk"] == json.loads(risk.to_json())
    assert payload["dedup_key"] == n.dedup_key
    assert len(headers[DELIVERY_HEADER.lower()]) == 32
    assert headers["content-type"] == "application/json"


async def test_4xx_is_dead_lettered_5xx_retried(receiver: Receiver, session: aiohttp.ClientSession) -> None:
    deliverer = Deliverer({"webhook": channel(session, receiver.url())}, base_backoff_s=0.05)
    receiver.script(503, 500)
    assert await deliverer.deliver(note()) == "sent"
    assert len(receiver.received) == 3
    # every attempt carries the same idempotency key
    assert len({h[DELIVERY_HEADER.lower()] for h, _ in receiver.received}) == 1
    receiver.script(410)
    result = await deliverer.deliver_detailed(note(risk_id="r2"))
    assert (result.outcome, result.attempts, result.code) == ("dead_letter", 1, "http_410")


@pytest.mark.parametrize("status", [408, 425, 429, 502])
async def test_retryable_statuses_carry_retry_after(receiver: Receiver, session: aiohttp.ClientSession,
                                                    status: int) -> None:
    receiver.script(status, headers={"Retry-After": "7"}, body=b"slow_down")
    with pytest.raises(RetryableFailure) as info:
        await channel(session, receiver.url()).send(note())
    assert info.value.details == {"retry_after": 7.0, "status": status, "code": "slow_down"}
    assert str(info.value) == f"{TARGET.key}: HTTP {status} slow_down"


async def test_error_word_in_a_4xx_body_becomes_the_code(receiver: Receiver,
                                                         session: aiohttp.ClientSession) -> None:
    receiver.script(403, body=b"  Invalid_Signature\n")
    with pytest.raises(PermanentFailure) as info:
        await channel(session, receiver.url()).send(note())
    assert info.value.details == {"code": "invalid_signature", "status": 403}
    receiver.script(400, body=b"<html>Bad Request</html>")
    with pytest.raises(PermanentFailure) as info:
        await channel(session, receiver.url()).send(note())
    assert info.value.details["code"] == "http_400"


async def test_missing_secret_is_permanent(receiver: Receiver, session: aiohttp.ClientSession) -> None:
    ch = WebhookChannel(session, SecretLookup({"CRM_URL": receiver.url()}, environ={}))
    with pytest.raises(PermanentFailure, match="secret not configured"):
        await ch.send(note())
    assert receiver.received == []


async def test_timeout_is_retryable(receiver: Receiver, session: aiohttp.ClientSession) -> None:
    receiver.delay_s = 0.5
    ch = channel(session, receiver.url("/slow") + "?token=supersecret", timeout_s=0.1)
    with pytest.raises(RetryableFailure) as info:
        await ch.send(note())
    assert info.value.details["code"] == "TimeoutError"
    assert str(info.value) == f"{TARGET.key}: TimeoutError"
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_connection_refused_is_retryable_and_hides_the_url(session: aiohttp.ClientSession) -> None:
    stopped = Receiver()
    stopped.server.start()
    url = stopped.url("/hook") + "?token=supersecret"
    stopped.server.stop()
    with pytest.raises(RetryableFailure) as info:
        await channel(session, url, timeout_s=2).send(note())
    assert info.value.details == {"retry_after": None, "code": "ClientConnectorError"}
    assert str(info.value) == f"{TARGET.key}: ClientConnectorError"
    assert "supersecret" not in repr(info.value) and "127.0.0.1" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("url", ["ftp://hooks.example/supersecret", "hooks.example/supersecret",
                                 "http://hooks.example:99999/supersecret", "http://[::1/supersecret"])
async def test_invalid_url_is_permanent_and_not_echoed(session: aiohttp.ClientSession, url: str) -> None:
    with pytest.raises(PermanentFailure) as info:
        await channel(session, url).send(note())
    assert info.value.details == {"code": "invalid_url"}
    assert str(info.value) == f"{TARGET.key}: webhook URL is not a valid http(s) URL"
    assert "supersecret" not in repr(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_redirects_are_not_followed(receiver: Receiver, session: aiohttp.ClientSession) -> None:
    # The signed body never travels to wherever a receiver points: a moved receiver is a permanent 3xx.
    receiver.script(302, headers={"Location": receiver.url("/hook")})
    with pytest.raises(PermanentFailure) as info:
        await channel(session, receiver.url()).send(note())
    assert info.value.details == {"code": "http_302", "status": 302}
    assert len(receiver.received) == 1


async def test_cookies_from_a_receiver_are_not_sent_back(receiver: Receiver,
                                                         session: aiohttp.ClientSession) -> None:
    # A host name, not an IP address: aiohttp's default jar would keep this cookie.
    receiver.script(204, headers={"Set-Cookie": "sid=abc123; Path=/"})
    ch = channel(session, receiver.url(host="localhost"))
    await ch.send(note())
    await ch.send(note(risk_id="r2"))
    assert [h.get("cookie") for h, _ in receiver.received] == [None, None]


async def test_proxies_in_the_environment_are_ignored(receiver: Receiver, session: aiohttp.ClientSession,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    await channel(session, receiver.url()).send(note())
    assert len(receiver.received) == 1


async def test_a_huge_error_body_is_cut_off(receiver: Receiver, session: aiohttp.ClientSession) -> None:
    receiver.script(500, body=b"x" * (4 * MAX_ERROR_BODY_BYTES))
    answer = await post(session, receiver.url(), b"{}", {}, client_timeout=aiohttp.ClientTimeout(total=5),
                        what="crm", url_name="webhook URL")
    assert (answer.status, len(answer.body)) == (500, MAX_ERROR_BODY_BYTES)
    # the pool stays usable after the cut-off connection is dropped
    await channel(session, receiver.url()).send(note())
    assert len(receiver.received) == 2


@pytest.mark.skipif(not openssl_available(), reason="needs the openssl CLI")
async def test_tls_certificates_are_verified(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    server_ctx, _ = await asyncio.to_thread(self_signed_contexts, tmp_path)
    reached: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Called only after a completed TLS handshake, i.e. if the client accepted the certificate.
        reached.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(RetryableFailure) as info:
            await channel(session, f"https://127.0.0.1:{port}/hook", timeout_s=5).send(note())
    finally:
        server.close()
        await server.wait_closed()
    assert info.value.details["code"] == "ClientConnectorCertificateError"
    assert reached == []
