"""Every expected notification arrives in its window and nothing else does: through duplicate publishes,
a rewind of the consumer, and a restart of the service in the middle of the sequence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.stack.alerts.acceptance import Collector
from tests.stack.alerts.conftest import Stack, make_risk


async def test_each_notification_exactly_once_through_redelivery_and_restart(stack: Stack):
    # Sent as they come (no per-account grouping): the windows below are about exactly-once, not grouping.
    routing = stack.routing_file("route: {receiver: csm, group_wait: 0}\n")
    app = await stack.start(routing_file=routing)
    c = Collector(stack.slack, stack.smtp)

    # t=0: two risks open; one of them is published twice.
    a1 = make_risk("acct-1", csm="U100", summary="Jo Champion left ACCT-1")
    b1 = make_risk(
        "acct-2", type_="usage_drop", severity="high", csm="U200", summary="Usage fell 60% at ACCT-2"
    )
    await stack.publish(a1, b1, a1)
    for receiver in ("slack:U100", "mail:ada@example.com"):
        c.want(receiver, a1.summary, (0, 5))
    for receiver in ("slack:U200", "mail:grace@example.com"):
        c.want(receiver, b1.summary, (0, 5))

    # t=1: an update without a severity rise notifies nobody; b1 again is a duplicate.
    await c.at(1.0)
    b2 = make_risk(
        "acct-2",
        type_="usage_drop",
        severity="high",
        csm="U200",
        seq=2,
        transition="updated",
        summary="Usage still down at ACCT-2",
    )
    await stack.publish(b2, b1)

    # t=1.5: the severity rises: one escalation per receiver.
    await c.at(1.5)
    b3 = make_risk(
        "acct-2",
        type_="usage_drop",
        severity="critical",
        csm="U200",
        seq=3,
        transition="updated",
        summary="Usage collapsed at ACCT-2",
    )
    await stack.publish(b3)
    for receiver in ("slack:U200", "mail:grace@example.com"):
        c.want(receiver, b3.summary, (1.5, 6))

    # t=3: the service stops mid-sequence; events keep coming meanwhile, duplicates among them.
    await c.at(3.0)
    await stack.slack.wait_for(3, timeout_s=5)
    await app.stop()
    d1 = make_risk(
        "acct-3", type_="ticket_spike", severity="high", csm="U300", summary="Tickets tripled at ACCT-3"
    )
    a2 = make_risk("acct-1", csm="U100", seq=2, transition="resolved", summary="Champion replaced at ACCT-1")
    await stack.publish(d1, a1, b3, a2)
    for receiver in ("slack:U300", "mail:alan@example.com"):
        c.want(receiver, d1.summary, (3.0, 12))

    # A new instance on the same database takes over.
    app2 = await stack.start(routing_file=routing)
    await app2.wait_idle(timeout_s=15)

    # Rewind the consumer to the beginning and publish every event once more: all no-ops.
    sub = app2.app.state.consumer.subscriber
    for tp in sub.assignment():
        sub.seek(tp, 0)
    await stack.publish(a1, b1, b2, b3, d1, a2)
    await app2.wait_idle(timeout_s=15)

    got = await c.check(quiet_s=2.0)
    assert len(got) == 8

    # The delivery log agrees: 8 sent, none pending or failed, one attempt each.
    sent = (await app2.http.get("/v1/deliveries", params={"status": "sent"})).json()["items"]
    assert len(sent) == 8
    assert all(d["attempt_count"] == 1 and len(d["attempts"]) == 1 for d in sent)
    for status in ("pending", "failed", "dead_letter"):
        assert (await app2.http.get("/v1/deliveries", params={"status": status})).json()["items"] == []
    alerts = {a["account_id"]: a for a in (await app2.http.get("/v1/alerts")).json()["items"]}
    assert alerts["acct-1"]["status"] == "resolved"
    assert alerts["acct-2"]["severity"] == "critical" and alerts["acct-2"]["status"] == "open"
    assert alerts["acct-3"]["status"] == "open"


async def test_risks_opening_together_on_one_account_give_one_message_each_and_the_digest_fires_on_time(
    stack: Stack,
):
    # The daily digest at a time of day a few seconds from now (UTC), to the account's CSM.
    at = (datetime.now(UTC) + timedelta(seconds=6)).strftime("%H:%M:%S")
    routing = stack.routing_file(
        "receivers:\n"
        "  - name: csm\n"
        "    slack_dm: {}\n"
        "    email: {to: csm}\n"
        f'    digest: {{at: "{at}", timezone: UTC}}\n'
        "route:\n"
        "  receiver: csm\n"
        "  group_wait: 1s\n"
    )
    await stack.start(routing_file=routing)
    c = Collector(stack.slack, stack.smtp)

    # t=0: three risks of one account open together (none critical): one message per target after 1 s.
    risks = [
        make_risk("acct-1", type_="usage_drop", severity="medium", summary="Usage fell at ACCT-1"),
        make_risk("acct-1", type_="ticket_spike", severity="high", summary="Tickets tripled at ACCT-1"),
        make_risk("acct-1", type_="sentiment_drop", severity="medium", summary="NPS fell at ACCT-1"),
    ]
    await stack.publish(*risks)
    for receiver in ("slack:U100", "mail:ada@example.com"):
        c.want(receiver, "3 risks", (1.0, 4.0))

    # t=6: the daily digest lists the three open risks, once per target.
    for receiver in ("slack:U100", "mail:ada@example.com"):
        c.want(receiver, "Daily digest", (4.0, 10.0))

    got = await c.check(quiet_s=2.0)
    grouped = [g for g in got if "3 risks" in g.text]
    for g in grouped:  # worst first: the high risk before the two medium ones
        assert g.text.index("Tickets tripled") < g.text.index("Usage fell")
        assert "NPS fell" in g.text
