"""Slack channels against the local fake Slack (a real HTTP server) through the shared aiohttp session:
retries, Retry-After, dead letters, and errors that never carry the webhook URL or the token."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from services.alerts.domain.content import Notification, render
from services.alerts.domain.targets import Target
from services.alerts.notify.delivery import Deliverer
from services.alerts.notify.http import new_session
from services.alerts.notify.secrets import SecretLookup
from services.alerts.notify.slack_api import SlackApiChannel
from services.alerts.notify.slack_webhook import SlackWebhookChannel
from shared.errors import PermanentFailure, RetryableFailure
from tests.domain.alerts.factories import make_risk
from tests.support.slack import FakeSlack

HOSTILE = "Usage fell <!channel> — <http://evil.example|reset your password> <@U0BOSS>"


@pytest.fixture(scope="module")
def slack_server() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def slack(slack_server: FakeSlack) -> FakeSlack:
    slack_server.reset()
    slack_server.add_channel("U0DANA")
    return slack_server


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_session() as session:
        yield session


def hook_target(name: str = "cs-alerts") -> Target:
    return Target(kind="slack_webhook", address=name, receiver="team", url_ref=f"HOOK_{name.upper()}")


def dm_target(user: str = "U0DANA") -> Target:
    return Target(kind="slack_dm", address=user, receiver="csm")


def note(target: Target, risk_id: str = "acme:usage_drop", **risk) -> Notification:
    return render(make_risk(risk_id=risk_id, **risk), target, "http://cs.example")


def webhook_setup(slack: FakeSlack, client: aiohttp.ClientSession, channel: str = "#cs-alerts",
                  **deliverer_kwargs) -> tuple[Deliverer, list, str]:
    url = slack.add_webhook(channel)
    secrets = SecretLookup({"HOOK_CS-ALERTS": url, "HOOK_CS_ALERTS": url})
    attempts: list = []
    deliverer = Deliverer({"slack_webhook": SlackWebhookChannel(client, secrets)},
                          on_attempt=lambda n, no, outcome, err, d: attempts.append((no, outcome, err)),
                          base_backoff_s=0.05, **deliverer_kwargs)
    return deliverer, attempts, url


def api_setup(slack: FakeSlack, client: aiohttp.ClientSession,
              token: str | None = None) -> tuple[Deliverer, list]:
    attempts: list = []
    channel = SlackApiChannel(client, token or slack.token, base_url=slack.api_url)
    deliverer = Deliverer({"slack_dm": channel}, base_backoff_s=0.05,
                          on_attempt=lambda n, no, outcome, err, d: attempts.append((no, outcome, err)))
    return deliverer, attempts


async def test_webhook_delivers_escaped_blocks(slack: FakeSlack, client: aiohttp.ClientSession) -> None:
    deliverer, attempts, _ = webhook_setup(slack, client)
    assert await deliverer.deliver(note(hook_target(), summary=HOSTILE)) == "sent"
    [message] = slack.messages("#cs-alerts")
    assert message.special_tokens() == []
    assert "&lt;!channel&gt;" in message.blocks[1]["text"]["text"]
    assert [(no, outcome) for no, outcome, _ in attempts] == [(1, "sent")]


async def test_429_with_retry_after_delays_the_next_attempt_and_delivers_once(
        slack: FakeSlack, client: aiohttp.ClientSession) -> None:
    deliverer, attempts, _ = webhook_setup(slack, client)
    slack.script("#cs-alerts", [(429, {"Retry-After": "2"})])
    assert await deliverer.deliver(note(hook_target())) == "sent"
    first, second = slack.requests("#cs-alerts")
    assert (first.status, second.status) == (429, 200)
    assert second.arrived_at - first.arrived_at >= 2.0
    assert len(slack.messages("#cs-alerts")) == 1
    assert [(no, outcome) for no, outcome, _ in attempts] == [(1, "retry"), (2, "sent")]
    assert attempts[0][2].details["retry_after"] == 2.0


async def test_404_channel_not_found_is_dead_lettered_after_one_attempt(
        slack: FakeSlack, client: aiohttp.ClientSession) -> None:
    deliverer, attempts, url = webhook_setup(slack, client)
    slack.break_webhook("#cs-alerts", "channel_not_found")
    result = await deliverer.deliver_detailed(note(hook_target()))
    assert (result.outcome, result.attempts, result.code) == ("dead_letter", 1, "channel_not_found")
    assert len(slack.requests("#cs-alerts")) == 1
    assert slack.messages() == []
    assert url not in str(result.error) and "T0000" not in str(result.error)


async def test_unknown_webhook_is_permanent(slack: FakeSlack, client: aiohttp.ClientSession) -> None:
    channel = SlackWebhookChannel(client, SecretLookup({"HOOK": f"{slack.base_url}/services/T/B/nope"}))
    target = Target(kind="slack_webhook", address="gone", receiver="team", url_ref="HOOK")
    with pytest.raises(PermanentFailure) as info:
        await channel.send(note(target))
    assert info.value.details["code"] == "no_service"


async def test_5xx_is_retried_then_delivered(slack: FakeSlack, client: aiohttp.ClientSession) -> None:
    deliverer, attempts, _ = webhook_setup(slack, client)
    slack.script("#cs-alerts", [(500, {}), (503, {})])
    assert await deliverer.deliver(note(hook_target())) == "sent"
    assert [r.status for r in slack.requests("#cs-alerts")] == [500, 503, 200]
    assert [outcome for _, outcome, _ in attempts] == ["retry", "retry", "sent"]
    assert len(slack.messages("#cs-alerts")) == 1


async def test_persistent_5xx_ends_failed_at_the_deadline(slack: FakeSlack,
                                                          client: aiohttp.ClientSession) -> None:
    deliverer, attempts, _ = webhook_setup(slack, client, deadline_s=1.5)
    slack.script("#cs-alerts", [(502, {})] * 20)
    assert await deliverer.deliver(note(hook_target())) == "failed"
    assert attempts[-1][1] == "failed"
    assert slack.messages() == []


async def test_invalid_blocks_are_permanent(slack: FakeSlack, client: aiohttp.ClientSession) -> None:
    deliverer, _, _ = webhook_setup(slack, client)
    n = note(hook_target())
    too_many = Notification(**{**n.__dict__, "slack_blocks": [{"type": "divider"}] * 51})
    result = await deliverer.deliver_detailed(too_many)
    assert (result.outcome, result.code) == ("dead_letter", "invalid_blocks")


async def test_fake_slack_rate_limit_is_honoured_without_our_limiter(
        slack: FakeSlack, client: aiohttp.ClientSession) -> None:
    # With our limiter off, the second message meets Slack's 1/s limit (429, Retry-After: 1) and is retried.
    deliverer, _, _ = webhook_setup(slack, client, rate_interval_s=0.0)
    assert await deliverer.deliver(note(hook_target(), risk_id="r1")) == "sent"
    assert await deliverer.deliver(note(hook_target(), risk_id="r2")) == "sent"
    statuses = [r.status for r in slack.requests("#cs-alerts")]
    assert statuses == [200, 429, 200]
    first, second = slack.messages("#cs-alerts")
    assert second.arrived_at - first.arrived_at >= 0.9
    assert first.payload != second.payload


async def test_our_limiter_keeps_slack_from_rate_limiting(slack: FakeSlack,
                                                          client: aiohttp.ClientSession) -> None:
    deliverer, _, _ = webhook_setup(slack, client)
    assert await deliverer.deliver(note(hook_target(), risk_id="r1")) == "sent"
    assert await deliverer.deliver(note(hook_target(), risk_id="r2")) == "sent"
    assert [r.status for r in slack.requests("#cs-alerts")] == [200, 200]


async def test_missing_webhook_url_is_permanent_and_named_by_reference(client: aiohttp.ClientSession) -> None:
    channel = SlackWebhookChannel(client, SecretLookup({}, environ={}))
    with pytest.raises(PermanentFailure, match="HOOK_CS-ALERTS") as info:
        await channel.send(note(hook_target()))
    assert info.value.details["code"] == "not_configured"


async def test_connection_error_is_retryable_and_hides_the_url(client: aiohttp.ClientSession,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    with FakeSlack() as stopped:
        url = stopped.add_webhook("#x") + "?token=supersecret"
    channel = SlackWebhookChannel(client, SecretLookup({"HOOK_CS-ALERTS": url}), timeout_s=2)
    with pytest.raises(RetryableFailure) as info:
        await channel.send(note(hook_target()))
    assert info.value.details["code"] == "ClientConnectorError"
    assert "supersecret" not in repr(info.value) and "/services/" not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    deliverer = Deliverer({"slack_webhook": channel}, deadline_s=0.3, base_backoff_s=0.05)
    assert await deliverer.deliver(note(hook_target())) == "failed"
    assert "supersecret" not in caplog.text


# --- Web API chat.postMessage -----------------------------------------------------------------------

async def test_dm_to_the_csm(slack: FakeSlack, client: aiohttp.ClientSession) -> None:
    deliverer, _ = api_setup(slack, client)
    assert await deliverer.deliver(note(dm_target(), summary=HOSTILE)) == "sent"
    [message] = slack.messages("U0DANA")
    assert message.via == "api" and message.special_tokens() == []
    assert message.payload["channel"] == "U0DANA"


async def test_dm_unknown_user_is_dead_lettered(slack: FakeSlack, client: aiohttp.ClientSession) -> None:
    deliverer, attempts = api_setup(slack, client)
    result = await deliverer.deliver_detailed(note(dm_target("U0NOBODY")))
    assert (result.outcome, result.attempts, result.code) == ("dead_letter", 1, "channel_not_found")
    assert len(slack.requests("U0NOBODY")) == 1


async def test_dm_bad_token_is_permanent_and_never_echoed(slack: FakeSlack, client: aiohttp.ClientSession,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    deliverer, _ = api_setup(slack, client, token="xoxb-wrong-token-123")
    result = await deliverer.deliver_detailed(note(dm_target()))
    assert (result.outcome, result.code) == ("dead_letter", "invalid_auth")
    assert "xoxb-wrong-token-123" not in str(result.error) and "xoxb-wrong-token-123" not in caplog.text


async def test_dm_ok_false_retryable_errors_are_retried(slack: FakeSlack, client: aiohttp.ClientSession) -> None:
    deliverer, attempts = api_setup(slack, client)
    slack.script("U0DANA", [(200, {}, {"ok": False, "error": "internal_error"}),
                            (429, {"Retry-After": "1"}, {"ok": False, "error": "ratelimited"})])
    assert await deliverer.deliver(note(dm_target())) == "sent"
    assert [outcome for _, outcome, _ in attempts] == ["retry", "retry", "sent"]
    assert [err.details["code"] for _, _, err in attempts[:2]] == ["internal_error", "ratelimited"]
    requests = slack.requests("U0DANA")
    assert requests[2].arrived_at - requests[1].arrived_at >= 1.0
    assert len(slack.messages("U0DANA")) == 1


async def test_dm_ok_false_other_errors_are_permanent(slack: FakeSlack, client: aiohttp.ClientSession) -> None:
    deliverer, attempts = api_setup(slack, client)
    slack.script("U0DANA", [(200, {}, {"ok": False, "error": "not_in_channel"})])
    result = await deliverer.deliver_detailed(note(dm_target()))
    assert (result.outcome, result.attempts, result.code) == ("dead_letter", 1, "not_in_channel")


async def test_dm_2xx_that_is_not_a_json_object_is_retryable(slack: FakeSlack,
                                                             client: aiohttp.ClientSession) -> None:
    deliverer, attempts = api_setup(slack, client)
    slack.script("U0DANA", [(200, {}, "<html>upstream hiccup</html>"), (200, {}, "[1, 2]")])
    assert await deliverer.deliver(note(dm_target())) == "sent"
    assert [outcome for _, outcome, _ in attempts] == ["retry", "retry", "sent"]
    assert [err.details["code"] for _, _, err in attempts[:2]] == ["bad_response", "bad_response"]
    assert len(slack.messages("U0DANA")) == 1


async def test_dm_5xx_and_429_are_retryable_with_the_error_of_the_body(
        slack: FakeSlack, client: aiohttp.ClientSession) -> None:
    channel = SlackApiChannel(client, slack.token, base_url=slack.api_url)
    slack.script("U0DANA", [(503, {}), (429, {"Retry-After": "3"})])
    with pytest.raises(RetryableFailure) as first:
        await channel.send(note(dm_target()))
    with pytest.raises(RetryableFailure) as second:
        await channel.send(note(dm_target()))
    assert first.value.details == {"retry_after": None, "status": 503, "code": "internal_error"}
    assert second.value.details == {"retry_after": 3.0, "status": 429, "code": "ratelimited"}


async def test_dm_connection_error_hides_the_token_and_the_url(client: aiohttp.ClientSession) -> None:
    with FakeSlack() as stopped:
        api_url = stopped.api_url
    channel = SlackApiChannel(client, "xoxb-secret-token-987", base_url=api_url, timeout_s=2)
    with pytest.raises(RetryableFailure) as info:
        await channel.send(note(dm_target()))
    assert info.value.details == {"retry_after": None, "code": "ClientConnectorError"}
    assert "xoxb-secret-token-987" not in repr(info.value) and api_url not in repr(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("base_url", ["slack.example/api/xoxb-secret-in-url", "ftp://slack.example/xoxb-secret"])
async def test_dm_invalid_api_url_is_permanent_and_not_echoed(client: aiohttp.ClientSession,
                                                              base_url: str) -> None:
    channel = SlackApiChannel(client, "xoxb-secret-token-987", base_url=base_url)
    with pytest.raises(PermanentFailure) as info:
        await channel.send(note(dm_target()))
    assert info.value.details == {"code": "invalid_url"}
    assert str(info.value) == f"{dm_target().key}: Slack API URL is not a valid http(s) URL"
    assert "xoxb-secret" not in repr(info.value) and info.value.__cause__ is None


async def test_webhook_invalid_url_is_permanent_and_not_echoed(client: aiohttp.ClientSession) -> None:
    url = "https://hooks.slack.example:70000/services/T0/B0/supersecret"
    channel = SlackWebhookChannel(client, SecretLookup({"HOOK_CS-ALERTS": url}))
    with pytest.raises(PermanentFailure) as info:
        await channel.send(note(hook_target()))
    assert info.value.details == {"code": "invalid_url"}
    assert "supersecret" not in repr(info.value) and info.value.__cause__ is None
