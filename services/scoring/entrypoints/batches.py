"""Building one scoring batch: merged entries -> states applied in memory and the rows of its transaction.

For the entries of one batch (in merge order): event ids already processed are skipped (ids committed
lately are known without asking the database, the rest in one query), the new events are applied to the
accounts' states, the partition clocks fire the timers of silent accounts, and every outcome is turned
into rows (rows.py). The in-memory states move ahead of the database; the consumer forgets them if the
batch does not commit.

A domain failure on one input raises `Poisoned`: the input is remembered, the consumer reloads from the
database and the batch is built again, that input going to the dead letters (or, for a timer, skipped).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.scoring.adapters.store import (
    AccountRow,
    BatchWrite,
    HealthColumns,
    HealthFeedRow,
    RiskRow,
    ScoringStore,
)
from services.scoring.entrypoints import health_feed, rows
from services.scoring.entrypoints.feed import Entry
from services.scoring.entrypoints.partitions import SERVICE, OwnedPartition
from services.scoring.entrypoints.ports import Outcome, ScoringModel
from shared.bus.port import OutMessage, TopicPartition
from shared.codec import dead_letter
from shared.events import Event
from shared.metrics import CommonMetrics

log = logging.getLogger(__name__)

# Timer rounds one event may fire before the rest waits for the next event (a runaway clock guard).
_TIMER_ROUNDS = 1000
# Events older than the deduplication horizon are logged at most this often (they are all counted).
_EXPIRED_LOG_EVERY_S = 60.0


@dataclass
class BatchWork:
    """What one batch is building before it commits, beside its rows (counts are for the metrics)."""

    states: dict[str, Any] = field(default_factory=dict)       # account -> decoded state
    partition_of: dict[str, int] = field(default_factory=dict)
    due: dict[str, datetime | None] = field(default_factory=dict)
    health: dict[str, HealthColumns] = field(default_factory=dict)
    risks: dict[str, RiskRow] = field(default_factory=dict)
    risk_counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    events: Counter[tuple[str, str]] = field(default_factory=Counter)
    dead: list[OutMessage] = field(default_factory=list)
    dead_reasons: Counter[str] = field(default_factory=Counter)
    latencies: list[datetime] = field(default_factory=list)  # received_at of the processed events
    # The health topic's messages, in the order they happened: all of them (published after the commit)
    # and by partition (stored with the batch, one row per partition).
    health_out: list[OutMessage] = field(default_factory=list)
    health_by_partition: dict[int, list[bytes]] = field(default_factory=dict)


@dataclass(slots=True)
class BuiltBatch:
    """A batch applied in memory, ready for its transaction."""

    batch: BatchWrite
    work: BatchWork
    started: float       # perf_counter() when the batch was taken
    now: datetime


class Poisoned(Exception):
    """The domain raised on one input: the batch is redone without it (it goes to the dead letters)."""


def dead_letter_reason(reason: str) -> str:
    """A low-cardinality label for the metric (the record itself carries the full reason)."""
    if reason.startswith("not JSON"):
        return "not_json"
    if reason == "record has no value":
        return "no_value"
    if reason.startswith("record key"):
        return "key_mismatch"
    if reason.startswith("scoring failed"):
        return "scoring_error"
    return "schema"


class RecentIds:
    """Event ids committed lately, in two generations of up to `limit / 2` each: redeliveries of recent
    records are recognised without asking the database, in bounded memory."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._new: set[str] = set()
        self._old: set[str] = set()

    def seen(self, event_id: str) -> bool:
        return event_id in self._new or event_id in self._old

    def remember(self, ids: set[str]) -> None:
        self._new |= ids
        if len(self._new) > self._limit // 2:
            self._old, self._new = self._new, set()

    def clear(self) -> None:
        """Forget them all: they may come from batches that did not commit."""
        self._new.clear()
        self._old.clear()


