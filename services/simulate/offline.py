"""Replaying a simulation through the pure scoring domain, as the scoring service would, without I/O.

Events are routed to partitions like the bus does (by account id); each partition has its event-time
clock; after every event the clock's due timers are evaluated (silence, renewal approaching...).
Used by `churnsignal simulate --offline` and by the tests that score the detectors against the
ground truth.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from services.simulate.model import SimEvent
from shared.bus.port import partition_for
from shared.events import Event, validate_event


def replay(events: Iterable[SimEvent], *, config: Any = None, partitions: int = 6,
           allowed_lateness: timedelta = timedelta(hours=1)) -> list[Any]:
    """Every risk transition the scoring domain raises on these events, in the order raised."""
    from services.scoring.domain.clock import PartitionClock
    from services.scoring.domain.config import ScoringConfig
    from services.scoring.domain.engine import ScoringEngine

    engine = ScoringEngine(config if config is not None else ScoringConfig())
    clocks = [PartitionClock(allowed_lateness) for _ in range(partitions)]
    states: dict[str, Any] = {}
    raised: list[Any] = []
    for sim_event in events:
        event = validate_event(sim_event.body, check_future=False)
        if not isinstance(event, Event):
            raise ValueError(f"invalid simulated event {sim_event.body.get('id')}: {event}")
        account = event.account_id
        state = states.get(account)
        if state is None:
            state = states[account] = engine.new_state(account)
        clock = clocks[partition_for(account.encode(), partitions)]
        outcome = engine.apply(state, event)
        raised.extend(outcome.transitions)
        clock.observe(event.occurred_at)
        clock.schedule(account, outcome.next_due)
        while due := clock.pop_due():
            for at, due_account in due:
                timed = engine.evaluate(states[due_account], at)
                raised.extend(timed.transitions)
                clock.schedule(due_account, timed.next_due)
    return raised
