"""A stand-in for aiokafka's producer under `shared.bus.kafka.KafkaPublisher`: it acknowledges every batch,
acknowledges none (stalled), or refuses every batch with OutOfOrderSequenceNumber; its connection's
metadata probe answers or fails. `publisher_over` makes a publisher whose successive producers are these."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, OutOfOrderSequenceNumber

from shared.bus import kafka


class _Builder:
    def append(self, **_: Any) -> object:
        return object()

    def close(self) -> None:
        pass


class _Client:
    def __init__(self, answers: bool) -> None:
        self.answers = answers

    def get_random_node(self) -> int:
        return 1

    async def send(self, *_: Any) -> Any:
        if not self.answers:
            raise KafkaConnectionError("connection stuck")
        return type("Answer", (), {"brokers": [1]})()


class FakeProducer:
    """`stalled`: `send_batch` hands back a future that never resolves; `refuses`: every batch fails with
    OutOfOrderSequenceNumber; `probe_answers`: the metadata probe on its connection answers."""

    def __init__(self, *, stalled: bool = False, refuses: bool = False, probe_answers: bool = True) -> None:
        self.stalled = stalled
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
        elif not self.stalled:
            ack.set_result(None)
        return ack


def publisher_over(monkeypatch: pytest.MonkeyPatch, producers: Sequence[FakeProducer],
                   timeout_s: float) -> tuple[kafka.KafkaPublisher, list[FakeProducer]]:
    """A publisher whose n-th producer is `producers[n]`; the list of those it made so far."""
    made: list[FakeProducer] = []

    def new_producer(self: kafka.KafkaPublisher) -> FakeProducer:
        made.append(producers[len(made)])
        return made[-1]

    monkeypatch.setattr(kafka.KafkaPublisher, "_new_producer", new_producer)
    return kafka.KafkaPublisher("127.0.0.1:1", "test", publish_timeout_s=timeout_s), made
