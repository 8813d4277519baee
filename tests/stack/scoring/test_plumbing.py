"""The scoring service's plumbing, on a small stand-in model: from input records to committed state,
history, risks and risk events; dead letters; duplicates; timers; restarts."""

from __future__ import annotations

import sqlalchemy as sa

from services.scoring.adapters import tables as t
from services.scoring.bootstrap import ScoringRuntime
from shared.bus.port import OutMessage
from shared.codec import dumps, encode_input, loads
from tests.stack.scoring.events import T0, account, accounts_on_partition, days, ticket, usage
from tests.stack.scoring.fake_model import fake_model
from tests.stack.scoring.harness import (
    Stack,
    count,
    fetch_all,
    produce,
    read_topic,
    records_for,
    risk_events,
    running,
    wait_caught_up,
)


def _metric(rt: ScoringRuntime, name: str, **labels: str) -> float:
    value = rt.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_events_become_state_history_and_one_risk_event(stack: Stack):
    events = [account("acme", T0, name="Acme Corp"),
              ticket("acme", T0 + days(0.1), "t1"),
              ticket("acme", T0 + days(0.2), "t2"),
              ticket("acme", T0 + days(0.3), "t3"),
              usage("globex", T0, user_id="u1")]
    await produce(stack.bus, records_for(stack.topics, events))
    async with running(stack, fake_model()) as rt:
        await wait_caught_up(stack, rt)
        assert _metric(rt, "churnsignal_scoring_events_total", type="ticket", outcome="processed") == 3
        assert _metric(rt, "churnsignal_risks_total", type="ticket_spike", transition="opened") == 1

    (risk,) = await risk_events(stack)
    assert risk.type == "ticket_spike" and risk.transition == "opened" and risk.seq == 1
    assert risk.event_id == f"{risk.risk_id}:1"
    assert risk.summary == "3 tickets opened in the last 7 days"
    assert risk.evidence == {"opened_7d": 3}
    assert risk.account_id == "acme" and risk.account.name == "Acme Corp"
    assert risk.health.score == 55 and risk.health.tier == "yellow" and risk.health.reasons
    assert risk.trigger is not None and risk.trigger.event_id == events[3]["id"]
    assert risk.trigger.received_at is not None
    assert risk.occurred_at == T0 + days(0.3) and risk.config_version == "fake-1"

    url = stack.settings.database_url
    accounts = {r["account_id"]: r for r in await fetch_all(url, t.accounts, t.accounts.c.account_id)}
    assert set(accounts) == {"acme", "globex"}
    assert accounts["acme"]["tier"] == "yellow" and accounts["acme"]["score"] == 55
    history = [r for r in await fetch_all(url, t.history, t.history.c.id) if r["account_id"] == "acme"]
    assert [h["score"] for h in history] == [100, 85, 70, 55]
    assert loads(history[-1]["snapshot"])["deltas"][0]["reason"] == "-15: 3 tickets in 7 days"
    (row,) = await fetch_all(url, t.risks, t.risks.c.id)
    assert row["status"] == "open" and row["risk_id"] == risk.risk_id
    assert await count(url, t.processed_events) == 5


async def test_bad_records_are_dead_lettered_and_the_partition_keeps_flowing(stack: Stack):
    topics = stack.topics
    good_before = ticket("acme", T0, "t1")
    good_after = [ticket("acme", T0 + days(0.1), "t2"), ticket("acme", T0 + days(0.2), "t3")]
    not_json = OutMessage(topics.tickets, b"acme", b"{not json")
    bad_schema = OutMessage(topics.tickets, b"acme", encode_input(
        {"id": "x1", "type": "ticket", "account_id": "acme", "occurred_at": T0.isoformat(),
         "data": {"status": "opened"}}, T0))
    unknown_field = OutMessage(topics.tickets, b"acme", dumps(
        {"id": "x2", "type": "ticket", "account_id": "acme", "occurred_at": T0.isoformat(),
         "data": {"ticket_id": "t9", "status": "opened"}, "tenant": "a"}))
    wrong_key = OutMessage(topics.tickets, b"acme", encode_input(ticket("initech", T0, "t8"), T0))
    messages = [*records_for(topics, [good_before]), not_json, bad_schema, unknown_field, wrong_key,
                *records_for(topics, good_after)]
    await produce(stack.bus, messages)
    async with running(stack, fake_model()) as rt:
        await wait_caught_up(stack, rt)
        assert _metric(rt, "churnsignal_dead_letters_total", service="scoring", reason="not_json") == 1
        assert _metric(rt, "churnsignal_dead_letters_total", service="scoring", reason="schema") == 2
        assert _metric(rt, "churnsignal_dead_letters_total", service="scoring", reason="key_mismatch") == 1
        assert _metric(rt, "churnsignal_scoring_events_total", type="ticket", outcome="processed") == 3

    dead = [loads(v) for v in await read_topic(stack.bus, topics.deadletter)]
    assert len(dead) == 4
    assert {d["service"] for d in dead} == {"scoring"}
    assert {d["source_topic"] for d in dead} == {topics.tickets}
    reasons = sorted(d["reason"] for d in dead)
    assert reasons[0].startswith("data.ticket_id: Field required")
    assert any(r.startswith("not JSON") for r in reasons)
    assert any("unknown field 'tenant'" in r for r in reasons)
    assert any(r.startswith("record key 'acme' is not the account_id 'initech'") for r in reasons)
    assert next(d for d in dead if d["reason"].startswith("not JSON"))["value"] == "{not json"
    # The good records on both sides of the bad ones were scored: the spike opened at the third ticket.
    (risk,) = await risk_events(stack)
    assert risk.trigger is not None and risk.trigger.event_id == good_after[-1]["id"]


