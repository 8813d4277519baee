"""The replay: a history through the scoring domain, per partition, exactly as the scoring consumer runs it.

Per partition number: the input topics' events are merged in the consumer's order (feed.py: the head of
each topic-partition queue, smallest (occurred_at, topic name, offset) first, each topic in offset order);
each event is applied with `ScoringEngine.apply`, the partition's `PartitionClock` observes it, the
account's timer is set from the outcome, and the timers that came due are fired with
`ScoringEngine.evaluate` (as `ScoringConsumer._fire_timers` does, at most 1,000 rounds per event). An event
id already applied in the partition is skipped, as the service skips an id it has processed.

The state as of a cut-off `cut` is the state of the replay of exactly the events with occurred_at < cut
(each partition's merge of them, in the order above), after which each partition's watermark is moved to
`cut` and every timer due at or before `cut` is fired: the same as `Driver.send` of those events and
`Driver.advance(cut)` in tests/domain/scoring/stories.py, and what the service holds once its clock has passed the
cut, had no event from the cut on arrived. So the daily tick at the cut's midnight has run: every live
account is scored on the complete days before the cut, and no event at or after the cut is seen.

One pass serves every cut: when a partition's events before a cut are a prefix of every one of its topics
(always, for a history whose topics are in event-time order), they are also a prefix of the merge, so the
replay stops there, copies the partition (states through the service's own state codec, timers and
watermark into a new clock), advances the copy to the cut and goes on with the original (at the last cut
the original itself is advanced). Otherwise (an
event before the cut sent after one at or past it, on the same topic-partition) that partition is
replayed again, alone, on its events before the cut.
"""

from __future__ import annotations

import heapq
import operator
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import chain

from services.scoring.domain import PartitionClock, RiskTransition, ScoringEngine, decode_state, encode_state
from services.scoring.domain.state import AccountState
from shared.events import Event, EventType

from .history import DAY_S, PROGRESS_EVERY, Activity, History, WindowCounts, count_event, count_windows

TIMER_ROUNDS = 1000       # as the consumer: rounds of due timers fired after one event
_CHUNK = 65_536

_occurred = operator.attrgetter("occurred_at")


@dataclass(frozen=True, slots=True)
class AccountAtCut:
    """What the service would show for one account as of a cut."""

    account_id: str
    score: float | None
    tier: str
    open_risks: tuple[str, ...]
    # Risk types counted as raised at the cut -> since when: open at the cut, or opened within the
    # lookback window before it. The time is the earliest such opening.
    risks: dict[str, datetime]


@dataclass
class ReplayResult:
    cuts: list[datetime]
    accounts: list[dict[str, AccountAtCut]]      # per cut: every account with an event before it
    activity: dict[str, Activity]                # per account, for the baselines
    applied: int = 0                             # events applied (duplicates not counted)
    duplicates: int = 0                          # repeated event ids skipped
    evaluations: int = 0                         # timers fired (the cuts' copies included)
    separate_replays: int = 0                    # (partition, cut) pairs replayed on their own
    stuck_timers: int = 0                        # events after which timers were still firing
    seconds: float = 0.0


