"""How a scoring consumer runs: batch sizes, lateness, back-pressure, timeouts and cadences.

Its own module so the consumer's parts (intake, batches, offsets) read their settings from one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from services.scoring.entrypoints.feed import DEFAULT_IDLE_TIMEOUT_S


@dataclass(frozen=True)
class ConsumerOptions:
    group_id: str
    partitions: int = 6             # partitions of the topics, when this consumer has to create them
    max_batch: int = 5000
    allowed_lateness: timedelta = timedelta(hours=1)
    poll_timeout_ms: int = 200
    # Entries buffered (all partitions) that bound the merge's queues: a topic-partition whose queue
    # holds more than its share is paused at the fetcher until it drains to half (back-pressure; the
    # merge never goes on without a lagging topic).
    max_buffered: int = 200_000
    # How long a topic whose end the broker cannot tell may stay silent before the merge goes on
    # without it (feed.py states the rule).
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    # How long after a record was produced an empty topic's end must be asked to count as fresh: one
    # publish spanning several topics lands on Kafka in no fixed order (feed.py). 0 for a bus that
    # appends a publish at once (the in-process one).
    publish_settle_s: float = 0.1
    ends_refresh_s: float = 1.0
    # Kafka offsets follow the committed batches at most this often, and once more when idle.
    offsets_every_s: float = 0.5
    # A partition waiting this long for a lagging topic is reported (log), then again as often.
    blocked_report_s: float = 30.0
    recent_ids: int = 20_000
    # Decoded states of the accounts touched most recently, kept beside their encoded form so a busy
    # account is not decoded again for every batch (bounded: the encoded states are what scales).
    live_states: int = 5_000
    # Timer evaluations per batch (None: no bound). A daily tick makes every account due at once; the
    # sweep then goes in batches of this many, between live events (batches.py, `BatchBuilder`).
    sweep_chunk: int | None = 500
    # The deduplication horizon (docs/retention.md): an event this far behind its partition's watermark is
    # counted as expired, not applied, since its id may have been pruned (None: every event is applied).
    dedup_horizon: timedelta | None = None
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    # The open-risk and revenue gauges are read from the database this often.
    risk_gauge_refresh_s: float = 30.0
