"""Signed webhooks against a real local HTTP receiver."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from services.alerts.domain.content import render
from services.alerts.domain.targets import Target
from services.alerts.notify.delivery import Deliverer
from services.alerts.notify.secrets import SecretLookup
from services.alerts.notify.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookChannel,
    verify,
)
from shared.errors import PermanentFailure
from tests.alerts.factories import make_risk
from tests.fakes.http_server import BackgroundServer

SECRET = "whsec-test-0123456789"
TARGET = Target(kind="webhook", address="crm", receiver="crm", url_ref="CRM_URL", secret_ref="CRM_SECRET")


class Receiver:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.statuses: deque[int] = deque()
        self.server = BackgroundServer(Starlette(routes=[Route("/hook", self.hook, methods=["POST"])]))

    async def hook(self, request: Request) -> PlainTextResponse:
        body = await request.body()
        with self.lock:
            self.received.append((dict(request.headers), body))
            status = self.statuses.popleft() if self.statuses else 204
        return PlainTextResponse("", status_code=status)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.server.start()
    yield r
    r.server.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


def channel(receiver: Receiver, client: httpx.AsyncClient, secret: str = SECRET) -> WebhookChannel:
    return WebhookChannel(client, SecretLookup({"CRM_URL": f"{receiver.server.base_url}/hook",
                                                "CRM_SECRET": secret}), clock=lambda: 1_740_000_000.0)


async def test_signature_is_verifiable(receiver: Receiver, client: httpx.AsyncClient) -> None:
    risk = make_risk()
    n = render(risk, TARGET, "http://cs.example")
    await channel(receiver, client).send(n)
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


async def test_4xx_is_dead_lettered_5xx_retried(receiver: Receiver, client: httpx.AsyncClient) -> None:
    deliverer = Deliverer({"webhook": channel(receiver, client)}, base_backoff_s=0.05)
    receiver.statuses.extend([503, 500])
    assert await deliverer.deliver(render(make_risk(), TARGET, "http://cs.example")) == "sent"
    assert len(receiver.received) == 3
    # every attempt carries the same idempotency key
    assert len({h[DELIVERY_HEADER.lower()] for h, _ in receiver.received}) == 1
    receiver.statuses.append(410)
    result = await deliverer.deliver_detailed(render(make_risk(risk_id="r2"), TARGET, "http://cs.example"))
    assert (result.outcome, result.attempts, result.code) == ("dead_letter", 1, "http_410")


async def test_missing_secret_is_permanent(receiver: Receiver, client: httpx.AsyncClient) -> None:
    ch = WebhookChannel(client, SecretLookup({"CRM_URL": f"{receiver.server.base_url}/hook"}, environ={}))
    with pytest.raises(PermanentFailure, match="secret not configured"):
        await ch.send(render(make_risk(), TARGET, "http://cs.example"))
    assert receiver.received == []