class _Line:
    """One partition's clock and account states, fed event by event like the consumer feeds them."""

    __slots__ = ("engine", "clock", "states", "openings", "seen", "evaluations", "stuck")

    def __init__(self, engine: ScoringEngine, clock: PartitionClock, states: dict[str, AccountState],
                 openings: dict[str, list[tuple[str, datetime]]]) -> None:
        self.engine = engine
        self.clock = clock
        self.states = states
        self.openings = openings        # account -> (risk type, opened at) of every opening seen
        self.seen: set[str] = set()     # ids applied that occur more than once in the partition
        self.evaluations = 0
        self.stuck = 0

    def run(self, events: Sequence[Event], repeated: set[str]) -> int:
        """Apply events in order; the number of duplicates skipped."""
        engine = self.engine
        apply = engine.apply
        new_state = engine.new_state
        states = self.states
        clock = self.clock
        observe = clock.observe
        schedule = clock.schedule
        pop_due = clock.pop_due
        seen = self.seen
        skipped = 0
        for event in events:
            if repeated and event.id in repeated:
                if event.id in seen:
                    skipped += 1
                    continue
                seen.add(event.id)
            account = event.account_id
            state = states.get(account)
            if state is None:
                state = states[account] = new_state(account)
            outcome = apply(state, event)
            observe(event.occurred_at)
            schedule(account, outcome.next_due)
            if outcome.transitions:
                self._note(account, outcome.transitions)
            due = pop_due()
            if due:
                self._fire(due)
        return skipped

    def _fire(self, due: list[tuple[datetime, str]]) -> None:
        """`ScoringConsumer._fire_timers`: evaluate what came due, round after round until nothing does,
        at most 1,000 rounds (the consumer then leaves the rest for after the next event)."""
        evaluate = self.engine.evaluate
        clock = self.clock
        schedule = clock.schedule
        states = self.states
        rounds = 0
        while due:
            for at, account in due:
                outcome = evaluate(states[account], at)
                self.evaluations += 1
                schedule(account, outcome.next_due)
                if outcome.transitions:
                    self._note(account, outcome.transitions)
            rounds += 1
            if rounds == TIMER_ROUNDS:
                self.stuck += 1
                return
            due = clock.pop_due()

    def _note(self, account: str, transitions: Sequence[RiskTransition]) -> None:
        for tr in transitions:
            if tr.transition == "opened":
                self.openings.setdefault(account, []).append((tr.type, tr.occurred_at))

    def advance(self, cut: datetime) -> None:
        """Move the watermark to `cut` (as an event at `cut` + lateness would) and fire what is due."""
        self.clock.observe(cut + self.clock.allowed_lateness)
        due = self.clock.pop_due()
        if due:
            self._fire(due)

    def fork(self) -> _Line:
        """An independent copy: states through the service's codec, the same timers and watermark."""
        clock = self.clock
        copy = PartitionClock(clock.allowed_lateness, clock.watermark)
        states = {}
        for account, state in self.states.items():
            states[account] = decode_state(encode_state(state))
            due = clock.due_at(account)
            if due is not None:
                copy.schedule(account, due)
        return _Line(self.engine, copy, states, {a: list(v) for a, v in self.openings.items()})

    def accounts_at(self, cut: datetime, lookback: timedelta) -> dict[str, AccountAtCut]:
        engine = self.engine
        since = cut - lookback
        out = {}
        for account, state in self.states.items():
            snap = engine.snapshot(state)
            risks: dict[str, datetime] = {}
            open_types = []
            for risk in engine.open_risks(state):
                open_types.append(risk["type"])
                risks[risk["type"]] = datetime.fromisoformat(risk["opened_at"])
            for rtype, opened in self.openings.get(account, ()):
                if since <= opened <= cut and (rtype not in risks or opened < risks[rtype]):
                    risks[rtype] = opened
            out[account] = AccountAtCut(account, snap.score, snap.tier, tuple(open_types), risks)
        return out


def merge(streams: Sequence[Sequence[Event]]) -> tuple[list[Event], bool]:
    """The consumer's merge of one partition's topics (given in topic-name order), and whether every
    topic is in event-time order (then the merge is a stable sort)."""
    in_order = all(all(map(operator.le, keys, keys[1:])) for keys in
                   ([e.occurred_at for e in s] for s in streams))
    if in_order:
        return sorted(chain.from_iterable(streams), key=_occurred), True
    # heapq.merge takes the smallest head; equal keys go to the earlier iterable, i.e. the topic first
    # in name order, and each iterable is taken in its own (offset) order.
    return list(heapq.merge(*streams, key=_occurred)), False


def _prefix_length(streams: Sequence[Sequence[Event]], merged: Sequence[Event], in_order: bool,
                   cut: datetime) -> int | None:
    """How many merged events precede `cut` when they form a prefix of every topic; None otherwise."""
    if in_order:
        return bisect_left(merged, cut, key=_occurred)
    total = 0
    for stream in streams:
        before = sum(1 for e in stream if e.occurred_at < cut)
        first_late = next((i for i, e in enumerate(stream) if e.occurred_at >= cut), len(stream))
        if before != first_late:
            return None
        total += before
    return total


