"""Accepting the events of one request: scope per event type, validation, one publish for all of them.

All or nothing: a request with one forbidden or invalid event publishes nothing; a request whose
publish the bus does not acknowledge in full is a 503, never a 202. Concurrent requests publish
concurrently (the publisher batches them together); nothing here serializes them.

Metric `churnsignal_ingest_events_total{type, outcome}` counts every event of every parsed request:
`accepted`, `invalid` (the event has errors), `rejected` (valid, but another event of its request was
invalid), `forbidden` (the key lacks the scope) and `unavailable` (the bus did not acknowledge).
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter as PromCounter

from shared.bus.port import OutMessage, Publisher
from shared.codec import encode_inputs
from shared.errors import BusUnavailable, Forbidden, Unprocessable
from shared.events import Event, EventType, validate_events
from shared.http import KeyRing
from shared.metrics import IngestMetrics
from shared.settings import ApiKey
from shared.topics import Topics

_TYPES = frozenset(t.value for t in EventType)
_TYPE_OF = operator.attrgetter("type")


def may_ingest(key: ApiKey) -> bool:
    """Whether the key may ingest at least one event type."""
    return KeyRing.has_scope(key, "ingest") or any(s.startswith("ingest:") for s in key.scopes)


def _type_label(raw: Any) -> str:
    kind = raw.get("type") if isinstance(raw, dict) else None
    return kind if isinstance(kind, str) and kind in _TYPES else "unknown"


class Intake:
    def __init__(self, publisher: Publisher, topics: Topics, metrics: IngestMetrics, *, retry_after_s: int,
                 accepting: Callable[[], bool] = lambda: True,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._publisher = publisher
        self._topic_of = {t: topics.for_event(t) for t in EventType}
        self._metrics = metrics
        self._retry_after_s = retry_after_s
        self._accepting = accepting
        self._clock = clock
        # label children, looked up once (labels are a small fixed set: types x outcomes)
        self._counters: dict[tuple[str, str], PromCounter] = {}

    async def accept(self, key: ApiKey, raws: list[Any]) -> int:
        """Publish every event of the request, or none; returns how many were accepted.

        Takes the list over: it is emptied once its events are encoded."""
        self._authorize(key, raws)
        now = self._clock()
        events, errors = validate_events(raws, now=now)
        if errors:
            invalid = {e.index for e in errors}
            self._count((_type_label(raw), "invalid" if i in invalid else "rejected")
                        for i, raw in enumerate(raws))
            noun = "event is" if len(invalid) == 1 else "events are"
            raise Unprocessable(f"{len(invalid)} of {len(raws)} {noun} invalid; nothing was accepted",
                                errors=[e.as_dict() for e in errors])
        if not self._accepting():
            self._count_all(events, "unavailable")
            raise BusUnavailable("the message bus is not ready yet; retry later",
                                 retry_after=self._retry_after_s)
        topic_of = self._topic_of
        # The record value is `encode_input(raw, now)`: the event as sent, plus received_at.
        messages = [OutMessage(topic_of[ev.type], ev.account_id.encode(), value)
                    for ev, value in zip(events, encode_inputs(raws, now), strict=True)]
        kinds = Counter(map(_TYPE_OF, events))
        # Decoded and validated events are garbage once encoded: free them now, not after the broker's
        # acknowledgement, so they never survive into older GC generations (a large CPU cost at load).
        raws.clear()
        del events
        try:
            await self._publisher.publish(messages)
        except BusUnavailable as exc:
            self._metrics.producer_errors.inc()
            self._count_kinds(kinds, "unavailable")
            raise BusUnavailable(f"events not accepted: {exc.message}; retry later",
                                 retry_after=self._retry_after_s) from exc
        self._count_kinds(kinds, "accepted")
        return len(messages)

    def _authorize(self, key: ApiKey, raws: list[Any]) -> None:
        if KeyRing.has_scope(key, "ingest"):
            return
        denied = sorted({label for label in map(_type_label, raws)
                         if label != "unknown" and not KeyRing.has_scope(key, f"ingest:{label}")})
        if denied:
            self._count((_type_label(raw), "forbidden") for raw in raws)
            kinds = ", ".join(f"'{t}'" for t in denied)
            needs = " or ".join(f"'ingest:{t}'" for t in denied)
            raise Forbidden(f"API key '{key.name}' may not ingest {kinds} events "
                            f"(needs scope 'ingest' or {needs})", types=denied)

    def _count_all(self, events: Sequence[Event], outcome: str) -> None:
        self._count_kinds(Counter(map(_TYPE_OF, events)), outcome)

    def _count_kinds(self, kinds: Counter[EventType], outcome: str) -> None:
        for kind, n in kinds.items():
            self._counter(kind.value, outcome).inc(n)

    def _count(self, labels: Iterable[tuple[str, str]]) -> None:
        for (kind, outcome), n in Counter(labels).items():
            self._counter(kind, outcome).inc(n)

    def _counter(self, kind: str, outcome: str) -> PromCounter:
        child = self._counters.get((kind, outcome))
        if child is None:
            child = self._counters[(kind, outcome)] = self._metrics.events.labels(kind, outcome)
        return child
