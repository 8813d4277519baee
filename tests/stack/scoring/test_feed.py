"""The merge of one partition's input topics: the same logs give the same order, however fetched and
however the topics arrive; an empty topic is passed only once it has delivered (feed.py's rule)."""

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


class _Broker:
    """The logs as a broker holds them, appended over (fake) time; the feed asks it for fresh ends."""

    def __init__(self, logs: dict[str, list[Entry]], appended: dict[str, int]) -> None:
        self.logs = logs
        self.appended = appended       # records of each topic in the log so far

    def ends(self) -> dict[str, int]:
        return dict(self.appended)


def _drain(logs: dict[str, list[Entry]], rng: random.Random, chunk: int, *, live: bool) -> list[str]:
    """Fetch the logs in random chunks, taking entries whenever the merge allows. `live`: the records
    are appended while the merge runs, in event-time order across topics (as time-ordered producers
    would), instead of all being in the log before the start (a backfill)."""
    total = sum(len(v) for v in logs.values())
    if live:
        arrival = sorted((e.event.occurred_at, t, i) for t, entries in logs.items()  # type: ignore[union-attr]
                         for i, e in enumerate(entries))
        broker = _Broker(logs, dict.fromkeys(logs, 0))
    else:
        arrival = []
        broker = _Broker(logs, {t: len(v) for t, v in logs.items()})
    feed = PartitionFeed(0, TOPICS, {}, idle_timeout_s=1e9)
    cursors = dict.fromkeys(logs, 0)
    order: list[str] = []
    now = 0.0
    appended = 0
    while len(order) < total:
        now += 1.0
        if appended < len(arrival):  # a few more records reach the log (every topic keeps its own order)
            for _ in range(rng.randint(1, chunk)):
                if appended < len(arrival):
                    _, topic, _ = arrival[appended]
                    broker.appended[topic] += 1
                    appended += 1
        pending = [t for t in logs if cursors[t] < broker.appended[t]]
        if pending and rng.random() < 0.7:
            topic = rng.choice(pending)
            take = min(rng.randint(1, chunk), broker.appended[topic] - cursors[topic])
            for entry in logs[topic][cursors[topic]:cursors[topic] + take]:
                assert feed.accepts(entry.record)
                feed.add(entry, now, now)
            cursors[topic] += take
            feed.set_ends(dict(cursors))  # what a fetch answer shows: stale as soon as it is read
        while True:
            entry = feed.pop(now)
            if entry is None and feed.wanted:
                feed.confirm_ends(broker.ends(), asked_at=now, asked_wall=now)
                entry = feed.pop(now)
            if entry is None:
                break
            assert entry.event is not None
            order.append(entry.event.id)
        if not pending and appended == len(arrival):
            assert not feed.buffered, "everything fetched: nothing may wait"
    return order


def _logs(rng: random.Random) -> dict[str, list[Entry]]:
    return {t: _log(t, n, rng) for t, n in zip(TOPICS, (40, 25, 60, 300), strict=True)}


def test_the_merge_order_does_not_depend_on_how_records_were_fetched():
    logs = _logs(random.Random(5))
    orders = {tuple(_drain(logs, random.Random(seed), chunk, live=False))
              for seed in range(20) for chunk in (1, 7, 500)}
    assert len(orders) == 1
    (order,) = orders
    # Within a topic, offset order; across topics, by occurred_at then topic.
    for topic, entries in logs.items():
        ids = [i for i in order if i.startswith(topic)]
        assert ids == [e.event.id for e in entries if e.event is not None]


def test_live_arrival_gives_the_backfill_order():
    """Records reaching the log in event-time order while the merge runs, read through stale fetch ends,
    merge exactly like a backfill of the same logs."""
    logs = _logs(random.Random(5))
    for topic, entries in logs.items():   # time-ordered producers: each log in event-time order
        times = sorted(e.event.occurred_at for e in entries)  # type: ignore[union-attr]
        logs[topic] = [Entry(e.record, Event(e.event.id, e.event.type, "a", at, e.event.data))  # type: ignore[union-attr]
                       for e, at in zip(entries, times, strict=True)]
    backfill = _drain(logs, random.Random(0), 7, live=False)
    for seed in range(10):
        for chunk in (1, 5, 40):
            assert _drain(logs, random.Random(seed), chunk, live=True) == backfill, (seed, chunk)


def test_a_topic_with_records_not_yet_fetched_holds_the_merge_back_past_any_timeout():
    rng = random.Random(1)
    logs = {t: _log(t, 3, rng) for t in TOPICS}
    feed = PartitionFeed(0, TOPICS, {}, idle_timeout_s=5)
    feed.confirm_ends({t: 3 for t in TOPICS}, asked_at=0.0, asked_wall=0.0)
    for entry in logs["p.usage"]:
        feed.add(entry, 1.0, 1.0)
    assert feed.pop(2.0) is None and sorted(feed.blocked_on()) == sorted(set(TOPICS) - {"p.usage"})
    assert feed.pop(10_000.0) is None, "a lagging topic is waited for, however long"
    # A topic read to a fresh end does not hold anything back; already-seen offsets are refused.
    feed = PartitionFeed(0, TOPICS, {"p.tickets": 3})
    assert not feed.accepts(logs["p.tickets"][2].record)
    feed.add(logs["p.usage"][0], 1.0, 1.0)
    feed.confirm_ends({"p.accounts": 0, "p.sentiment": 0, "p.tickets": 3, "p.usage": 3}, asked_at=1.0,
                      asked_wall=1.0)
    assert feed.pop(1.0) is logs["p.usage"][0]
    assert feed.processed["p.usage"] == 1 and feed.lag() == {"p.accounts": 0, "p.sentiment": 0,
                                                             "p.tickets": 0, "p.usage": 2}


