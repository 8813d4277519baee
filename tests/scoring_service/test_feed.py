"""The merge of one partition's input topics: the same logs give the same order, however fetched."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from services.scoring.entrypoints.feed import Entry, PartitionFeed
from shared.bus.port import Record
from shared.events import Event, EventType, UsageData

TOPICS = ("p.accounts", "p.sentiment", "p.tickets", "p.usage")
T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _log(topic: str, n: int, rng: random.Random) -> list[Entry]:
    """n records of one topic, occurred_at roughly increasing but out of order here and there."""
    out = []
    for offset in range(n):
        at = T0 + timedelta(minutes=offset * 7 + rng.randint(-20, 20))
        event = Event(f"{topic}-{offset}", EventType.USAGE, "a", at, UsageData(feature="login"))
        out.append(Entry(Record(topic, 0, offset, b"a", b"{}", 0), event))
    return out


def _drain(logs: dict[str, list[Entry]], rng: random.Random, chunk: int) -> list[str]:
    """Feed the logs in random fetch chunks, taking entries whenever the merge allows."""
    feed = PartitionFeed(0, TOPICS, {})
    feed.set_ends({t: len(entries) for t, entries in logs.items()})
    cursors = dict.fromkeys(logs, 0)
    order: list[str] = []
    while len(order) < sum(len(v) for v in logs.values()):
        pending = [t for t in logs if cursors[t] < len(logs[t])]
        if pending:
            topic = rng.choice(pending)
            take = rng.randint(1, chunk)
            for entry in logs[topic][cursors[topic]:cursors[topic] + take]:
                assert feed.accepts(entry.record)
                feed.add(entry)
            cursors[topic] += take
        while (entry := feed.pop()) is not None:
            assert entry.event is not None
            order.append(entry.event.id)
        assert pending or not feed.buffered, "everything fetched: nothing may wait"
    return order


def test_the_merge_order_does_not_depend_on_how_records_were_fetched():
    rng = random.Random(5)
    logs = {t: _log(t, n, rng) for t, n in zip(TOPICS, (40, 25, 60, 300), strict=True)}
    orders = {tuple(_drain(logs, random.Random(seed), chunk)) for seed in range(20) for chunk in (1, 7, 500)}
    assert len(orders) == 1
    (order,) = orders
    # Within a topic, offset order; across topics, by occurred_at then topic.
    for topic, entries in logs.items():
        ids = [i for i in order if i.startswith(topic)]
        assert ids == [e.event.id for e in entries if e.event is not None]


def test_a_topic_with_records_not_yet_fetched_holds_the_merge_back_until_forced():
    rng = random.Random(1)
    logs = {t: _log(t, 3, rng) for t in TOPICS}
    feed = PartitionFeed(0, TOPICS, {})
    feed.set_ends({t: 3 for t in TOPICS})
    for entry in logs["p.usage"]:
        feed.add(entry)
    assert feed.pop() is None and sorted(feed.blocked_on()) == sorted(set(TOPICS) - {"p.usage"})
    assert feed.pop(force=True) is logs["p.usage"][0]
    # A topic read to its end does not hold anything back; already-seen offsets are refused.
    feed = PartitionFeed(0, TOPICS, {"p.tickets": 3})
    feed.set_ends({"p.usage": 3, "p.tickets": 3})
    assert not feed.accepts(logs["p.tickets"][2].record)
    feed.add(logs["p.usage"][0])
    assert feed.pop() is logs["p.usage"][0]
    assert feed.processed["p.usage"] == 1 and feed.lag() == {"p.accounts": 0, "p.sentiment": 0,
                                                             "p.tickets": 0, "p.usage": 2}


def test_bad_records_pass_at_once_and_advance_their_position():
    feed = PartitionFeed(0, TOPICS, {})
    feed.set_ends({"p.usage": 2, "p.tickets": 1})
    good = _log("p.tickets", 1, random.Random(2))[0]
    bad = Entry(Record("p.usage", 0, 0, b"a", b"{not json", 0), None, "not JSON")
    feed.add(bad)
    assert feed.pop() is None, "p.tickets is not fetched yet"
    feed.add(good)
    assert feed.pop() is bad and feed.processed["p.usage"] == 1
    assert feed.pop() is None, "p.usage has a record left to fetch"
