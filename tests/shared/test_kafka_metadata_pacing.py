"""A producer whose broker is down asks for metadata ten times a second, not as fast as it is refused
(shared/bus/kafka.py, `pace_metadata_retries`). The client is a stand-in answering like aiokafka's
`force_metadata_update` (a future of True or False); the sender's loop is reproduced around it."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from shared.bus import kafka


class Client:
    """aiokafka's client as the sender sees it: each update answered at once, False while the broker is down."""

    def __init__(self, answers: list[bool]) -> None:
        self.answers = answers
        self.asked = 0

    def force_metadata_update(self) -> asyncio.Future[bool]:
        self.asked += 1
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        done.set_result(self.answers.pop(0) if self.answers else True)
        return done


class Pauses:
    def __init__(self) -> None:
        self.taken: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.taken.append(seconds)


async def _sender_loop(client: Client, rounds: int) -> list[bool]:
    """What aiokafka's sender does while a partition has no known leader: ask, wait for the answer, again."""
    answers = []
    for _ in range(rounds):
        done, _ = await asyncio.wait({client.force_metadata_update()}, return_when=asyncio.FIRST_COMPLETED)
        answers.append(done.pop().result())
    return answers


async def test_each_failed_update_is_answered_after_the_pause() -> None:
    client, pauses = Client([False] * 5), Pauses()
    kafka.pace_metadata_retries(client, pause_s=0.1, sleep=pauses)
    assert await _sender_loop(client, 5) == [False] * 5
    assert client.asked == 5
    assert pauses.taken == [0.1] * 5


async def test_a_successful_update_is_answered_at_once() -> None:
    client, pauses = Client([False, False, True, True]), Pauses()
    kafka.pace_metadata_retries(client, pause_s=0.1, sleep=pauses)
    assert await _sender_loop(client, 4) == [False, False, True, True]
    assert pauses.taken == [0.1, 0.1]     # the broker back: no pause once an update succeeds


async def test_a_paused_loop_asks_at_most_once_per_pause() -> None:
    # The real pause: asyncio.sleep waits at least that long, so 3 failed rounds take at least 3 pauses.
    client = Client([False] * 3)
    kafka.pace_metadata_retries(client, pause_s=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await _sender_loop(client, 3)
    assert loop.time() - started >= 3 * 0.05


async def test_the_publisher_paces_each_producer_it_makes() -> None:
    publisher = kafka.KafkaPublisher("127.0.0.1:1", client_id="t", publish_timeout_s=1.0)
    producer = publisher._new_producer()
    assert isinstance(producer, AIOKafkaProducer)
    # an instance attribute of this producer's client, not aiokafka's method
    assert "force_metadata_update" in vars(producer.client)
