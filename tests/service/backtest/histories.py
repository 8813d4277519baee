"""Small histories for the backtest tests: the scoring stories (tests/domain/scoring/stories.py) as the NDJSON and
CSV files the command reads, and the same events in the order the scoring service would apply them."""

from __future__ import annotations

import gzip
import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from shared.bus.port import partition_for
from shared.events import Event
from shared.topics import Topics
from tests.domain.scoring.stories import (
    Story,
    at_day,
    champion_leaves,
    renewal_while_yellow,
    steady_low_volume,
    steady_story,
    ticket_storm,
    usage_fades,
)
from tests.stack.scoring.events import accounts_on_partition

PARTITIONS = 6
CUT = at_day(50)             # 2026-07-21, a week after the stories' incidents (day 44-45)
CUT_DATE = CUT.date().isoformat()
EARLY_CUT = at_day(30)
CHURNED = {"acme-001": at_day(60), "initech-003": at_day(55)}   # champion_leaves, usage_fades


def stories() -> list[Story]:
    """A few stories, plus one steady account per partition so every partition's clock keeps moving."""
    fillers = [steady_story(accounts_on_partition(p, 1, prefix="steady")[0], seed=30 + p)
               for p in range(PARTITIONS)]
    return [champion_leaves(), usage_fades(), ticket_storm(), renewal_while_yellow(), steady_low_volume(),
            *fillers]


def file_order(chosen: Sequence[Story], *, jitter: timedelta | None = None, seed: int = 5) -> list[dict[str, Any]]:
    """Every story's raw events in one file: by event time (with `jitter`, each event is written up to
    `jitter` later than its event time, so a topic's events are not in event-time order)."""
    rng = random.Random(seed)
    keyed = []
    for s_index, story in enumerate(chosen):
        for raw in story.events:
            when = datetime.fromisoformat(raw["occurred_at"])
            if jitter is not None:
                when += jitter * rng.random()
            keyed.append((when, s_index, len(keyed), raw))
    keyed.sort(key=lambda k: (k[0], k[1], k[2]))
    return [k[3] for k in keyed]


def write_events(path: Path, raws: Sequence[dict[str, Any]]) -> Path:
    data = b"".join(orjson.dumps(raw) + b"\n" for raw in raws)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_outcomes(path: Path, accounts: Sequence[str], churned: dict[str, datetime]) -> Path:
    rows = ["account_id,churned_at"]
    rows += [f"{a},{churned[a].date().isoformat() if a in churned else ''}" for a in accounts]
    path.write_text("\n".join(rows) + "\n")
    return path


def service_order(events: Sequence[Event], partitions: int = PARTITIONS) -> dict[int, list[Event]]:
    """Per partition, the order in which the scoring consumer applies these events (file order = the
    offset order of each topic-partition), by the rule of services/scoring/entrypoints/feed.py: the next
    event is the head of the topic queues with the smallest (occurred_at, topic name, offset)."""
    topics = Topics()
    queues: dict[int, dict[str, list[Event]]] = {}
    for event in events:
        p = partition_for(event.account_id.encode(), partitions)
        queues.setdefault(p, {t: [] for t in topics.inputs})[topics.for_event(event.type)].append(event)
    out: dict[int, list[Event]] = {}
    for p, by_topic in queues.items():
        heads = dict.fromkeys(by_topic, 0)
        order = out[p] = []
        while True:
            keys = [(q[heads[t]].occurred_at, t, heads[t]) for t, q in by_topic.items() if heads[t] < len(q)]
            if not keys:
                break
            _, topic, offset = min(keys)
            order.append(by_topic[topic][offset])
            heads[topic] += 1
    return out
