"""The fake Slack enforces what real Slack enforces (so channel tests against it mean something)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.slack import FakeSlack

AUTH = {"Authorization": "Bearer xoxb-test-token"}


@pytest.fixture(scope="module")
def slack_server() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def slack(slack_server: FakeSlack) -> FakeSlack:
    slack_server.reset()
    slack_server.add_channel("U1")
    return slack_server


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


def section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


@pytest.mark.parametrize(("payload", "error"), [
    ({"text": "x", "blocks": [{"type": "divider"}] * 51}, "invalid_blocks"),
    ({"text": "x", "blocks": [section("y" * 3001)]}, "invalid_blocks"),
    ({"text": "x", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}]},
     "invalid_blocks"),
    ({"text": "x", "blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}]},
     "invalid_blocks"),
    ({"text": "x", "blocks": [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}]},
     "invalid_blocks"),
    ({"text": "x", "blocks": [{"type": "nonsense"}]}, "invalid_blocks"),
    ({"text": "x" * 40_001}, "msg_too_long"),
    ({}, "no_text"),
])
async def test_limits_are_enforced(slack: FakeSlack, client: httpx.AsyncClient, payload: dict,
                                   error: str) -> None:
    url = slack.add_webhook("#c")
    response = await client.post(url, json=payload)
    assert (response.status_code, response.text) == (400, error)
    api = await client.post(slack.api_url + "chat.postMessage", json={**payload, "channel": "U1"},
                            headers=AUTH)
    assert api.json() == {"ok": False, "error": error}
    assert slack.messages() == []


async def test_inside_limits_is_accepted(slack: FakeSlack, client: httpx.AsyncClient) -> None:
    url = slack.add_webhook("#c")
    payload = {"text": "x" * 40_000, "blocks": [section("y" * 3000)] * 50}
    assert (await client.post(url, json=payload)).text == "ok"
    assert len(slack.messages("#c")) == 1


async def test_web_api_auth_and_channels(slack: FakeSlack, client: httpx.AsyncClient) -> None:
    post = slack.api_url + "chat.postMessage"
    assert (await client.post(post, json={"channel": "U1", "text": "x"})).json()["error"] == "not_authed"
    bad = {"Authorization": "Bearer nope"}
    assert (await client.post(post, json={"channel": "U1", "text": "x"}, headers=bad)).json()["error"] == \
        "invalid_auth"
    assert (await client.post(post, json={"channel": "U9", "text": "x"}, headers=AUTH)).json()["error"] == \
        "channel_not_found"
    assert (await client.post(post, json={"channel": "U1", "text": "x"}, headers=AUTH)).json()["ok"] is True


async def test_one_message_per_second_per_channel(slack: FakeSlack, client: httpx.AsyncClient,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # The interval is stretched so the second message surely comes within it, however slow the machine
    # (the limit itself is the same rule at any interval; the Retry-After Slack sends stays "1").
    monkeypatch.setattr(slack, "rate_interval_s", 60.0)
    a, b = slack.add_webhook("#a"), slack.add_webhook("#b")
    assert (await client.post(a, json={"text": "1"})).status_code == 200
    limited = await client.post(a, json={"text": "2"})
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "1")
    assert (await client.post(b, json={"text": "1"})).status_code == 200   # other channel unaffected
    assert [m.channel for m in slack.messages()] == ["#a", "#b"]


async def test_scripted_responses_then_normal(slack: FakeSlack, client: httpx.AsyncClient) -> None:
    url = slack.add_webhook("#a")
    slack.script("#a", [(429, {"Retry-After": "2"}), (500, {}), (404, {}, "channel_not_found")])
    got = [await client.post(url, json={"text": "x"}) for _ in range(4)]
    assert [(r.status_code, r.text) for r in got] == [(429, "rate_limited"), (500, "internal_error"),
                                                      (404, "channel_not_found"), (200, "ok")]
    assert got[0].headers["retry-after"] == "2"
    assert [r.scripted for r in slack.requests("#a")] == [True, True, True, False]


async def test_unknown_webhook_is_no_service(slack: FakeSlack, client: httpx.AsyncClient) -> None:
    response = await client.post(f"{slack.base_url}/services/T/B/x", json={"text": "x"})
    assert (response.status_code, response.text) == (404, "no_service")