def test_an_end_remembered_from_an_older_fetch_is_asked_again():
    rng = random.Random(3)
    usage, tickets = _log("p.usage", 2, rng), _log("p.tickets", 1, rng)
    feed = PartitionFeed(0, TOPICS, {}, idle_timeout_s=30)
    feed.confirm_ends({"p.accounts": 0, "p.sentiment": 0, "p.tickets": 0, "p.usage": 0}, asked_at=1.0, asked_wall=1.0)
    feed.add(tickets[0], 2.0, 2.0)
    feed.set_ends({"p.tickets": 1, "p.usage": 0})   # a fetch answer: says nothing about what came since
    assert feed.pop(2.0) is None
    assert feed.wanted == {"p.accounts", "p.sentiment", "p.usage"}
    # The broker, asked, shows usage records appended meanwhile: the merge waits for them.
    feed.confirm_ends({"p.accounts": 0, "p.sentiment": 0, "p.usage": 2}, asked_at=2.5, asked_wall=2.5)
    assert feed.pop(3.0) is None and feed.blocked_on() == ["p.usage"] and not feed.wanted
    for entry in usage:
        feed.add(entry, 3.0, 3.0)
    # Usage records fetched after the last answer: the empty topics are asked again before anything goes.
    assert feed.pop(3.0) is None and feed.wanted == {"p.accounts", "p.sentiment"}
    feed.confirm_ends({"p.accounts": 0, "p.sentiment": 0}, asked_at=3.5, asked_wall=3.5)
    taken = [feed.pop(4.0), feed.pop(4.0)]
    assert taken == sorted(usage + tickets, key=lambda e: e.key)[:2]


def test_a_topic_whose_end_cannot_be_read_is_passed_after_the_idleness_timeout():
    rng = random.Random(4)
    usage = _log("p.usage", 1, rng)
    feed = PartitionFeed(0, TOPICS, {}, idle_timeout_s=30, now=0.0)
    feed.add(usage[0], 1.0, 1.0)
    assert feed.pop(29.0) is None and feed.wanted == {"p.accounts", "p.sentiment", "p.tickets"}
    assert not feed.idle
    assert feed.pop(30.0) is usage[0]
    assert feed.idle == {"p.accounts", "p.sentiment", "p.tickets"}


def test_bad_records_pass_at_once_and_advance_their_position():
    feed = PartitionFeed(0, TOPICS, {})
    feed.set_ends({"p.usage": 2, "p.tickets": 1})
    good = _log("p.tickets", 1, random.Random(2))[0]
    bad = Entry(Record("p.usage", 0, 0, b"a", b"{not json", 0), None, "not JSON")
    feed.add(bad, 1.0, 1.0)
    assert feed.pop(1.0) is bad and feed.processed["p.usage"] == 1
    feed.add(good, 1.0, 1.0)
    assert feed.pop(1.0) is None, "p.usage has a record left to fetch"


def test_an_end_asked_before_a_publish_settled_does_not_count():
    """One publish carried an early ticket and a later usage record; Kafka made the usage record readable
    first. An end of the tickets topic asked right away (before the publish settled) is not trusted."""
    ticket = Entry(Record("p.tickets", 0, 0, b"a", b"{}", 10_000),
                   Event("t", EventType.USAGE, "a", T0, UsageData(feature="login")))
    usage = Entry(Record("p.usage", 0, 0, b"a", b"{}", 10_000),      # both produced at 10.0 s (wall clock)
                  Event("u", EventType.USAGE, "a", T0 + timedelta(hours=1), UsageData(feature="login")))
    feed = PartitionFeed(0, TOPICS, {}, settle_s=0.1)
    feed.add(usage, 1.0, 10.01)
    feed.confirm_ends({"p.accounts": 0, "p.sentiment": 0, "p.tickets": 0}, asked_at=1.01, asked_wall=10.02)
    assert feed.pop(1.02) is None
    assert feed.wanted == {"p.accounts", "p.sentiment", "p.tickets"} and feed.ask_after == 10.1
    # Asked again once settled: the ticket of the same publish has landed meanwhile.
    feed.confirm_ends({"p.accounts": 0, "p.sentiment": 0, "p.tickets": 1}, asked_at=1.11, asked_wall=10.11)
    assert feed.pop(1.12) is None and feed.blocked_on() == ["p.tickets"]
    feed.add(ticket, 1.2, 10.2)
    feed.confirm_ends({"p.accounts": 0, "p.sentiment": 0}, asked_at=1.25, asked_wall=10.25)
    assert feed.pop(1.25) is ticket, "the earlier ticket goes first"
    feed.confirm_ends({"p.accounts": 0, "p.sentiment": 0, "p.tickets": 1}, asked_at=1.3, asked_wall=10.3)
    assert feed.pop(1.3) is usage
