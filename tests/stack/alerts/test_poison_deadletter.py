"""Records on the risks topic that are not risk events go to the deadletter topic with their reason, as
scoring's bad input does, are counted, and never hold up the good records behind them. On the embedded stack
and on the real Kafka + PostgreSQL."""

from __future__ import annotations

import orjson
from prometheus_client.parser import text_string_to_metric_families

from shared.bus.port import OutMessage
from shared.codec import loads
from tests.stack.alerts.conftest import Stack, make_risk
from tests.stack.scoring.harness import read_topic


async def _publish_raw(stack: Stack, *messages: OutMessage) -> None:
    publisher = stack.bus.publisher()
    await publisher.start()
    try:
        await publisher.publish(list(messages))
    finally:
        await publisher.stop()


def _sample(exposition: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


async def test_poison_records_are_dead_lettered_with_their_reason_and_the_good_one_is_alerted(stack: Stack):
    app = await stack.start()
    risks = stack.topics.risks
    good = make_risk("acct-1", n=2, summary="Jo Champion left ACCT-1")
    invalid = make_risk("acct-1", n=1).model_dump(mode="json")
    del invalid["severity"]
    # Same key, hence same partition: the good record comes after both bad ones.
    await _publish_raw(stack,
                       OutMessage(risks, b"acct-1", b"{not json"),
                       OutMessage(risks, b"acct-1", orjson.dumps(invalid)),
                       OutMessage(risks, b"acct-1", good.to_json()))
    await app.wait_idle(timeout_s=30)   # the consumer went past them, not stuck retrying

    [alert] = (await app.http.get("/v1/alerts", params={"account_id": "acct-1"})).json()["items"]
    assert alert["risk_id"] == good.risk_id
    [dm] = await stack.slack.wait_for(1, "U100", timeout_s=10)
    assert good.summary in "\n".join(dm.all_text())

    dead = sorted((loads(v) for v in await read_topic(stack.bus, stack.topics.deadletter)),
                  key=lambda d: d["offset"])
    assert [(d["service"], d["source_topic"]) for d in dead] == [("alerts", risks), ("alerts", risks)]
    not_json, invalid_risk = dead
    assert not_json["reason"].startswith("not JSON: ") and not_json["value"] == "{not json"
    assert invalid_risk["reason"] == "invalid risk event: severity: Field required"
    assert loads(invalid_risk["value"]) == invalid
    assert invalid_risk["partition"] == not_json["partition"]
    assert invalid_risk["offset"] == not_json["offset"] + 1

    metrics = (await app.http.get("/metrics")).text
    assert _sample(metrics, "churnsignal_dead_letters_total", service="alerts", reason="not_json") == 1
    assert _sample(metrics, "churnsignal_dead_letters_total", service="alerts", reason="invalid_risk_event") == 1
    assert _sample(metrics, "churnsignal_alerts_risk_events_total", outcome="invalid") == 2
    assert app.app.state.consumer.healthy


async def test_a_restarted_consumer_does_not_dead_letter_the_same_records_again(stack: Stack):
    app = await stack.start()
    risks = stack.topics.risks
    await _publish_raw(stack, OutMessage(risks, b"acct-1", b"{not json"),
                       OutMessage(risks, b"acct-1", make_risk("acct-1").to_json()))
    await app.wait_idle(timeout_s=30)
    await app.stop()
    # The same group again: it resumes after the claimed positions, past the poison record.
    again = await stack.start()
    await _publish_raw(stack, OutMessage(risks, b"acct-2", make_risk("acct-2", csm="U200").to_json()))
    await again.wait_idle(timeout_s=30)
    dead = [loads(v) for v in await read_topic(stack.bus, stack.topics.deadletter)]
    assert [d["reason"][:9] for d in dead] == ["not JSON:"]
