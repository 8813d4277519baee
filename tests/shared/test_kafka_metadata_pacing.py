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


async def _sender_loop(client: Client, rounds: int) -> list[bool]:
    """What aiokafka's sender does while a partition has no known leader: ask, wait for the answer, again."""
    answers = []
    for _ in range(rounds):
        done, _ = await asyncio.wait({client.force_metadata_update()}, return_when=asyncio.FIRST_COMPLETED)
        answers.append(done.pop().result())
    return answers


async def _turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_failed_update_is_answered_only_after_the_pause() -> None:
    client = Client([False])
    kafka.pace_metadata_retries(client, pause_s=3600.0)
    answer = client.force_metadata_update()
    await _turns()
    assert client.asked == 1
    assert not answer.done()          # the refusal is known, the answer waits for the pause


async def test_a_successful_update_is_answered_at_once() -> None:
    client = Client([True])
    kafka.pace_metadata_retries(client, pause_s=3600.0)
    answer = client.force_metadata_update()
    await _turns()
    assert answer.done() and answer.result() is True


async def test_a_paced_loop_asks_at_most_once_per_pause() -> None:
    # The loop's timer waits at least the pause, so 3 failed rounds take at least 3 pauses; then the broker
    # is back and the answer is True.
    client = Client([False, False, False])
    kafka.pace_metadata_retries(client, pause_s=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await _sender_loop(client, 4) == [False, False, False, True]
    assert loop.time() - started >= 3 * 0.05
    assert client.asked == 4


async def test_an_answer_left_pending_when_the_client_closes_is_a_plain_future() -> None:
    # (a task destroyed while pending is logged as an error by asyncio; a future is not)
    client = Client([False])
    kafka.pace_metadata_retries(client, pause_s=3600.0)
    answer = client.force_metadata_update()
    assert not isinstance(answer, asyncio.Task)


async def test_the_publisher_paces_each_producer_it_makes() -> None:
    publisher = kafka.KafkaPublisher("127.0.0.1:1", client_id="t", publish_timeout_s=1.0)
    producer = publisher._new_producer()
    try:
        assert isinstance(producer, AIOKafkaProducer)
        # an instance attribute of this producer's client, not aiokafka's method
        assert "force_metadata_update" in vars(producer.client)
    finally:
        await producer.stop()