class BatchBuilder:
    """Applies batches to the owned partitions' states (shared with the consumer, which loads them)."""

    def __init__(self, *, store: ScoringStore, model: ScoringModel, owned: dict[int, OwnedPartition],
                 deadletter_topic: str, common: CommonMetrics, recent_ids: int, live_states: int,
                 wall_clock: Callable[[], datetime], health_topic: str,
                 sweep_chunk: int | None = None, dedup_horizon: timedelta | None = None) -> None:
        self._store = store
        self._model = model
        self._engine = model.engine
        self._previous = model.previous_health
        self._health_topic = health_topic
        self._owned = owned
        self._deadletter = deadletter_topic
        self._common = common
        self._live_states = live_states
        self._now = wall_clock
        # Timer evaluations one batch may make (None: all that are due). When the watermark passes a
        # midnight, every account's daily tick is due at once: the sweep is spread over batches of at
        # most this many evaluations, interleaved with live events (see `_catch_up`), so neither the
        # batch's memory nor live events' latency grows with the number of accounts.
        self._sweep_chunk = sweep_chunk
        self._budget = -1
        # Quiet ticks, when the engine tells them (`ScoringEngine.skip_to` / `owed`): an account's timer is
        # set past the daily ticks that cannot change anything anyone sees (e.g. an account seen once,
        # weeks before a usage baseline can form), so the sweep at midnight does not evaluate, encode or
        # write it; the one tick it owes is evaluated before its next event (`_catch_up`).
        skip_to, owed = getattr(self._engine, "skip_to", None), getattr(self._engine, "owed", None)
        self._skip_to: Callable[[Any], datetime | None] | None = skip_to if owed is not None else None
        self._owed: Callable[[Any, datetime | None], datetime | None] | None = owed if skip_to is not None else None
        self._recent = RecentIds(recent_ids)
        # Inputs the domain failed on; kept across reloads so the rebuilt batch leaves them out.
        self._poison: set[tuple[str, int, int]] = set()
        self._poison_timers: set[tuple[str, datetime]] = set()
        # How far behind its partition's watermark an event may be and still be applied: processed ids are
        # pruned past it (docs/retention.md), so an older copy could no longer be told from a new event.
        # None: no bound (every id is kept).
        self._horizon = dedup_horizon
        self._expired_logged = -_EXPIRED_LOG_EVERY_S

    def forget(self) -> None:
        """The consumer dropped its in-memory states: the ids remembered since may not have committed."""
        self._recent.clear()

    async def build(self, entries: list[Entry]) -> BuiltBatch:
        """Apply a batch to the in-memory states and gather everything its transaction writes."""
        started = time.perf_counter()
        now = self._now()
        batch = BatchWrite()
        work = BatchWork()
        self._budget = -1 if self._sweep_chunk is None else self._sweep_chunk
        seen = await self._processed_before(entries) if entries else set()
        in_batch = self._apply(entries, seen, work, batch, now)
        if self._budget != 0:
            for owned in self._owned.values():   # a sweep left by earlier batches goes on
                self._fire_timers(work, batch, owned, now)
        batch.processed_ids = list(in_batch)
        self._positions(entries, batch)
        self._health_rows(work, batch)
        self._keep(work, batch)
        self._recent.remember(in_batch)
        return BuiltBatch(batch, work, started, now)

    async def _processed_before(self, entries: list[Entry]) -> set[str]:
        """Which of the entries' event ids the database has processed (those not known lately: one query)."""
        seen_lately = self._recent.seen
        candidates = list(dict.fromkeys(e.event.id for e in entries
                                        if e.event is not None and not seen_lately(e.event.id)))
        return await self._store.already_processed(candidates)

    def _apply(self, entries: list[Entry], seen: set[str], work: BatchWork, batch: BatchWrite,
               now: datetime) -> set[str]:
        """Apply the new events in order (firing the timers they make due); the ids applied."""
        in_batch: set[str] = set()
        seen_lately = self._recent.seen
        owned_by = self._owned
        apply = self._engine.apply
        previous_of = self._previous
        poison = self._poison
        processed: Counter[Any] = Counter()
        duplicates: Counter[Any] = Counter()
        expired: Counter[Any] = Counter()
        horizon = self._horizon
        latencies = work.latencies
        for entry in entries:
            record = entry.record
            event = entry.event
            if event is None or (poison and (record.topic, record.partition, record.offset) in poison):
                self._dead_letter(work, entry)
                continue
            event_id = event.id
            if event_id in seen or event_id in in_batch or seen_lately(event_id):
                duplicates[event.type] += 1
                continue
            owned = owned_by[record.partition]
            watermark = owned.clock.watermark
            if horizon is not None and watermark is not None and event.occurred_at < watermark - horizon:
                expired[event.type] += 1   # its id may be pruned: it cannot be told from a duplicate
                self._log_expired(entry, watermark)
                continue
            in_batch.add(event_id)
            self._catch_up(work, batch, owned, event.account_id, now)
            state = self._state(owned, event.account_id, work)
            previous = previous_of(state)
            try:
                outcome = apply(state, event)
            except Exception as exc:  # a domain failure on one event: dead-letter it, redo the batch
                log.exception("scoring failed on event %s (%s at offset %d)", event_id, record.topic,
                              record.offset)
                poison.add((record.topic, record.partition, record.offset))
                raise Poisoned() from exc
            owned.clock.observe(event.occurred_at)
            self._record(work, batch, owned, event.account_id, state, outcome, event, now, previous)
            self._fire_timers(work, batch, owned, now)
            processed[event.type] += 1
            if event.received_at is not None:
                latencies.append(event.received_at)
        for event_type, n in processed.items():
            work.events[(event_type.value, "processed")] += n
        for event_type, n in duplicates.items():
            work.events[(event_type.value, "duplicate")] += n
        for event_type, n in expired.items():
            work.events[(event_type.value, "expired")] += n
        return in_batch

    def _log_expired(self, entry: Entry, watermark: datetime) -> None:
        """One line at most every _EXPIRED_LOG_EVERY_S (the metric counts every one)."""
        now = time.monotonic()
        if now - self._expired_logged < _EXPIRED_LOG_EVERY_S:
            return
        self._expired_logged = now
        record, event = entry.record, entry.event
        assert event is not None
        log.warning("event %s (%s at offset %d) occurred at %s, more than the deduplication horizon (%s) before "
                    "partition %d's clock (%s): not applied, counted as expired (further ones are only counted "
                    "for %.0fs)", event.id, record.topic, record.offset, event.occurred_at.isoformat(),
                    self._horizon, record.partition, watermark.isoformat(), _EXPIRED_LOG_EVERY_S)

    def _dead_letter(self, work: BatchWork, entry: Entry) -> None:
        record, event = entry.record, entry.event
        reason = entry.reason or "scoring failed on this event"
        work.dead.append(OutMessage(self._deadletter, record.key, dead_letter(
            record.topic, record.partition, record.offset, reason, record.value, SERVICE)))
        work.events[("unknown" if event is None else event.type.value, "dead_letter")] += 1
        work.dead_reasons[dead_letter_reason(reason)] += 1

    @property
    def sweep_pending(self) -> bool:
        """Whether timers are due that the last batch left for later (a bounded sweep goes on)."""
        return any(owned.clock.has_due() for owned in self._owned.values())

    def _fire_timers(self, work: BatchWork, batch: BatchWrite, owned: OwnedPartition, now: datetime) -> None:
        for _ in range(_TIMER_ROUNDS):
            if self._budget == 0:
                return   # the rest of the sweep goes to the next batches
            due = owned.clock.pop_due(None if self._budget < 0 else self._budget)
            if not due:
                return
            if self._budget > 0:
                self._budget -= len(due)
            for at, account_id in due:
                self._timer(work, batch, owned, account_id, at, now)
        log.error("partition %d: timers kept firing; left for the next event", owned.number)

    def _catch_up(self, work: BatchWork, batch: BatchWrite, owned: OwnedPartition, account_id: str,
                  now: datetime) -> None:
        """Before an account's event: its timers a bounded sweep has not reached yet, in order; then the
        tick it owes when its timer skipped quiet ticks the watermark has passed (evaluated once, at the
        latest of them: the same state as evaluating each)."""
        clock = owned.clock
        for _ in range(_TIMER_ROUNDS):
            at = clock.pop_overdue(account_id)
            if at is None:
                break
            self._timer(work, batch, owned, account_id, at, now)
        if self._owed is not None:
            at = self._owed(self._state(owned, account_id, work), clock.watermark)
            if at is not None:
                self._timer(work, batch, owned, account_id, at, now)

    def _timer(self, work: BatchWork, batch: BatchWrite, owned: OwnedPartition, account_id: str, at: datetime,
               now: datetime) -> None:
        if (account_id, at) in self._poison_timers:
            return
        state = self._state(owned, account_id, work)
        previous = self._previous(state)
        try:
            outcome = self._engine.evaluate(state, at)
        except Exception as exc:  # a domain failure on a timer: skip that timer, redo the batch
            log.exception("scoring failed evaluating account %s at %s", account_id, at.isoformat())
            self._poison_timers.add((account_id, at))
            self._common.dead_letters.labels(SERVICE, "scoring_error").inc()
            raise Poisoned() from exc
        self._record(work, batch, owned, account_id, state, outcome, None, now, previous)

    def _record(self, work: BatchWork, batch: BatchWrite, owned: OwnedPartition, account_id: str,
                state: Any, outcome: Outcome, event: Event | None, now: datetime,
                previous: tuple[float | None, str] | None = None) -> None:
        """One outcome: reschedule the account's timer (past its quiet ticks when it has some), then its
        snapshot and transitions as rows and as messages of the health topic (`previous`: the account's
        recorded health before the outcome)."""
        due = outcome.next_due
        if due is not None and self._skip_to is not None:
            later = self._skip_to(state)
            if later is not None:
                due = later
        owned.clock.schedule(account_id, due)
        work.due[account_id] = due
        snap = outcome.health
        if snap is None and not outcome.transitions:
            return
        messages = work.health_by_partition.get(owned.number)
        if messages is None:
            messages = work.health_by_partition[owned.number] = []
        key = account_id.encode()
        if snap is not None:
            as_dict = snap.to_dict()
            batch.history.append(rows.history_row(account_id, snap, as_dict))
            work.health[account_id] = rows.health_columns(snap)
            value = health_feed.health_changed(account_id, snap, as_dict, previous)
            messages.append(value)
            work.health_out.append(OutMessage(self._health_topic, key, value))
        if not outcome.transitions:
            return
        brief = self._engine.account_brief(state)
        for tr in outcome.transitions:
            row = rows.outbox_row(tr, owned.number, account_id, brief, event, now)
            batch.outbox.append(row)
            work.risks[tr.risk_id] = rows.risk_row(tr, account_id, work.risks.get(tr.risk_id))
            work.risk_counts[(tr.type, tr.transition)] += 1
            value = health_feed.risk_changed(account_id, tr, row)
            messages.append(value)
            work.health_out.append(OutMessage(self._health_topic, key, value))

    def _health_rows(self, work: BatchWork, batch: BatchWrite) -> None:
        """The batch's health feed rows: per partition, its messages under the partition's next seq."""
        for number, messages in work.health_by_partition.items():
            owned = self._owned[number]
            owned.health_seq += 1
            batch.health_feed.append(HealthFeedRow(number, owned.health_seq,
                                                   health_feed.SEPARATOR.join(messages)))

    def _state(self, owned: OwnedPartition, account_id: str, work: BatchWork) -> Any:
        """The account's state for this batch: already in it, decoded lately, decoded now, or new."""
        state = work.states.get(account_id)
        if state is None:
            state = owned.live.pop(account_id, None)
            if state is None:
                raw = owned.states.get(account_id)
                state = (self._model.decode_state(raw) if raw is not None
                         else self._engine.new_state(account_id))
            work.states[account_id] = state
            work.partition_of[account_id] = owned.number
        return state

    def _positions(self, entries: Iterable[Entry], batch: BatchWrite) -> None:
        """Positions and watermarks: the feeds know how far this batch took each topic-partition."""
        for n in {e.record.partition for e in entries}:
            owned = self._owned[n]
            batch.watermarks[n] = owned.clock.watermark
            for topic, offset in owned.feed.processed.items():
                batch.positions[TopicPartition(topic, n)] = offset

    def _keep(self, work: BatchWork, batch: BatchWrite) -> None:
        """Encode the touched states into account rows and keep them in memory, ahead of the database
        (the consumer's `_forget` undoes it if this batch does not commit)."""
        encoded = {account: self._model.encode_state(state) for account, state in work.states.items()}
        revenue, portfolio = self._model.revenue, self._model.portfolio
        batch.accounts = [AccountRow(account, work.partition_of[account], raw, work.due.get(account),
                                     work.health.get(account), revenue(work.states[account]),
                                     portfolio(work.states[account]))
                          for account, raw in encoded.items()]
        batch.risks = list(work.risks.values())
        for account, raw in encoded.items():
            owned = self._owned[work.partition_of[account]]
            owned.states[account] = raw
            owned.live[account] = work.states[account]
        self._trim_live()

    def _trim_live(self) -> None:
        per_partition = max(1, self._live_states // max(1, len(self._owned)))
        for owned in self._owned.values():
            live = owned.live
            while len(live) > per_partition:
                live.popitem(last=False)
