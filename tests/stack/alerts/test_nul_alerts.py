"""U+0000 never reaches the alerts database: a risk event carrying one is skipped (counted, never retried
forever), silences carrying one are a 422, and path or query parameters carrying one are a 400. On the
embedded stack and on the real Kafka + PostgreSQL, whose text cannot hold U+0000 at all."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from shared.bus.port import OutMessage
from tests.stack.alerts.conftest import Stack, make_risk

NUL_MESSAGE = "must not contain a NUL character (U+0000)"


def _sample(exposition: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


async def _publish_raw(stack: Stack, *messages: OutMessage) -> None:
    publisher = stack.bus.publisher()
    await publisher.start()
    try:
        await publisher.publish(list(messages))
    finally:
        await publisher.stop()


async def test_a_risk_event_with_a_nul_is_skipped_and_the_next_one_is_alerted(stack: Stack):
    app = await stack.start()
    poisoned = make_risk("acct-1", n=1).model_copy(update={"summary": "Jo Champion\u0000 left"})
    good = make_risk("acct-1", n=2, summary="Jo Champion left ACCT-1")
    # Same account, hence same partition: the good one comes after the poisoned one.
    await _publish_raw(stack, OutMessage(stack.topics.risks, b"acct-1", poisoned.to_json()),
                       OutMessage(stack.topics.risks, b"acct-1", good.to_json()))
    await app.wait_idle(timeout_s=30)  # the claim is not stuck retrying the batch

    [alert] = (await app.http.get("/v1/alerts", params={"account_id": "acct-1"})).json()["items"]
    assert alert["risk_id"] == good.risk_id and alert["summary"] == good.summary
    [dm] = await stack.slack.wait_for(1, "U100", timeout_s=10)
    assert good.summary in "\n".join(dm.all_text())
    metrics = (await app.http.get("/metrics")).text
    assert _sample(metrics, "churnsignal_alerts_risk_events_total", outcome="invalid") == 1
    assert _sample(metrics, "churnsignal_dead_letters_total", service="alerts", reason="invalid_risk_event") == 1
    assert app.app.state.consumer.healthy


async def test_a_silence_with_a_nul_is_a_422_naming_the_field_and_nothing_is_stored(stack: Stack):
    app = await stack.start()
    base: dict[str, Any] = {"account_id": "acct-1", "types": ["usage_drop"], "until": "2099-01-01T00:00:00Z",
                            "reason": "renewal call"}
    for over, loc in [({"account_id": "acct\u0000-1"}, ["body", "account_id"]),
                      ({"reason": "call\u0000"}, ["body", "reason"]),
                      ({"types": ["usage_drop\u0000"]}, ["body", "types", 0])]:
        resp = await app.http.post("/v1/silences", json={**base, **over})
        assert resp.status_code == 422, resp.text
        assert resp.json()["errors"] == [{"loc": loc, "msg": NUL_MESSAGE}]
    assert (await app.http.get("/v1/silences")).json()["items"] == []
    created = await app.http.post("/v1/silences", json=base)
    assert created.status_code == 201, created.text


async def test_a_nul_in_a_query_or_path_parameter_is_a_400_not_a_database_error(stack: Stack):
    app = await stack.start()
    await stack.publish(make_risk("acct-1"))
    await app.wait_idle(timeout_s=30)
    for url, part in [("/v1/alerts?account_id=%00", "query string"),
                      ("/v1/alerts?account_id=acct-1%00&status=open", "query string"),
                      ("/v1/silences?cursor=%00", "query string"),
                      ("/v1/silences/%00", "path")]:
        method = "DELETE" if url.startswith("/v1/silences/") else "GET"
        resp = await app.http.request(method, url)
        assert resp.status_code == 400, (url, resp.status_code, resp.text)
        assert resp.json() == {"error": f"the request {part} {NUL_MESSAGE}"}
    # the same requests without the NUL reach the database and answer
    [alert] = (await app.http.get("/v1/alerts", params={"account_id": "acct-1"})).json()["items"]
    assert alert["account_id"] == "acct-1"
    assert (await app.http.delete("/v1/silences/none-such")).status_code == 404