async def test_an_event_the_model_cannot_score_is_dead_lettered_and_the_rest_goes_on(stack: Stack):
    events = [ticket("acme", T0, "t1"), ticket("acme", T0 + days(0.1), "t2", explode=True),
              ticket("acme", T0 + days(0.2), "t3"), ticket("acme", T0 + days(0.3), "t4")]
    await produce(stack.bus, records_for(stack.topics, events))
    async with running(stack, fake_model()) as rt:
        await wait_caught_up(stack, rt)
        assert _metric(rt, "churnsignal_dead_letters_total", service="scoring", reason="scoring_error") == 1
    (dead,) = [loads(v) for v in await read_topic(stack.bus, stack.topics.deadletter)]
    assert dead["reason"] == "scoring failed on this event" and loads(dead["value"])["id"] == events[1]["id"]
    (risk,) = await risk_events(stack)
    assert risk.trigger is not None and risk.trigger.event_id == events[3]["id"]
    assert await count(stack.settings.database_url, t.processed_events) == 3


async def test_every_event_counts_once_when_resent_or_redelivered(stack: Stack):
    events = [account("acme", T0, name="Acme"),
              *[ticket("acme", T0 + days(i / 10), f"t{i}") for i in range(6)]]
    await produce(stack.bus, records_for(stack.topics, events))
    async with running(stack, fake_model()) as rt:
        await wait_caught_up(stack, rt)
    url = stack.settings.database_url
    before = await fetch_all(url, t.accounts, t.accounts.c.account_id)
    history_before = await count(url, t.history)
    risks_before = await risk_events(stack)
    assert [(r.transition, r.severity) for r in risks_before] == [("opened", "high"), ("updated", "critical")]

    # A client sends the same events again (same ids), some to another topic...
    resent = [*events[1:4], {**events[4], "type": "usage", "data": {"feature": "login"}}]
    await produce(stack.bus, records_for(stack.topics, resent))
    # ... and the positions are lost, so the whole log is delivered again.
    await _rewind_positions(url)
    async with running(stack, fake_model()) as rt:
        await wait_caught_up(stack, rt)
        assert _metric(rt, "churnsignal_scoring_events_total", type="ticket", outcome="duplicate") == 9
        assert _metric(rt, "churnsignal_scoring_events_total", type="usage", outcome="duplicate") == 1
        assert _metric(rt, "churnsignal_scoring_events_total", type="ticket", outcome="processed") == 0

    after = await fetch_all(url, t.accounts, t.accounts.c.account_id)
    assert [(a["account_id"], a["state"], a["score"]) for a in after] == \
        [(a["account_id"], a["state"], a["score"]) for a in before]
    assert await count(url, t.history) == history_before
    assert [r.event_id for r in await risk_events(stack)] == [r.event_id for r in risks_before]
    assert await count(url, t.processed_events) == len(events)


async def _rewind_positions(url: str) -> None:
    from shared.db import create_engine

    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.update(t.positions).values(next_offset=0))
    finally:
        await engine.dispose()


async def test_silence_is_detected_by_the_clock_and_survives_a_restart(stack: Stack):
    quiet, busy = accounts_on_partition(2, 2)
    first = [usage(quiet, T0), usage(busy, T0)]
    await produce(stack.bus, records_for(stack.topics, first))
    async with running(stack, fake_model()) as rt:
        await wait_caught_up(stack, rt)
    assert await risk_events(stack) == []
    # After a restart the timer of `quiet` (due at T0 + 3 days) is rebuilt from the database and fires
    # when the busy account's events move the partition's watermark past it (lateness: 1 hour).
    later = [usage(busy, T0 + days(d)) for d in (1, 2, 3, 3.5)]
    await produce(stack.bus, records_for(stack.topics, later))
    async with running(stack, fake_model()) as rt:
        await wait_caught_up(stack, rt)
    (risk,) = await risk_events(stack)
    assert (risk.account_id, risk.type, risk.transition) == (quiet, "usage_drop", "opened")
    assert risk.trigger is None and risk.occurred_at == T0 + days(3)
    assert risk.evidence == {"silent_days": 3}
    await produce(stack.bus, records_for(stack.topics, [usage(quiet, T0 + days(4))]))
    async with running(stack, fake_model()) as rt:
        await wait_caught_up(stack, rt)
    opened, resolved = await risk_events(stack)
    assert resolved.transition == "resolved" and resolved.risk_id == opened.risk_id and resolved.seq == 2
