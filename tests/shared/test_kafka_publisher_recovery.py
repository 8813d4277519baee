"""Two more ways a Kafka producer stopped publishing after a broker restart under load (`make chaos`, case 1),
and the replacement that ends each: every batch refused with OutOfOrderSequenceNumber (the idempotent
producer's sequence numbers no longer match the broker's), and a readiness probe that fails for ever on the
producer's own connection, so that no publish gets through to time out. The producer is a stand-in here, as
in test_kafka_publisher_stall.py (tests/support/kafka_producer.py)."""

from __future__ import annotations

import asyncio

from shared.bus import kafka
from shared.bus.port import OutMessage
from shared.errors import BusUnavailable
from tests.support.kafka_producer import FakeProducer, publisher_over


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
    lost, fresh = FakeProducer(refuses=True), FakeProducer()
    publisher, _ = publisher_over(monkeypatch, [lost, fresh], timeout_s=60.0)
    await publisher.start()
    try:
        answers = await _publish_until_accepted(publisher)
        assert answers[0] == "kafka refused the messages: OutOfOrderSequenceNumber"
        assert answers[-1] == "accepted"
        assert lost.stopped and lost.sent == 1 and fresh.sent == 1
    finally:
        await asyncio.wait_for(publisher.stop(), 10)


async def test_a_producer_whose_probe_keeps_failing_is_replaced(monkeypatch) -> None:
    stuck, fresh = FakeProducer(probe_answers=False), FakeProducer()
    publisher, _ = publisher_over(monkeypatch, [stuck, fresh], timeout_s=0.05)
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
    flaky = FakeProducer(probe_answers=False)
    publisher, _ = publisher_over(monkeypatch, [flaky], timeout_s=60.0)
    await publisher.start()
    try:
        for _ in range(3):
            assert not await publisher._check(flaky)   # type: ignore[arg-type]
        flaky.client.answers = True
        assert await publisher._check(flaky)           # type: ignore[arg-type]
        assert publisher._recycling is None and not flaky.stopped
    finally:
        await asyncio.wait_for(publisher.stop(), 10)
