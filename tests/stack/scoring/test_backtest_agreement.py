"""The backtest agrees with the live service: the scoring consumer, on the embedded stack (in-process bus
with Kafka's semantics + SQLite) and on the real Kafka + PostgreSQL, is given the events before the cut;
its committed states, timers and watermarks, advanced to the cut the way its partition clocks would
advance, give the same scores, tiers and open risks as the backtest's replay of the same file."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from services.scoring.backtest.history import read_events
from services.scoring.backtest.replay import replay
from services.scoring.domain import PartitionClock, ScoringConfig, ScoringEngine, decode_state
from tests.service.backtest.histories import CUT, PARTITIONS, file_order, stories, write_events
from tests.stack.scoring.harness import Stack, produce, records_for, running, wait_caught_up

LATENESS = timedelta(hours=1)


async def test_states_at_the_cut_equal_the_scoring_consumers(stack: Stack, tmp_path: Path):
    raws = file_order(stories())
    before = [r for r in raws if datetime.fromisoformat(r["occurred_at"]) < CUT]
    stack = Stack(stack.kind, stack.bus, stack.settings.model_copy(update={
        "topic_partitions": PARTITIONS, "scoring_allowed_lateness_s": int(LATENESS.total_seconds())}))
    await produce(stack.bus, records_for(stack.topics, before))
    async with running(stack) as rt:
        await wait_caught_up(stack, rt, timeout_s=120)
        loads = await rt.store.load_partitions(range(PARTITIONS), stack.topics.inputs)

    engine = ScoringEngine(ScoringConfig())
    service = {}
    for load in loads.values():
        # What the consumer's clock does once an event past the cut + lateness arrives.
        clock = PartitionClock(LATENESS, load.watermark)
        states = {account: decode_state(raw) for account, raw in load.states.items()}
        for account, due in load.timers:
            clock.schedule(account, due)
        clock.observe(CUT + LATENESS)
        while due := clock.pop_due():
            for at, account in due:
                clock.schedule(account, engine.evaluate(states[account], at).next_due)
        for account, state in states.items():
            snap = engine.snapshot(state)
            service[account] = (snap.score, snap.tier, {r["type"]: r["opened_at"] for r in engine.open_risks(state)})

    history = read_events(write_events(tmp_path / "events.ndjson", raws), partitions=PARTITIONS, until=CUT)
    result = replay(history, [CUT], ScoringEngine(ScoringConfig()), allowed_lateness=LATENESS)
    backtest = {a: (x.score, x.tier, {t: x.risks[t].isoformat() for t in x.open_risks})
                for a, x in result.accounts[0].items()}
    assert backtest == service
    assert backtest["acme-001"][2].keys() == {"champion_left"}
