"""The Kafka subscriber's progress watch: a group member that makes no progress while the broker answers is
replaced (its listener sees the partitions revoked, then assigned again); idleness by design is left alone;
a topic missing from the consumer's metadata is asked for; retriable poll errors do not stop polling and an
offset commit cannot hang. aiokafka's consumer is a stand-in here; a real broker restart under the scoring
consumer is tests/stack/scoring/test_broker_restart.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition as KafkaTP
from aiokafka.errors import KafkaConnectionError, UnsupportedVersionError

from shared.bus import kafka
from shared.bus.port import TopicPartition
from shared.errors import BusUnavailable

TOPIC = "t.usage"


class _Message:
    def __init__(self, offset: int) -> None:
        self.offset, self.key, self.value, self.timestamp = offset, b"acme", b"{}", 0


class _Client:
    def __init__(self) -> None:
        self.metadata_asked = 0

    def force_metadata_update(self) -> asyncio.Future[bool]:
        self.metadata_asked += 1
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        done.set_result(True)
        return done


class _Consumer:
    """aiokafka's consumer as the subscriber uses it. `mode`: "stuck" (assigned, no fetch ever answers),
    "working" (assigned at the first poll, fetches answer, one record per partition once), "empty" (never
    any partition). `partitions`: what its metadata says the topic has (0: unknown)."""

    def __init__(self, mode: str, partitions: int = 2, *, commit_hangs: bool = False) -> None:
        self.mode = mode
        self.partitions = partitions
        self.commit_hangs = commit_hangs
        self.listener: Any = None
        self.assigned: set[KafkaTP] = set()
        self.paused_tps: set[KafkaTP] = set()
        self.polls = 0
        self.sent = False
        self.stopped = False
        self.errors: list[Exception] = []
        self._client = _Client()

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        self.listener = listener
        if self.mode == "stuck":
            self.assigned = {KafkaTP(TOPIC, p) for p in range(self.partitions)}

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[KafkaTP, list[_Message]]:
        await asyncio.sleep(0)
        if self.errors:
            raise self.errors.pop(0)
        self.polls += 1
        if self.mode == "working" and not self.assigned:
            self.assigned = {KafkaTP(TOPIC, p) for p in range(self.partitions)}
            if self.listener is not None:
                await self.listener.on_partitions_assigned(sorted(self.assigned))
        if self.mode == "working" and not self.sent:
            self.sent = True
            return {tp: [_Message(0)] for tp in sorted(self.assigned)}
        return {}

    def assignment(self) -> set[KafkaTP]:
        return set(self.assigned)

    def paused(self) -> set[KafkaTP]:
        return set(self.paused_tps)

    def pause(self, *tps: KafkaTP) -> None:
        self.paused_tps.update(tps)

    def last_poll_timestamp(self, tp: KafkaTP) -> int | None:
        assert tp in self.assigned
        return self.polls if self.mode == "working" else 1

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(range(self.partitions)) if self.partitions else None

    async def commit(self, offsets: dict[KafkaTP, int]) -> None:
        if self.commit_hangs:
            await asyncio.Event().wait()


class _Lister:
    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class _Listener:
    def __init__(self) -> None:
        self.events: list[tuple[str, set[TopicPartition]]] = []

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        self.events.append(("revoked", partitions))

    async def on_assigned(self, partitions: set[TopicPartition], consumer: Any) -> None:
        self.events.append(("assigned", partitions))


def _subscriber(monkeypatch: pytest.MonkeyPatch, consumers: list[_Consumer], *, members: int = 1,
                broker_answers: bool = True, listener: Any = None,
                broker_topics: tuple[str, ...] = (TOPIC,)) -> kafka.KafkaSubscriber:
    made: list[_Consumer] = []

    def new_consumer(self: kafka.KafkaSubscriber) -> _Consumer:
        made.append(consumers[len(made)])
        return made[-1]

    async def answers(self: kafka.KafkaSubscriber) -> bool:
        return broker_answers

    class _Admin:
        def __init__(self, **_: Any) -> None:
            pass

        async def start(self) -> None:
            pass

        async def close(self) -> None:
            pass

        async def list_topics(self) -> list[str]:
            return list(broker_topics)

        async def describe_consumer_groups(self, groups: list[str]) -> list[Any]:
            described = {"groups": [{"group": groups[0], "state": "Stable", "members": [{}] * members}]}
            return [type("Answer", (), {"to_object": lambda self: described})()]

    monkeypatch.setattr(kafka.KafkaSubscriber, "_new_consumer", new_consumer)
    monkeypatch.setattr(kafka.KafkaSubscriber, "_broker_answers", answers)
    monkeypatch.setattr(kafka, "AIOKafkaConsumer", lambda **_: _Lister())
    monkeypatch.setattr(kafka, "AIOKafkaAdminClient", _Admin)
    monkeypatch.setattr(kafka, "WATCH_EVERY_S", 0.0)
    return kafka.KafkaSubscriber("127.0.0.1:1", (TOPIC,), "g", listener, client_id="test", max_poll_records=10,
                                 stall_s=0.02)


async def _poll(sub: kafka.KafkaSubscriber, until: Any, polls: int = 2000) -> list[Any]:
    got = []
    for _ in range(polls):
        got += await sub.getmany(timeout_ms=0)
        if until():
            return got
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


async def test_a_member_whose_fetches_never_answer_is_replaced_and_its_partitions_move_over(monkeypatch):
    stuck, fresh = _Consumer("stuck"), _Consumer("working")
    listener = _Listener()
    sub = _subscriber(monkeypatch, [stuck, fresh], listener=listener)
    await sub.start()
    unhealthy = []
    got = await _poll(sub, lambda: unhealthy.append(not sub.healthy) or sub.replaced)
    assert stuck.stopped and any(unhealthy)
    got += await _poll(sub, lambda: fresh.sent)
    assert [r.offset for r in got] == [0, 0] and sub.healthy
    both = {TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)}
    assert listener.events == [("revoked", both), ("assigned", both)]   # as in a rebalance
    assert sub.replaced == 1


async def test_a_member_left_without_partitions_in_a_group_that_has_some_for_it_is_replaced(monkeypatch):
    empty, fresh = _Consumer("empty", partitions=2), _Consumer("working")
    sub = _subscriber(monkeypatch, [empty, fresh], members=1)
    await sub.start()
    await _poll(sub, lambda: sub.replaced)
    await _poll(sub, lambda: fresh.sent)
    assert empty.stopped and sub.assignment() == {TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)}


async def test_a_member_without_partitions_because_the_group_has_more_members_is_left_alone(monkeypatch):
    idle = _Consumer("empty", partitions=2)
    sub = _subscriber(monkeypatch, [idle], members=3)
    await sub.start()
    for _ in range(300):
        await sub.getmany(timeout_ms=0)
        await asyncio.sleep(0.001)
    assert sub.replaced == 0 and not idle.stopped and sub.healthy


async def test_paused_partitions_are_idleness_and_a_broker_that_does_not_answer_is_waited_for(monkeypatch):
    paused = _Consumer("stuck")
    sub = _subscriber(monkeypatch, [paused])
    await sub.start()
    sub.pause(sub.assignment())
    for _ in range(300):
        await sub.getmany(timeout_ms=0)
        await asyncio.sleep(0.001)
    assert sub.replaced == 0 and sub.healthy

    waiting = _Consumer("stuck")
    sub = _subscriber(monkeypatch, [waiting], broker_answers=False)
    await sub.start()
    seen = []
    for _ in range(300):
        await sub.getmany(timeout_ms=0)
        seen.append(sub.healthy)
        await asyncio.sleep(0.001)
    # Not replaced while the broker is down (a new member could not do better), but not healthy either.
    assert sub.replaced == 0 and not waiting.stopped and seen[-1] is False


async def test_a_topic_missing_from_the_metadata_is_asked_for(monkeypatch):
    unknown = _Consumer("empty", partitions=0)
    sub = _subscriber(monkeypatch, [unknown], members=1, broker_topics=())
    monkeypatch.setattr(kafka, "METADATA_EVERY_S", 0.0)
    await sub.start()
    for _ in range(300):
        await sub.getmany(timeout_ms=0)
        await asyncio.sleep(0.001)
    assert unknown._client.metadata_asked >= 2
    assert sub.replaced == 0    # the topic does not exist yet: a new member could not do better
    # The broker lists it, the consumer's metadata still does not: stuck, replaced.
    unknown, fresh = _Consumer("empty", partitions=0), _Consumer("working")
    sub = _subscriber(monkeypatch, [unknown, fresh], members=1)
    await sub.start()
    await _poll(sub, lambda: fresh.sent)
    assert unknown.stopped and sub.replaced == 1
    known = _Consumer("working")
    sub = _subscriber(monkeypatch, [known])
    await sub.start()
    await sub.getmany(timeout_ms=0)
    assert known._client.metadata_asked == 0


async def test_retriable_poll_errors_are_polled_through_and_others_raise(monkeypatch):
    consumer = _Consumer("working")
    sub = _subscriber(monkeypatch, [consumer])
    await sub.start()
    consumer.errors.append(KafkaConnectionError())
    assert await sub.getmany(timeout_ms=0) == []
    assert [r.offset for r in await sub.getmany(timeout_ms=0)] == [0, 0]
    consumer.errors.append(UnsupportedVersionError())
    with pytest.raises(UnsupportedVersionError):
        await sub.getmany(timeout_ms=0)


async def test_an_offset_commit_that_never_completes_gives_up(monkeypatch):
    consumer = _Consumer("working", commit_hangs=True)
    sub = _subscriber(monkeypatch, [consumer])
    monkeypatch.setattr(kafka, "REQUEST_BOUND_S", 0.01)
    await sub.start()
    with pytest.raises(BusUnavailable, match="offset commit did not complete"):
        await sub.commit({TopicPartition(TOPIC, 0): 1})
