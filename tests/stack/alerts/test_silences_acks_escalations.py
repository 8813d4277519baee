"""Silences, acknowledgements, escalations and digests, driven through the risks topic and the API."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tests.stack.alerts.acceptance import Collector
from tests.stack.alerts.conftest import READ, Stack, make_risk
from tests.stack.alerts.test_delivery_recovery import metric


def in_future(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


async def test_silence_suppresses_its_account_and_types_until_deleted(stack: Stack):
    # sent as they come (no per-account grouping)
    app = await stack.start(routing_file=stack.routing_file("route: {receiver: csm, group_wait: 0}\n"))
    r = await app.http.post(
        "/v1/silences",
        json={
            "account_id": "acct-1",
            "types": ["champion_left"],
            "until": in_future(hours=1),
            "reason": "known: reorg",
        },
    )
    assert r.status_code == 201, r.text
    silence = r.json()
    assert silence["active"] and silence["created_by"] == "admin" and silence["types"] == ["champion_left"]

    c = Collector(stack.slack, stack.smtp)
    silenced = make_risk("acct-1", csm="U100", summary="silenced champion")
    other_type = make_risk(
        "acct-1", type_="usage_drop", severity="high", csm="U100", summary="usage, not silenced"
    )
    other_account = make_risk("acct-2", csm="U200", summary="another account, not silenced")
    await stack.publish(silenced, other_type, other_account)
    for receiver in ("slack:U100", "mail:ada@example.com"):
        c.want(receiver, other_type.summary, (0, 5))
    for receiver in ("slack:U200", "mail:grace@example.com"):
        c.want(receiver, other_account.summary, (0, 5))
    await app.wait_idle()
    assert await metric(app, "churnsignal_notifications_total", outcome="suppressed") == 2

    listed = (await app.http.get("/v1/silences", params={"account_id": "acct-1"})).json()["items"]
    assert [s["id"] for s in listed] == [silence["id"]]
    deleted = await app.http.delete(f"/v1/silences/{silence['id']}")
    assert deleted.status_code == 200 and deleted.json()["active"] is False
    assert (await app.http.get("/v1/silences")).json()["items"] == []
    assert len((await app.http.get("/v1/silences", params={"include_expired": "true"})).json()["items"]) == 1

    # After the silence: a new champion_left risk on acct-1 notifies again.
    again = make_risk("acct-1", csm="U100", n=2, summary="second champion left")
    t = c.now()
    await stack.publish(again)
    for receiver in ("slack:U100", "mail:ada@example.com"):
        c.want(receiver, again.summary, (t, t + 5))
    await c.check()


async def test_silence_requests_are_validated(stack: Stack):
    app = await stack.start()
    past = await app.http.post(
        "/v1/silences",
        json={
            "account_id": "a",
            "types": [],
            "until": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
            "reason": "r",
        },
    )
    assert past.status_code == 422 and "future" in past.text
    unknown = await app.http.post(
        "/v1/silences",
        json={"account_id": "a", "types": ["churn_vibes"], "until": in_future(hours=1), "reason": "r"},
    )
    assert unknown.status_code == 422 and "churn_vibes" in unknown.text
    naive = await app.http.post(
        "/v1/silences", json={"account_id": "a", "types": [], "until": "2999-01-01T00:00:00", "reason": "r"}
    )
    assert naive.status_code == 422
    extra = await app.http.post(
        "/v1/silences", json={"account_id": "a", "until": in_future(hours=1), "reason": "r", "typo": 1}
    )
    assert extra.status_code == 422 and "typo" in extra.text
    assert (await app.http.delete("/v1/silences/nope")).status_code == 404
    # scope admin only
    assert (await app.http.get("/v1/silences", headers=READ)).status_code == 403
    assert (await app.http.get("/v1/alerts", headers={"Authorization": ""})).status_code == 401


async def test_acknowledgement_stops_repeats(stack: Stack):
    routing = stack.routing_file("route:\n  receiver: csm\n  repeat_interval: 1s\n")
    # Repeats are checked when the test says (not every 0.2 s in the background), so a reminder can never
    # race the acknowledgement, however slow the machine.
    app = await stack.start(routing_file=routing, alerts_repeat_check_s=3600.0)
    periodic = app.app.state.periodic
    c = Collector(stack.slack, stack.smtp)
    risk = make_risk("acct-1", csm="U100", summary="champion gone, nobody reacted")
    await stack.publish(risk)
    # opened at ~0, one reminder once it is due (1 s later); acknowledged after it: no more reminders.
    c.want("slack:U100", "Critical · Champion left", (0, 4))
    c.want("mail:ada@example.com", "CRITICAL Champion left", (0, 4))
    c.want("slack:U100", "Reminder: Critical", (1, 6))
    c.want("mail:ada@example.com", "Reminder: CRITICAL", (1, 6))
    await stack.slack.wait_for(1, "U100", timeout_s=10)
    await stack.smtp.wait_for(1, timeout_s=10)
    deadline = asyncio.get_running_loop().time() + 30
    while await periodic.repeat_once() == 0:  # until the reminder is due and claimed
        assert asyncio.get_running_loop().time() < deadline, "the reminder never became due"
        await asyncio.sleep(0.1)
    await stack.slack.wait_for(2, "U100", timeout_s=10)
    await stack.smtp.wait_for(2, timeout_s=10)
    [alert] = (await app.http.get("/v1/alerts", params={"status": "open"})).json()["items"]
    acked = await app.http.post(f"/v1/alerts/{alert['id']}/ack")
    assert (
        acked.status_code == 200 and acked.json()["status"] == "acked" and acked.json()["acked_by"] == "admin"
    )
    await asyncio.sleep(2.5)  # two more repeat intervals: without the acknowledgement, a reminder is due
    assert await periodic.repeat_once() == 0
    await c.check(quiet_s=0.5)
    assert (await app.http.get("/v1/alerts", params={"status": "acked"})).json()["items"][0]["id"] == alert[
        "id"
    ]
    assert (await app.http.get("/v1/alerts", params={"status": "open"})).json()["items"] == []
    assert (await app.http.post("/v1/alerts/999999/ack")).status_code == 404


async def test_severity_escalation_notifies_again_even_after_ack(stack: Stack):
    # sent as they come (no per-account grouping)
    app = await stack.start(routing_file=stack.routing_file("route: {receiver: csm, group_wait: 0}\n"))
    c = Collector(stack.slack, stack.smtp)
    opened = make_risk(
        "acct-5", type_="sentiment_drop", severity="medium", csm="U300", summary="NPS 3 from CFO"
    )
    await stack.publish(opened)
    for receiver in ("slack:U300", "mail:alan@example.com"):
        c.want(receiver, opened.summary, (0, 5))
    await stack.slack.wait_for(1, "U300", timeout_s=10)
    await app.wait_idle()
    [alert] = (await app.http.get("/v1/alerts", params={"account_id": "acct-5"})).json()["items"]
    assert (await app.http.post(f"/v1/alerts/{alert['id']}/ack")).status_code == 200

    same = make_risk(
        "acct-5",
        type_="sentiment_drop",
        severity="medium",
        csm="U300",
        seq=2,
        transition="updated",
        summary="another detractor, same severity",
    )
    higher = make_risk(
        "acct-5",
        type_="sentiment_drop",
        severity="high",
        csm="U300",
        seq=3,
        transition="updated",
        summary="sentiment trending down across contacts",
    )
    t = c.now()
    await stack.publish(same, higher)
    c.want("slack:U300", "Escalated: High", (t, t + 5))
    c.want("mail:alan@example.com", "Escalated: HIGH", (t, t + 5))
    await c.check()
    [alert] = (await app.http.get("/v1/alerts", params={"account_id": "acct-5"})).json()["items"]
    assert alert["severity"] == "high" and alert["summary"] == higher.summary


async def test_low_severity_risks_are_grouped_into_one_digest_per_csm(stack: Stack):
    # one digest per target (group_by: []) and low risks sent, not held for the daily digest (digest_only: {})
    routing = stack.routing_file("route:\n  receiver: csm\n  group_wait: 3s\n  group_by: []\n  digest_only: {}\n")
    app = await stack.start(routing_file=routing)
    c = Collector(stack.slack, stack.smtp)
    lows = [
        make_risk(f"acct-{i}", type_="health_drop", severity="low", csm="U100", summary=f"health dipped {i}")
        for i in range(1, 4)
    ]
    alone = make_risk("acct-9", type_="health_drop", severity="low", csm="U200", summary="lonely dip")
    urgent = make_risk("acct-7", csm="U100", summary="not a low one: sent at once")
    await stack.publish(*lows, alone, urgent)
    # The urgent one is not held for the group: it arrives before the digests (which wait 3 s), an order
    # rather than a time limit, so a slow delivery cannot fail it.
    c.want("slack:U100", urgent.summary, (0, 8))
    c.want("mail:ada@example.com", urgent.summary, (0, 8))
    c.want("slack:U100", "3 low-severity risks to review", (3, 8))
    c.want("mail:ada@example.com", "3 low-severity risks to review", (3, 8))
    c.want("slack:U200", alone.summary, (3, 8))
    c.want("mail:grace@example.com", alone.summary, (3, 8))
    got = await c.check()
    first_digest = min(r.at for r in got if r.receiver in ("slack:U200", "mail:grace@example.com")
                       or "low-severity" in r.text)
    assert all(r.at < first_digest for r in got if urgent.summary in r.text)
    digest = next(r for r in got if r.receiver == "slack:U100" and "low-severity" in r.text)
    assert all(f"health dipped {i}" in digest.text for i in range(1, 4))
    await app.wait_idle()
    kinds = sorted(d["kind"] for d in (await app.http.get("/v1/deliveries")).json()["items"])
    assert kinds == ["digest", "digest", "opened", "opened", "opened", "opened"]


async def test_alert_listing_filters_and_pages(stack: Stack):
    app = await stack.start()
    # accounts without a CSM (and no fallback receiver): alerts are recorded, nobody is notified
    risks = [make_risk(f"acct-{i}", csm=None, summary=f"risk {i}") for i in range(5)]
    await stack.publish(*risks, make_risk("acct-0", csm=None, seq=2, transition="resolved"))
    await app.wait_idle(timeout_s=15)
    seen: list[int] = []
    cursor = None
    for _ in range(10):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await app.http.get("/v1/alerts", params=params)).json()
        seen += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5
    resolved = (await app.http.get("/v1/alerts", params={"status": "resolved"})).json()["items"]
    assert [a["account_id"] for a in resolved] == ["acct-0"]
    assert len((await app.http.get("/v1/alerts", params={"status": "open"})).json()["items"]) == 4
    only = (await app.http.get("/v1/alerts", params={"account_id": "acct-3"})).json()["items"]
    assert [a["summary"] for a in only] == ["risk 3"]
    assert (await app.http.get("/v1/alerts", params={"status": "bogus"})).status_code == 422
    assert (await app.http.get("/v1/deliveries", params={"status": "bogus"})).status_code == 422
    assert (await app.http.get("/v1/alerts", params={"cursor": "x"})).status_code == 400
    assert (await app.http.get("/v1/deliveries")).json()["items"] == []
    assert await metric(app, "churnsignal_alerts_risk_events_total", outcome="unrouted") == 6
