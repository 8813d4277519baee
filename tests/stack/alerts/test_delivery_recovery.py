"""Delivery through the service: Retry-After is honoured, permanent failures are dead-lettered once,
pending deliveries left by a stopped instance are resumed, and the log never shows a secret."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from services.alerts.adapters.repository import AlertsRepository
from services.alerts.domain.content import render
from services.alerts.domain.targets import Target
from services.alerts.service.records import new_delivery
from shared.db import create_engine
from tests.stack.alerts.conftest import Stack, make_risk


async def metric(app, name: str, **labels: str) -> float:
    text = (await app.http.get("/metrics")).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def test_retry_after_delays_the_next_attempt_and_the_message_arrives_once(stack: Stack):
    stack.slack.script("U100", [(429, {"Retry-After": "2"})])
    app = await stack.start()
    await stack.publish(make_risk("acct-1", csm="U100"))
    await stack.slack.wait_for(1, "U100", timeout_s=15)
    await app.wait_idle()

    requests = stack.slack.requests("U100")
    assert [r.status for r in requests] == [429, 200]
    assert requests[1].arrived_at - requests[0].arrived_at >= 2.0
    assert len(stack.slack.messages("U100")) == 1

    [delivery] = [
        d
        for d in (await app.http.get("/v1/deliveries", params={"status": "sent"})).json()["items"]
        if d["channel"] == "slack_dm"
    ]
    assert [a["outcome"] for a in delivery["attempts"]] == ["retry", "sent"]
    assert "429" in delivery["attempts"][0]["error"]
    assert await metric(app, "churnsignal_notification_retries_total", receiver="slack_dm") == 1
    assert await metric(app, "churnsignal_notifications_total", receiver="slack_dm", outcome="sent") == 1


async def test_channel_not_found_is_dead_lettered_after_one_attempt(stack: Stack):
    hook = stack.slack.add_webhook("#cs-leadership", error="channel_not_found")
    routing = stack.routing_file(f"""
receivers:
  - name: leadership
    slack_webhook: {{url: "{hook}", channel: "#cs-leadership"}}
route:
  receiver: csm
  routes:
    - match: {{type: champion_left}}
      receiver: leadership
      continue: true
    - receiver: csm
""")
    app = await stack.start(routing_file=routing)
    await stack.publish(make_risk("acct-1", csm="U100"))
    await stack.slack.wait_for(1, "U100", timeout_s=15)
    await app.wait_idle()

    assert [r.status for r in stack.slack.requests("#cs-leadership")] == [404]
    body = (await app.http.get("/v1/deliveries", params={"status": "dead_letter"})).text
    [dead] = (await app.http.get("/v1/deliveries", params={"status": "dead_letter"})).json()["items"]
    assert dead["channel"] == "slack_webhook"
    assert dead["error_code"] == "channel_not_found"
    assert dead["attempt_count"] == 1 and [a["outcome"] for a in dead["attempts"]] == ["dead_letter"]
    assert hook not in body and hook.rsplit("/", 1)[1] not in body  # the webhook URL is a secret
    assert (
        await metric(app, "churnsignal_notifications_total", receiver="slack_webhook", outcome="dead_letter")
        == 1
    )
    assert (
        await metric(app, "churnsignal_dead_letters_total", service="alerts", reason="channel_not_found") == 1
    )
    # the CSM still got theirs
    assert len(stack.slack.messages("U100")) == 1
    assert len(await stack.smtp.wait_for(1)) == 1


async def test_pending_delivery_left_by_a_stopped_instance_is_resumed_once(stack: Stack):
    """A delivery claimed but never recorded (the instance died after the claim) is sent by the next one."""
    risk = make_risk("acct-9", csm="U400", summary="Claimed before the crash")
    target = Target(kind="slack_dm", address="U400", receiver="csm")
    notification = render(risk, target, "https://churnsignal.test")
    engine = create_engine(stack.database_url)
    now = datetime.now(UTC)
    try:
        async with engine.begin() as conn:
            repo = AlertsRepository(conn)
            [expired] = await repo.claim([new_delivery(notification, None)], now, now - timedelta(seconds=1))
            leased = render(
                risk,
                Target(kind="email", address="edsger@example.com", receiver="csm"),
                "https://churnsignal.test",
            )
            [held] = await repo.claim([new_delivery(leased, None)], now, now + timedelta(hours=1))
    finally:
        await engine.dispose()

    app = await stack.start()
    [msg] = await stack.slack.wait_for(1, "U400", timeout_s=10)
    assert "Claimed before the crash" in msg.text
    await app.wait_idle()
    items = {d["id"]: d for d in (await app.http.get("/v1/deliveries")).json()["items"]}
    assert items[expired.id]["status"] == "sent"
    # still leased by its (presumed alive) sender: not touched
    assert items[held.id]["status"] == "pending" and stack.smtp.messages() == []
    await app.stop()
    assert len(stack.slack.messages("U400")) == 1
