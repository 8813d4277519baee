"""The alerts pipeline's rules on the in-memory store (no database, no bus): routing, each notification
claimed once, stale and redelivered events, repeat_interval, acknowledgements, silences, send_resolved,
digests, and delivery outcomes (dead letter on a permanent failure, expired leases resumed).

The same rules hold on SQLite and PostgreSQL: tests/stack/alerts/test_claim_transaction.py, test_claim_pg.py,
test_policy.py and test_delivery.py check them through the real stores and the running app.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.alerts.domain.actions import ACK_ACTION
from services.alerts.domain.content import Notification, render
from services.alerts.domain.policy import AlertState, plan_target
from services.alerts.domain.routing import RoutingTree, fallback_receiver
from services.alerts.domain.targets import Target
from services.alerts.entrypoints.periodic import PeriodicTasks
from services.alerts.notify.delivery import Deliverer
from services.alerts.service.dispatch import DeliveryRunner
from services.alerts.service.pipeline import AlertPipeline, ClaimResult
from services.alerts.service.records import SilenceRow, new_delivery
from shared.bus.port import TopicPartition
from shared.errors import PermanentFailure
from shared.metrics import AlertsMetrics
from shared.risks import RiskEvent
from tests.domain.alerts.factories import make_risk, without_account_grouping
from tests.support.alerts_store import InMemoryAlertsStore

TP = TopicPartition("t.risks", 0)
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CSM_TARGETS = ["email:dana@vendor.example", "slack_dm:U0DANA"]
ROUTING = """
route:
  receiver: csm
  repeat_interval: 10m
  group_wait: 1m
  send_resolved: true
