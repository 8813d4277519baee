"""The pure scoring domain: event-time windows, the health model, churn-risk detectors, risk lifecycle.

Where things are decided: `signals.py` measures an account (windows, baselines, gaps; one module per
signal: `usage.py`, `breadth.py`, `tickets.py`, `sentiment_signal.py`, `contacts.py`, kept between
evaluations by `memo.py`), `health.py` turns that into the six components and the score, `detectors.py`
holds the risk rules (one function per risk type), `engine.py` folds events and runs the lifecycle,
`state.py` is the compact state and `codec.py` its byte encoding, `clock.py` the partition's event-time
clock, `config.py` every threshold.

Imports only the standard library, orjson, PyYAML (config), vaderSentiment (text scoring, lazily) and
`shared.events` / `shared.risks`; does no I/O. The service drives it per partition:

    engine = ScoringEngine(ScoringConfig.load(path))
    clock = PartitionClock(allowed_lateness)
    outcome = engine.apply(state, event); clock.observe(event.occurred_at)
    clock.schedule(account_id, outcome.next_due)
    while due := clock.pop_due():
        for at, account_id in due:
            outcome = engine.evaluate(states[account_id], at)
            clock.schedule(account_id, outcome.next_due)

Days are UTC days. Notes on the interface:
- `apply` of a usage event returns no snapshot and no transitions: usage is judged on complete days at the
  clock tick (`evaluate`), which is what makes out-of-order events within the lateness harmless.
- `Outcome.next_due` is always later than the moment evaluated, so draining `pop_due` terminates. A live
  account is ticked at every UTC midnight (event time); one with no event for 100 days (longer for a
  sparse account whose rhythm is still judged, see `LapseRule.live_gaps`) and nothing time-bound pending
  is not ticked again until an event arrives (or its renewal approaches).
- The event time of an event-caused transition is max(the account's clock, the event's occurred_at);
  under out-of-order arrival it can be later than the event itself (within the lateness).
- `HealthSnapshot.cause` is "current" for `engine.snapshot(state)` (the read API's view).
- `AccountState.memo` keeps an account's measurements between its evaluations (`memo.Memo`); it is never
  encoded, and a state without it (fresh or decoded) produces exactly the same outcomes.
- Added: `Component.configured_weight` / `.label`, `HealthSnapshot.brief()` / `.component()`,
  `RiskTransition.event_id` / `.to_dict()`, `PartitionClock.due_at()` / `len()`,
  `ScoringConfig.from_dict()` / `.tier()` / `.to_dict()`, `open_risks()` items also carry `seq`.
"""

from . import native

native.select()   # the compiled modules, or the source (native.py says which and why)

from .clock import PartitionClock  # noqa: E402
from .config import ScoringConfig  # noqa: E402
from .detectors import RISK_TYPES  # noqa: E402
from .engine import ScoringEngine, risk_id  # noqa: E402
from .model import Component, Delta, HealthSnapshot, Outcome, RiskTransition  # noqa: E402
from .state import AccountState, decode_state, encode_state  # noqa: E402

__all__ = [
    "RISK_TYPES",
    "AccountState",
    "Component",
    "Delta",
    "HealthSnapshot",
    "Outcome",
    "PartitionClock",
    "RiskTransition",
    "ScoringConfig",
    "ScoringEngine",
    "decode_state",
    "encode_state",
    "risk_id",
]