def replay(history: History, cuts: Sequence[datetime], engine: ScoringEngine, *, allowed_lateness: timedelta,
           lookback: timedelta = timedelta(0), progress: Callable[[str], None] | None = None,
           on_cut: Callable[[datetime, dict[str, AccountState]], None] | None = None) -> ReplayResult:
    """Every account's state as of every cut (see the module docstring), and the activity of each account
    (its events before the last cut, and its window counts before each cut) for the baselines.
    `on_cut(cut, states)` is shown each partition's account states as of each cut (`churnsignal
    calibrate` measures them)."""
    started = time.perf_counter()
    cuts = sorted(set(cuts))
    result = ReplayResult(cuts, [{} for _ in cuts], dict(history.activity))
    # (the reader counts the windows of the cuts it is given; any other cut's are counted here)
    uncounted = [cut for cut in cuts if cut.timestamp() not in history.counted_cuts]
    done = 0
    next_report = PROGRESS_EVERY
    for p in range(history.partitions):
        streams = history.streams[p]
        repeated = history.repeated_ids[p]
        merged, in_order = merge(streams)
        line = _Line(engine, PartitionClock(allowed_lateness), {}, {})
        pos = 0
        for i, cut in enumerate(cuts):
            end = _prefix_length(streams, merged, in_order, cut)
            if end is None:
                result.separate_replays += 1
                alone = _Line(engine, PartitionClock(allowed_lateness), {}, {})
                before = [[e for e in s if e.occurred_at < cut] for s in streams]
                alone.run(merge(before)[0], repeated)
                alone.advance(cut)
                result.accounts[i].update(alone.accounts_at(cut, lookback))
                if on_cut is not None:
                    on_cut(cut, alone.states)
                result.evaluations += alone.evaluations
                result.stuck_timers += alone.stuck
                continue
            while pos < end:
                stop = min(end, pos + _CHUNK)
                result.duplicates += line.run(merged[pos:stop], repeated)
                done += stop - pos
                pos = stop
                if progress is not None and done >= next_report:
                    next_report += PROGRESS_EVERY
                    elapsed = time.perf_counter() - started
                    progress(f"replayed {done:,} events ({done / elapsed:,.0f} events/s)")
            copy = line.fork() if i < len(cuts) - 1 else line     # (nothing comes after the last cut)
            copy.advance(cut)
            result.accounts[i].update(copy.accounts_at(cut, lookback))
            if on_cut is not None:
                on_cut(cut, copy.states)
            if copy is not line:
                result.evaluations += copy.evaluations
                result.stuck_timers += copy.stuck
        result.evaluations += line.evaluations
        result.stuck_timers += line.stuck
        result.applied += pos
        if repeated:
            _activity_in_merge_order(merged, repeated, result.activity)
        if repeated or uncounted:
            _windows_in_merge_order(merged, repeated, result.activity, cuts if repeated else uncounted)
    result.applied -= result.duplicates
    result.seconds = time.perf_counter() - started
    return result


def _first_of_each_id(merged: Sequence[Event], repeated: set[str]) -> Iterator[Event]:
    """The merged events with each repeated id taken once, its first in the merge (as the replay applies it)."""
    seen: set[str] = set()
    for event in merged:
        if event.id in repeated:
            if event.id in seen:
                continue
            seen.add(event.id)
        yield event


def _activity_in_merge_order(merged: Sequence[Event], repeated: set[str], out: dict[str, Activity]) -> None:
    """The activity of a partition whose events repeat ids, each id counted once (the first in the merge,
    as the replay applies it)."""
    usage = EventType.USAGE
    times: dict[str, list[float]] = {}
    days: dict[str, set[int]] = {}
    for event in _first_of_each_id(merged, repeated):
        account = event.account_id
        ts = event.occurred_at.timestamp()
        times.setdefault(account, []).append(ts)
        if event.type is usage:
            days.setdefault(account, set()).add(int(ts // DAY_S))
    for account, stamps in times.items():
        known = out.get(account)
        out[account] = Activity(sorted(stamps), sorted(days.get(account, ())),
                                {} if known is None else known.window_counts)


def _windows_in_merge_order(merged: Sequence[Event], repeated: set[str], out: dict[str, Activity],
                            cuts: Sequence[datetime]) -> None:
    """The window counts of a partition's accounts before each of `cuts`, each id counted once (the first
    in the merge), replacing what the reader counted for those cuts."""
    windows = count_windows(cuts)
    counted: dict[str, list[WindowCounts]] = {}
    for event in _first_of_each_id(merged, repeated):
        ts = event.occurred_at.timestamp()
        for lo, hi, i in windows:
            if lo <= ts < hi:
                per_cut = counted.get(event.account_id)
                if per_cut is None:
                    per_cut = counted[event.account_id] = [{} for _ in windows]
                count_event(per_cut[i], event)
    keys = [cut.timestamp() for cut in cuts]
    for account in {e.account_id for e in merged}:
        known = out[account]
        windows_of = {k: v for k, v in known.window_counts.items() if k not in keys}
        for key, counts in zip(keys, counted.get(account, [{} for _ in keys]), strict=True):
            if counts:
                windows_of[key] = counts
        out[account] = Activity(known.event_times, known.usage_days, windows_of)
