"""A Kafka producer that stops acknowledging (seen after a broker restart: its sender waits on a connection
that is gone) is replaced, so ingest answers 503 for a while and then accepts again, instead of 503 for
ever. The producer is a stand-in here; the broker restart itself is `make chaos`'s first case."""

from __future__ import annotations

import asyncio
from typing import Any

from shared.bus import kafka
from shared.bus.port import OutMessage
from shared.errors import BusUnavailable


class _Builder:
    def append(self, **_: Any) -> object:
        return object()

    def close(self) -> None:
        pass


class _Client:
    def get_random_node(self) -> int:
        return 1

    async def send(self, *_: Any) -> Any:
        return type("Answer", (), {"brokers": [1]})()


class _Producer:
    """Acknowledges every batch, or (stalled) none: `send_batch` hands back a future that never resolves."""

    def __init__(self, stalled: bool) -> None:
        self.stalled = stalled
        self.stopped = False
        self.sent = 0
        self.client = _Client()

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
        if not self.stalled:
            ack.set_result(None)
        return ack


async def test_a_producer_that_stops_acknowledging_is_replaced(monkeypatch) -> None:
    producers = [_Producer(stalled=True), _Producer(stalled=False)]
    made: list[_Producer] = []

    def new_producer(self: kafka.KafkaPublisher) -> _Producer:
        made.append(producers[len(made)])
        return made[-1]

    monkeypatch.setattr(kafka.KafkaPublisher, "_new_producer", new_producer)
    publisher = kafka.KafkaPublisher("127.0.0.1:1", "test", publish_timeout_s=0.2)
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
