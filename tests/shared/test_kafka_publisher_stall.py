"""A Kafka producer that stops acknowledging (seen after a broker restart: its sender waits on a connection
that is gone) is replaced, so ingest answers 503 for a while and then accepts again, instead of 503 for
ever. The producer is a stand-in here; the broker restart itself is `make chaos`'s first case."""

from __future__ import annotations

import asyncio

from shared.bus.port import OutMessage
from shared.errors import BusUnavailable
from tests.support.kafka_producer import FakeProducer, publisher_over


async def test_a_producer_that_stops_acknowledging_is_replaced(monkeypatch) -> None:
    producers = [FakeProducer(stalled=True), FakeProducer()]
    publisher, made = publisher_over(monkeypatch, producers, timeout_s=0.2)
    await publisher.start()
    message = [OutMessage("t", b"acme", b"{}")]
    try:
        answers: list[str] = []
        for _ in range(200):
            try:
                await publisher.publish(message)
                answers.append("accepted")
                break
            except BusUnavailable:
                answers.append("unavailable")
                await asyncio.sleep(0.05)
        assert answers[0] == "unavailable"           # the stalled producer took it and never acknowledged
        assert answers[-1] == "accepted"             # the replacement did
        assert len(made) == 2 and producers[0].stopped
        assert producers[0].sent >= 1 and producers[1].sent == 1
    finally:
        await asyncio.wait_for(publisher.stop(), 10)
