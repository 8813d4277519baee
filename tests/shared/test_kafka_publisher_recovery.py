"""Two more ways a Kafka producer stopped publishing after a broker restart under load (`make chaos`, case 1),
and the replacement that ends each: every batch refused with OutOfOrderSequenceNumber (the idempotent
producer's sequence numbers no longer match the broker's), and a readiness probe that fails for ever on the
producer's own connection, so that no publish gets through to time out. The producer is a stand-in here, as
in test_kafka_publisher_stall.py."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import KafkaConnectionError, OutOfOrderSequenceNumber

from shared.bus import kafka
from shared.bus.port import OutMessage
from shared.errors import BusUnavailable
from tests.shared.test_kafka_publisher_stall import _Builder


class _Client:
    def __init__(self, answers: bool) -> None:
        self.answers = answers

    def get_random_node(self) -> int:
        return 1

    async def send(self, *_: Any) -> Any:
        if not self.answers:
            raise KafkaConnectionError("connection stuck")
        return type("Answer", (), {"brokers": [1]})()


class _Producer:
    """`refuses`: every batch fails with OutOfOrderSequenceNumber; `probe_answers`: the metadata probe on its
    connection answers."""

    def __init__(self, *, refuses: bool = False, probe_answers: bool = True) -> None:
        self.refuses = refuses
        self.client = _Client(probe_answers)
        self.stopped = False
        self.sent = 0

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    async def partitions_for(self, _: str) -> set[int]:
        return {0}

    def create_batch(self) -> _Builder:
        return _Builder()

    async def send_batch(self, *_: Any, **__: Any) -> asyncio.Future[object]:
        ack: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.sent += 1
        if self.refuses:
            ack.set_exception(OutOfOrderSequenceNumber())
        else:
            ack.set_result(None)
        return ack


def _publisher(monkeypatch, producers: list[_Producer], timeout_s: float) -> kafka.KafkaPublisher:
    made: list[_Producer] = []

    def new_producer(self: kafka.KafkaPublisher) -> _Producer:
        made.append(producers[len(made)])
        return made[-1]

    monkeypatch.setattr(kafka.KafkaPublisher, "_new_producer", new_producer)
    return kafka.KafkaPublisher("127.0.0.1:1", "test", publish_timeout_s=timeout_s)


async def _publish_until_accepted(publisher: kafka.KafkaPublisher, attempts: int = 400) -> list[str]:
    answers: list[str] = []
    for _ in range(attempts):
        try:
            await publisher.publish([OutMessage("t", b"acme", b"{}")])
            answers.append("accepted")
            return answers
        except BusUnavailable as exc:
            answers.append(exc.message)
            await asyncio.sleep(0.01)
    raise AssertionError(f"never accepted: {answers[-3:]}")


async def test_a_producer_whose_sequence_state_is_lost_is_replaced_at_once(monkeypatch) -> None:
    # A long timeout: the replacement does not wait for acknowledgements to be overdue.
    lost, fresh = _Producer(refuses=True), _Producer()
    publisher = _publisher(monkeypatch, [lost, fresh], timeout_s=60.0)
    await publisher.start()
    try:
        answers = await _publish_until_accepted(publisher)
        assert answers[0] == "kafka refused the messages: OutOfOrderSequenceNumber"
        assert answers[-1] == "accepted"
        assert lost.stopped and lost.sent == 1 and fresh.sent == 1
    finally:
        await asyncio.wait_for(publisher.stop(), 10)


async def test_a_producer_whose_probe_keeps_failing_is_replaced(monkeypatch) -> None:
    stuck, fresh = _Producer(probe_answers=False), _Producer()
    publisher = _publisher(monkeypatch, [stuck, fresh], timeout_s=0.05)
    await publisher.start()
    try:
        publisher._ready = False     # (as after a failed publish: the next one asks the probe first)
        answers = await _publish_until_accepted(publisher)
        assert answers[0] == "kafka is not reachable" and answers[-1] == "accepted"
        assert stuck.stopped and stuck.sent == 0    # no publish ever reached it
        assert fresh.sent == 1
    finally:
        await asyncio.wait_for(publisher.stop(), 10)


async def test_a_probe_that_fails_briefly_replaces_nothing(monkeypatch) -> None:
    flaky = _Producer(probe_answers=False)
    publisher = _publisher(monkeypatch, [flaky], timeout_s=60.0)
    await publisher.start()
    try:
        for _ in range(3):
            assert not await publisher._check(flaky)   # type: ignore[arg-type]
        flaky.client.answers = True
        assert await publisher._check(flaky)           # type: ignore[arg-type]
        assert publisher._recycling is None and not flaky.stopped
    finally:
        await asyncio.wait_for(publisher.stop(), 10)