"""


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def pipeline(clock: Clock, tree: RoutingTree | None = None, *, grouping: bool = False) -> AlertPipeline:
    """`grouping=False`: the tree's root with the settings that were the defaults before risks were grouped
    per account (only low severity waits `group_wait`, one digest per target, no digest-only risks), which
    the tests up to the per-account grouping section are written for."""
    tree = tree or RoutingTree.default(None)
    if not grouping:
        tree = without_account_grouping(tree)
    return AlertPipeline(
        tree,
        public_url="https://churnsignal.test",
        enabled=None,
        lease=timedelta(seconds=30),
        metrics=AlertsMetrics(CollectorRegistry()),
        clock=clock,
    )


async def claim(store: InMemoryAlertsStore, p: AlertPipeline, risks: list[RiskEvent], offset: int = 1) -> ClaimResult:
    async with store.transaction() as tx:
        return await p.claim_risks(tx, risks, {TP: offset})


async def repeats(store: InMemoryAlertsStore, p: AlertPipeline) -> ClaimResult:
    async with store.begin() as tx:
        return await p.claim_repeats(tx)


async def digests(store: InMemoryAlertsStore, p: AlertPipeline) -> ClaimResult:
    async with store.begin() as tx:
        return await p.claim_digests(tx)


def suppressed(p: AlertPipeline) -> float:
    return sum(
        s.value
        for metric in p.metrics.notifications.collect()
        for s in metric.samples
        if s.name.endswith("_total") and s.labels["outcome"] == "suppressed"
    )


def keys(result: ClaimResult) -> list[str]:
    return sorted(d.target_key for d in result.deliveries)


# -- routing and claiming once ---------------------------------------------------------------------
async def test_a_risk_is_claimed_once_per_routed_target_and_an_unrouted_one_is_counted():
    store, clock = InMemoryAlertsStore(), Clock()
    p = pipeline(clock)
    routed = make_risk(risk_id="acme:usage_drop:1")
    nobody = make_risk(risk_id="solo:usage_drop:1", account_id="solo", csm=False)
    result = await claim(store, p, [routed, nobody], offset=2)
    assert keys(result) == CSM_TARGETS
    assert {d.kind for d in result.deliveries} == {"opened"}
    assert result.outcomes == {"applied": 2, "unrouted": 1}
    assert {d.status for d in store.deliveries()} == {"pending"}


async def test_the_fallback_receiver_hears_of_a_risk_nobody_else_would():
    store, clock = InMemoryAlertsStore(), Clock()
    p = pipeline(clock, RoutingTree.default(fallback_receiver("ops@vendor.example")))
    result = await claim(store, p, [make_risk(account_id="solo", risk_id="solo:usage_drop:1", csm=False)])
    assert keys(result) == ["email:ops@vendor.example"]
    assert result.outcomes == {"applied": 1}


async def test_a_redelivered_batch_claims_nothing_new_and_positions_never_move_back():
    store, clock = InMemoryAlertsStore(), Clock()
    p = pipeline(clock)
    risks = [make_risk(), make_risk(risk_id="solo:usage_drop:1", account_id="solo", csm=False)]
    first = await claim(store, p, risks, offset=2)
    again = await claim(store, p, [*risks, risks[0]], offset=1)  # a rewound consumer
    assert keys(first) == CSM_TARGETS
    assert again.deliveries == [] and again.outcomes == {"duplicate": 3}
    assert await store.positions([TP]) == {TP: 2}
    assert len(store.deliveries()) == 2


async def test_a_duplicate_inside_one_batch_is_applied_once():
    store, clock = InMemoryAlertsStore(), Clock()
    risk = make_risk()
    result = await claim(store, pipeline(clock), [risk, risk])
    assert result.outcomes == {"applied": 1, "duplicate": 1}
    assert keys(result) == CSM_TARGETS


async def test_opened_and_escalated_in_one_batch_both_notify_and_a_late_older_event_changes_nothing():
    store, clock = InMemoryAlertsStore(), Clock()
    p = pipeline(clock)
    opened = make_risk(severity="high")
    escalated = make_risk(severity="critical", seq=2, transition="updated")
    both = await claim(store, p, [opened, escalated])
    late = make_risk(severity="medium", seq=1, transition="updated").model_copy(
        update={"event_id": "acme:usage_drop:1:1b"}
    )
    stale = await claim(store, p, [late], offset=3)
    assert sorted((d.kind, d.channel) for d in both.deliveries) == [
        ("escalated", "email"),
        ("escalated", "slack_dm"),
        ("opened", "email"),
        ("opened", "slack_dm"),
    ]
    assert stale.deliveries == [] and stale.outcomes == {"stale": 1}
    alert = (await store.alerts_by_risk([opened.risk_id]))[opened.risk_id]
    assert alert.severity == "critical" and alert.last_seq == 2


async def test_an_update_without_a_severity_rise_does_not_notify_again():
    store, clock = InMemoryAlertsStore(), Clock()
    p = pipeline(clock)
    await claim(store, p, [make_risk(severity="high")])
    clock.advance(minutes=1)
    result = await claim(store, p, [make_risk(severity="high", seq=2, transition="updated")], offset=2)
    assert result.deliveries == [] and result.outcomes == {"applied": 1}


# -- repeat_interval and acknowledgements --------------------------------------------------------------
async def test_repeats_come_every_repeat_interval_once_each_until_acknowledged():
    store, clock = InMemoryAlertsStore(), Clock()
    p = pipeline(clock, RoutingTree.from_yaml(ROUTING))
    await claim(store, p, [make_risk()])
    clock.advance(minutes=9)
    assert (await repeats(store, p)).deliveries == []  # not due yet
    clock.advance(minutes=1)
    first = await repeats(store, p)
    assert keys(first) == CSM_TARGETS and {d.kind for d in first.deliveries} == {"repeat"}
    assert first.outcomes == {"repeat": 2}
    assert all(d.dedup_key.endswith("|repeat:2") for d in first.deliveries)  # the second notification
    assert (await repeats(store, p)).deliveries == []  # claimed once; the next one is 10 minutes away
    clock.advance(minutes=10)
    assert keys(await repeats(store, p)) == CSM_TARGETS
    alert = (await store.alerts_by_risk(["acme:usage_drop:1"]))["acme:usage_drop:1"]
    await store.ack(alert.id, "dana", clock.now)
    clock.advance(hours=2)
    assert (await repeats(store, p)).deliveries == []
    assert len(store.deliveries()) == 6


async def test_an_acknowledged_risk_still_notifies_when_its_severity_rises():
    store, clock = InMemoryAlertsStore(), Clock()
    p = pipeline(clock, RoutingTree.from_yaml(ROUTING))
    await claim(store, p, [make_risk(severity="medium")])
    alert = (await store.alerts_by_risk(["acme:usage_drop:1"]))["acme:usage_drop:1"]
    await store.ack(alert.id, "dana", clock.now)
    clock.advance(hours=1)
    same = await claim(store, p, [make_risk(severity="medium", seq=2, transition="updated")], offset=2)
    rose = await claim(store, p, [make_risk(severity="critical", seq=3, transition="updated")], offset=3)
    assert same.deliveries == []
    assert keys(rose) == CSM_TARGETS and {d.kind for d in rose.deliveries} == {"escalated"}


async def test_a_target_the_routing_no_longer_reaches_is_not_reminded():
    store, clock = InMemoryAlertsStore(), Clock()
    await claim(store, pipeline(clock, RoutingTree.from_yaml(ROUTING)), [make_risk()])
    leadership = RoutingTree.from_yaml(
        "receivers: [{name: lead, email: {to: [lead@vendor.example]}}]\nroute: {receiver: lead, repeat_interval: 10m}\n"
    )
    p = pipeline(clock, leadership)
    clock.advance(minutes=10)
    assert (await repeats(store, p)).deliveries == []
    assert {s.next_repeat_at for s in store.t.states.values()} == {None}
    clock.advance(hours=1)
    assert (await repeats(store, p)).deliveries == []


# -- silences --------------------------------------------------------------------------------------------
def silence(account_id: str, until: datetime, types: list[str] | None = None) -> SilenceRow:
    return SilenceRow(
        id=f"sil-{account_id}",
        account_id=account_id,
        types=types or [],
        until=until,
        reason="maintenance",
        created_by="ops",
        created_at=T0,
        deleted_at=None,
    )


async def test_a_silence_holds_back_its_account_and_types_only():
    store, clock = InMemoryAlertsStore(), Clock()
    p = pipeline(clock)
    await store.insert_silence(silence("acme", T0 + timedelta(hours=1), ["usage_drop"]))
    silenced = make_risk()
    other_type = make_risk(risk_id="acme:ticket_spike:1", type="ticket_spike")
    other_account = make_risk(risk_id="beta:usage_drop:1", account_id="beta")
    result = await claim(store, p, [silenced, other_type, other_account], offset=3)
    assert sorted(d.dedup_key.split(":")[1] for d in result.deliveries) == ["ticket_spike"] * 2 + ["usage_drop"] * 2
    assert {d.alert_id for d in result.deliveries} == {
        a.id for rid, a in store.t.alerts.items() if rid != silenced.risk_id
    }
    assert suppressed(p) == 2
    assert result.outcomes == {"applied": 3}


async def test_a_repeat_during_a_silence_waits_for_its_end():
    store, clock = InMemoryAlertsStore(), Clock()
    p = pipeline(clock, RoutingTree.from_yaml(ROUTING))
    await claim(store, p, [make_risk()])
    until = T0 + timedelta(minutes=45)
    await store.insert_silence(silence("acme", until))
    clock.advance(minutes=10)
    held = await repeats(store, p)
    assert held.deliveries == [] and suppressed(p) == 2
    assert {s.next_repeat_at for s in store.t.states.values()} == {until}  # looked at again when it ends
    clock.advance(minutes=20)
    assert (await repeats(store, p)).deliveries == []  # not due: nothing to look at
    clock.now = until
    assert keys(await repeats(store, p)) == CSM_TARGETS


# -- resolutions -----------------------------------------------------------------------------------------
async def test_a_resolution_notifies_only_where_the_route_sends_resolved():
    for tree, expected in ((RoutingTree.from_yaml(ROUTING), CSM_TARGETS), (RoutingTree.default(None), [])):
        store, clock = InMemoryAlertsStore(), Clock()
        p = pipeline(clock, tree)
        await claim(store, p, [make_risk()])
        resolved = await claim(store, p, [make_risk(seq=2, transition="resolved")], offset=2)
        assert keys(resolved) == expected
        assert {d.kind for d in resolved.deliveries} <= {"resolved"}
        assert store.t.alerts["acme:usage_drop:1"].status == "resolved"
        clock.advance(days=2)
        assert (await repeats(store, p)).deliveries == []  # a resolved risk is never repeated


async def test_a_risk_never_notified_is_not_resolved_either():
    store, clock = InMemoryAlertsStore(), Clock()
    p = pipeline(clock, RoutingTree.from_yaml(ROUTING))
    await store.insert_silence(silence("acme", T0 + timedelta(minutes=5)))
    await claim(store, p, [make_risk()])
    clock.advance(minutes=10)
    result = await claim(store, p, [make_risk(seq=2, transition="resolved")], offset=2)
    assert result.deliveries == []


# -- digests ---------------------------------------------------------------------------------------------
async def test_low_severity_openings_wait_group_wait_then_go_out_as_one_digest_per_target():
    store, clock = InMemoryAlertsStore(), Clock()
    p = pipeline(clock, RoutingTree.from_yaml(ROUTING))
    low = [make_risk(risk_id=f"acme:{t}:1", type=t, severity="low") for t in ("usage_drop", "ticket_spike")]
    queued = await claim(store, p, low, offset=2)
    assert queued.deliveries == [] and queued.queued_for_digest == 4
    clock.advance(seconds=59)
    assert (await digests(store, p)).deliveries == []
    clock.advance(seconds=1)
    sent = await digests(store, p)
    assert keys(sent) == CSM_TARGETS and {d.kind for d in sent.deliveries} == {"digest"}
    assert {d.alert_id for d in sent.deliveries} == {None}  # one digest covers two alerts
    assert sent.outcomes == {"digest": 2}
    assert store.waiting_items() == []
    assert (await digests(store, p)).deliveries == []


async def test_a_digest_of_one_risk_is_its_own_notification():
    store, clock = InMemoryAlertsStore(), Clock()
    p = pipeline(clock, RoutingTree.from_yaml(ROUTING))
    await claim(store, p, [make_risk(severity="low")])
    clock.advance(minutes=1)
    sent = await digests(store, p)
    assert {d.kind for d in sent.deliveries} == {"opened"}
    assert {d.alert_id for d in sent.deliveries} == {store.t.alerts["acme:usage_drop:1"].id}


async def test_a_digest_flush_that_loses_the_race_claims_nothing():
    store, clock = InMemoryAlertsStore(), Clock()
    p = pipeline(clock, RoutingTree.from_yaml(ROUTING))
    await claim(store, p, [make_risk(severity="low")])
    clock.advance(minutes=1)

    async def consumed_elsewhere(assignments: dict[int, int | None], now: datetime) -> bool:
        return False

    store.consume_digest_items = consumed_elsewhere  # type: ignore[method-assign]
    periodic = PeriodicTasks(store, p, Submitted(), clock=clock)  # type: ignore[arg-type]
    assert await periodic.flush_digests_once() == 0
    assert store.deliveries() == [] and len(store.waiting_items()) == 2  # rolled back


# -- the per-target plan ---------------------------------------------------------------------------------
def test_plan_target_is_the_same_decision_for_an_event_and_for_the_sweep_but_when_to_look_again():
    risk = make_risk()
    previous = AlertState(
        risk_id=risk.risk_id, target_key="email:x@y.z", last_severity="high", last_notified_at=T0, count=1, last_seq=1
    )
    common: dict[str, Any] = dict(
        target_key="email:x@y.z",
        last_kind="opened",
        repeat_interval=timedelta(hours=1),
        send_resolved=False,
        group_wait=timedelta(0),
    )
    until = T0 + timedelta(hours=3)
    now = T0 + timedelta(hours=2)
    event = plan_target(risk, previous, now=now, silenced_until=until, **common)
    sweep = plan_target(risk, previous, now=now, silenced_until=until, sweep=True, **common)
    assert event.decision == sweep.decision and not event.decision.notify and event.suppressed
    assert event.next_repeat_at == T0 + timedelta(hours=1) and sweep.next_repeat_at == until
    due = plan_target(risk, previous, now=now, silenced_until=None, **common)
    assert due.send == "now" and due.decision.kind == "repeat" and due.last_kind == "repeat"
    assert due.state.count == 2 and due.next_repeat_at == now + timedelta(hours=1)
    low = plan_target(
        make_risk(severity="low"), None, now=now, silenced_until=None, **{**common, "group_wait": timedelta(seconds=30)}
    )
    assert low.send == "digest" and low.decision.kind == "opened"


# -- delivering and recording ----------------------------------------------------------------------------
class Submitted:
    def submit(self, rows: Any) -> None:
        pass


class Channel:
    def __init__(self, kind: str, error: Exception | None = None) -> None:
        self.kind = kind
        self.error = error
        self.sent: list[Notification] = []

    async def send(self, notification: Notification) -> None:
        if self.error is not None:
            raise self.error
        self.sent.append(notification)


def runner(store: InMemoryAlertsStore, clock: Clock, *channels: Channel) -> DeliveryRunner:
    r = DeliveryRunner(store, clock=clock, lease=timedelta(seconds=30))
    r.attach(Deliverer({c.kind: c for c in channels}, on_attempt=r.on_attempt, rate_interval_s=0.0))
    return r


async def settle(r: DeliveryRunner) -> None:
    """Let every send finish and record the outcomes (the runner's own shutdown path)."""
    await r.drain(timeout_s=5.0)


async def test_a_permanent_failure_is_dead_lettered_after_one_attempt_and_other_targets_still_get_theirs():
    store, clock = InMemoryAlertsStore(), Clock()
    claimed = await claim(store, pipeline(clock), [make_risk()])
    slack = Channel("slack_dm", PermanentFailure("slack_dm:U0DANA: channel_not_found", code="channel_not_found"))
    email = Channel("email")
    r = runner(store, clock, slack, email)
    r.submit(claimed.deliveries)
    await settle(r)
    rows = {d.channel: d for d in store.deliveries()}
    assert rows["slack_dm"].status == "dead_letter" and rows["slack_dm"].attempts == 1
    assert rows["slack_dm"].error_code == "channel_not_found"
    assert rows["email"].status == "sent" and rows["email"].sent_at == clock.now
    assert len(email.sent) == 1 and [a.outcome for a in store.t.attempts if a.delivery_id == rows["slack_dm"].id] == [
        "dead_letter"
    ]
    assert not r.busy_ids() and set(store.t.leases.values()) == {None}


async def test_a_stored_notification_that_cannot_be_read_is_dead_lettered():
    store, clock = InMemoryAlertsStore(), Clock()
    async with store.begin() as tx:
        notification = render(
            make_risk(), Target(kind="email", address="dana@vendor.example", receiver="csm"), "https://churnsignal.test"
        )
        [row] = await tx.claim([new_delivery(notification, None)], clock.now, clock.now)
    store.t.deliveries[row.id] = replace(row, notification={"kind": "opened"})  # not a notification
    r = runner(store, clock, Channel("email"))
    r.submit([store.t.deliveries[row.id]])
    await settle(r)
    [dead] = store.deliveries()
    assert dead.status == "dead_letter" and dead.error_code == "unreadable"


async def test_an_expired_lease_is_taken_over_and_sent_once_and_a_held_one_is_left_alone():
    store, clock = InMemoryAlertsStore(), Clock()
    risk = make_risk()
    async with store.begin() as tx:
        [expired] = await tx.claim(
            [new_delivery(render(risk, Target(kind="slack_dm", address="U0DANA", receiver="csm"), "https://x"), None)],
            clock.now,
            clock.now - timedelta(seconds=1),
        )
        [held] = await tx.claim(
            [
                new_delivery(
                    render(risk, Target(kind="email", address="dana@vendor.example", receiver="csm"), "https://x"), None
                )
            ],
            clock.now,
            clock.now + timedelta(hours=1),
        )
    slack, email = Channel("slack_dm"), Channel("email")
    r = runner(store, clock, slack, email)
    assert await r.resume_once() == 1
    assert await r.resume_once() == 0  # being sent: renewed, not taken again
    await settle(r)
    assert store.t.deliveries[expired.id].status == "sent" and len(slack.sent) == 1
    assert store.t.deliveries[held.id].status == "pending" and email.sent == []


@pytest.mark.parametrize("fails", [False, True])
async def test_outcomes_that_cannot_be_written_are_kept_for_the_next_flush(fails: bool):
    store, clock = InMemoryAlertsStore(), Clock()
    claimed = await claim(store, pipeline(clock), [make_risk()])
    r = runner(store, clock, Channel("slack_dm"), Channel("email"))
    real = store.record_outcomes
    if fails:

        async def down(outcomes: Any, now: datetime) -> None:
            raise OSError("database unreachable")

        store.record_outcomes = down  # type: ignore[method-assign]
    r.submit(claimed.deliveries)
    await settle(r)  # logs, does not raise, when the outcomes cannot be written
    if fails:
        assert not r.db_ok and len(r.busy_ids()) == 2 and {d.status for d in store.deliveries()} == {"pending"}
        store.record_outcomes = real  # type: ignore[method-assign]
    await r.flush()
    assert r.db_ok and not r.busy_ids()
    assert {d.status for d in store.deliveries()} == {"sent"}


# -- one message per account (group_wait) and daily digests ----------------------------------------------
GROUPED = """
route:
  receiver: csm
  repeat_interval: 10m
  group_wait: 30s
"""


def three_on_acme(severities: tuple[str, str, str] = ("medium", "high", "medium")) -> list[RiskEvent]:
    types = ("usage_drop", "ticket_spike", "champion_left")
    return [make_risk(risk_id=f"acme:{t}:1", type=t, severity=s, summary=f"{t} at acme")
            for t, s in zip(types, severities, strict=True)]


async def test_risks_of_one_account_opening_together_go_out_as_one_message_per_target_worst_first():
    store, clock = InMemoryAlertsStore(), Clock()
    p = pipeline(clock, RoutingTree.from_yaml(GROUPED), grouping=True)
    first, *rest = three_on_acme()
    queued = await claim(store, p, [first])
    clock.advance(seconds=10)
    queued2 = await claim(store, p, rest, offset=2)  # within group_wait of the first
    other = await claim(store, p, [make_risk(risk_id="beta:usage_drop:1", account_id="beta")], offset=3)
    assert queued.deliveries == queued2.deliveries == other.deliveries == []
    clock.advance(seconds=20)
    sent = await digests(store, p)
    assert keys(sent) == CSM_TARGETS and {d.kind for d in sent.deliveries} == {"grouped"}
    for d in sent.deliveries:
        n = Notification.from_dict(d.notification)
        assert n.risk_ids == ("acme:ticket_spike:1", "acme:champion_left:1", "acme:usage_drop:1")  # worst first
        assert n.account_ids == ("acme",) and n.severity == "high"
        assert n.email_text.index("ticket_spike at acme") < n.email_text.index("usage_drop at acme")
    # every risk records the delivery that carried it
    carried = {store.t.consumed[i.id] for i in store.t.digest_items.values()
               if i.target_key == "email:dana@vendor.example" and i.risk["account_id"] == "acme"}
    assert carried == {next(d.id for d in sent.deliveries if d.channel == "email")}
    clock.advance(seconds=10)  # beta's own group: one risk, a plain message
    beta = await digests(store, p)
    assert keys(beta) == CSM_TARGETS and {d.kind for d in beta.deliveries} == {"opened"}
    assert (await digests(store, p)).deliveries == []
    assert len(store.deliveries()) == 4


async def test_a_critical_risk_bypasses_group_wait_and_group_bypass_is_configurable():
    store, clock = InMemoryAlertsStore(), Clock()
    p = pipeline(clock, RoutingTree.from_yaml(GROUPED), grouping=True)
    risks = three_on_acme(("critical", "high", "medium"))
    now = await claim(store, p, risks)
    assert keys(now) == CSM_TARGETS and {d.kind for d in now.deliveries} == {"opened"}
    assert now.queued_for_digest == 4  # the other two wait for their group
    clock.advance(seconds=30)
    grouped = await digests(store, p)
    assert {len(Notification.from_dict(d.notification).risk_ids) for d in grouped.deliveries} == {2}

    store, clock = InMemoryAlertsStore(), Clock()
    p = pipeline(clock, RoutingTree.from_yaml(GROUPED + "  group_bypass: [high, critical]\n"), grouping=True)
    result = await claim(store, p, risks)
    assert sorted(d.dedup_key.split("|")[0] for d in result.deliveries) == sorted(
        [risks[0].event_id] * 2 + [risks[1].event_id] * 2)


async def test_group_wait_0_turns_grouping_off():
    store, clock = InMemoryAlertsStore(), Clock()
    p = pipeline(clock, RoutingTree.from_yaml(GROUPED.replace("30s", "0")), grouping=True)
    result = await claim(store, p, three_on_acme())
    assert len(result.deliveries) == 6 and {d.kind for d in result.deliveries} == {"opened"}
    assert result.queued_for_digest == 0


async def test_grouped_risks_are_reminded_after_repeat_interval_and_an_ack_stops_one_of_them():
    store, clock = InMemoryAlertsStore(), Clock()
    p = pipeline(clock, RoutingTree.from_yaml(GROUPED), grouping=True)
    await claim(store, p, three_on_acme())
    clock.advance(seconds=30)
    assert len((await digests(store, p)).deliveries) == 2
    alert = store.t.alerts["acme:usage_drop:1"]
    await store.ack(alert.id, "dana", clock.now)
    clock.advance(minutes=10)
    reminded = await repeats(store, p)
    assert reminded.deliveries == [] and reminded.queued_for_digest == 4  # two risks x two targets wait
    clock.advance(seconds=30)
    again = await digests(store, p)
    assert keys(again) == CSM_TARGETS
    assert {Notification.from_dict(d.notification).risk_ids for d in again.deliveries} == {
        ("acme:ticket_spike:1", "acme:champion_left:1")}


DAILY = """
receivers:
  - name: csm
    slack_dm: {}
    email: {to: csm}
    digest: {at: "09:30", timezone: Europe/Berlin}
route:
  receiver: csm
  group_wait: 0
"""


async def daily(store: InMemoryAlertsStore, p: AlertPipeline) -> ClaimResult:
    async with store.begin() as tx:
        return await p.claim_daily_digests(tx)


async def test_health_drop_waits_for_the_daily_digest_which_fires_once_per_target_and_day():
    store, clock = InMemoryAlertsStore(), Clock()  # T0 = 09:00 UTC = 10:00 in Berlin
    p = pipeline(clock, RoutingTree.from_yaml(DAILY), grouping=True)
    drop = make_risk(risk_id="acme:health_drop:1", type="health_drop", severity="medium", summary="Health fell")
    usage = make_risk(summary="Usage fell")
    renewing = make_risk(risk_id="beta:usage_drop:1", account_id="beta", name="Beta", tier="yellow",
                         summary="Usage fell at beta")
    renewing = renewing.model_copy(
        update={"account": renewing.account.model_copy(update={"renewal_date": (T0 + timedelta(days=30)).date()})})
    result = await claim(store, p, [drop, usage, renewing])
    assert sorted(d.dedup_key.split("|")[0] for d in result.deliveries) == sorted(
        [usage.event_id] * 2 + [renewing.event_id] * 2)  # health_drop waits for the digest
    assert (await daily(store, p)).deliveries == []  # today's 09:30 Berlin passed before the risks opened
    clock.now = datetime(2026, 3, 3, 8, 29, tzinfo=UTC)
    assert (await daily(store, p)).deliveries == []
    clock.now = datetime(2026, 3, 3, 8, 30, tzinfo=UTC)  # 09:30 in Berlin (CET)
    sent = await daily(store, p)
    assert keys(sent) == CSM_TARGETS and {d.kind for d in sent.deliveries} == {"daily_digest"}
    assert {d.dedup_key for d in sent.deliveries} == {f"daily|{k}|2026-03-03" for k in CSM_TARGETS}
    email = Notification.from_dict(next(d for d in sent.deliveries if d.channel == "email").notification)
    text = email.email_text
    assert "Open risks (3)" in text and "Health fell" in text
    assert "Red accounts (1)" in text and "Acme Corp (acme)" in text
    assert "Renewals within 90 days (1)" in text and f"Beta (beta) renews {renewing.account.renewal_date}" in text
    assert "opened: Health drop (medium)" in text
    assert store.waiting_items() == []  # the health_drop items are carried by the digests
    clock.advance(hours=3)
    assert (await daily(store, p)).deliveries == []  # once a day
    clock.now = datetime(2026, 3, 4, 8, 30, tzinfo=UTC)
    tomorrow = await daily(store, p)
    assert keys(tomorrow) == CSM_TARGETS  # still open: listed again
    assert "Changed since the last digest (0)" in Notification.from_dict(tomorrow.deliveries[0].notification).email_text
    clock.advance(minutes=10)
    reminded = await repeats(store, p)  # the risks sent at once are reminded; the digest-only one is not
    assert {d.dedup_key.split(":")[1] for d in reminded.deliveries} == {"usage_drop"}


def many_csms(n: int) -> list[RiskEvent]:
    """One health_drop (it waits for the daily digest) per account, each account with a CSM of its own."""
    return [make_risk(risk_id=f"a{i:02d}:health_drop:1", account_id=f"a{i:02d}", type="health_drop",
                      severity="medium", csm={"email": f"csm{i:02d}@vendor.example", "slack_user_id": f"U{i:04d}"})
            for i in range(n)]


async def test_the_daily_check_reads_a_bounded_number_of_targets_at_a_time_and_misses_none(monkeypatch):
    sent: dict[int, list[str]] = {}
    for per_read in (3, 1000):
        monkeypatch.setattr("services.alerts.service.pipeline.DAILY_TARGETS_PER_READ", per_read)
        store, clock = InMemoryAlertsStore(), Clock()
        p = pipeline(clock, RoutingTree.from_yaml(DAILY), grouping=True)
        await claim(store, p, many_csms(7))
        reads: list[int] = []
        whole = store.daily_digest_reads

        async def counted(now: datetime, since: datetime, targets: Any, reads: list[int] = reads,
                          whole: Any = whole) -> Any:
            reads.append(len(targets))
            return await whole(now, since, targets)

        store.daily_digest_reads = counted  # type: ignore[method-assign]
        clock.now = datetime(2026, 3, 3, 8, 30, tzinfo=UTC)
        result = await daily(store, p)
        sent[per_read] = sorted(d.dedup_key for d in result.deliveries)
        assert result.outcomes == {"daily_digest": 14}
        assert store.waiting_items() == []  # every queued health_drop carried
        assert reads == ([3, 3, 3, 3, 2] if per_read == 3 else [14])  # 14 targets: 7 DMs and 7 addresses
    assert sent[3] == sent[1000] and len(sent[3]) == 14


async def test_the_daily_loop_reads_the_tables_at_start_and_after_each_scheduled_moment_only():
    store, clock = InMemoryAlertsStore(), Clock()  # T0 = 09:00 UTC, after 09:30 Berlin
    p = pipeline(clock, RoutingTree.from_yaml(DAILY), grouping=True)
    await claim(store, p, many_csms(2))
    checks: list[datetime] = []
    whole = store.daily_digest_targets

    async def counted(since: datetime) -> list[str]:
        checks.append(clock.now)
        return await whole(since)

    store.daily_digest_targets = counted  # type: ignore[method-assign]
    reads_of_clock = 0

    def counting_clock() -> datetime:
        nonlocal reads_of_clock
        reads_of_clock += 1
        return clock.now

    async def loop_turns(n: int) -> None:
        """Until the loop woke up `n` more times (it reads the clock twice a turn)."""
        target = reads_of_clock + 2 * n
        for _ in range(10_000):
            if reads_of_clock >= target:
                return
            await asyncio.sleep(0.001)
        raise AssertionError(f"the loop did not turn {n} times")

    periodic = PeriodicTasks(store, p, Submitted(), clock=counting_clock,  # type: ignore[arg-type]
                             daily_every_s=0.001)
    task = asyncio.create_task(periodic.run_daily_digests())
    try:
        await loop_turns(30)  # woken every millisecond; no scheduled moment passed since its first check
        assert checks == [T0] and sum(periodic.daily_sent.values()) == 0
        clock.now = datetime(2026, 3, 3, 8, 30, tzinfo=UTC)  # 09:30 in Berlin
        await loop_turns(30)
        assert checks == [T0, clock.now] and sum(periodic.daily_sent.values()) == 4
        clock.advance(minutes=20)  # before the next moment (09:00 UTC, the default schedule's)
        await loop_turns(30)
        assert len(checks) == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_messages_that_waited_carry_the_buttons_and_action_links_of_their_alerts():
    """A grouped message gives each risk its own Acknowledge / Snooze (its alert's id) and, by e-mail, its own
    signed action links; a group of one is the plain message with its buttons, as when sent at once."""
    store, clock = InMemoryAlertsStore(), Clock()
    p = pipeline(clock, RoutingTree.from_yaml(GROUPED), grouping=True)
    p.action_secret = b"k" * 32
    await claim(store, p, three_on_acme())
    await claim(store, p, [make_risk(risk_id="beta:usage_drop:1", account_id="beta")], offset=2)
    clock.advance(seconds=30)
    sent = await digests(store, p)
    alerts = await store.alerts_by_risk([*(r.risk_id for r in three_on_acme()), "beta:usage_drop:1"])
    for d in sent.deliveries:
        n = Notification.from_dict(d.notification)
        values = [e["value"] for b in n.slack_blocks if b["type"] == "actions" for e in b["elements"]
                  if e.get("action_id") == ACK_ACTION]
        assert values == [str(alerts[rid].id) for rid in n.risk_ids], n.kind
        ids = [b["block_id"] for b in n.slack_blocks if b["type"] == "actions" and "block_id" in b]
        assert len(ids) == len(set(ids))                               # unique block ids, as Slack requires
        if d.channel == "email":
            assert n.email_text.count("/actions/ack?t=") == len(n.risk_ids)
            assert n.email_text.count("/actions/snooze?t=") == len(n.risk_ids)
        else:
            assert "/actions/" not in n.email_text
    assert {Notification.from_dict(d.notification).kind for d in sent.deliveries} == {"grouped", "opened"}
