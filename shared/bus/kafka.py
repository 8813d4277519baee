"""Kafka adapter of the Bus port (aiokafka): idempotent producer with acks=all, manual commits."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTP
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from shared.bus.port import OutMessage, RebalanceListener, Record, TopicPartition
from shared.errors import BusUnavailable

log = logging.getLogger(__name__)


class KafkaBus:
    def __init__(self, bootstrap_servers: str, *, client_id: str = "churnsignal",
                 publish_timeout_s: float = 10.0, max_poll_records: int = 5000) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.publish_timeout_s = publish_timeout_s
        self.max_poll_records = max_poll_records

    def publisher(self) -> KafkaPublisher:
        return KafkaPublisher(self.bootstrap_servers, self.client_id, self.publish_timeout_s)

    def subscriber(self, topics: Sequence[str], group_id: str,
                   listener: RebalanceListener | None = None) -> KafkaSubscriber:
        return KafkaSubscriber(self.bootstrap_servers, tuple(topics), group_id, listener,
                               client_id=self.client_id, max_poll_records=self.max_poll_records)

    async def ensure_topics(self, topics: Sequence[str], partitions: int) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id=self.client_id)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [NewTopic(t, num_partitions=partitions, replication_factor=1)
                       for t in topics if t not in existing]
            if missing:
                try:
                    await admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass
        finally:
            await admin.close()

    async def close(self) -> None:
        return None


class KafkaPublisher:
    """Starts even while the broker is down; `publish` then raises BusUnavailable until it is back."""

    def __init__(self, bootstrap_servers: str, client_id: str, publish_timeout_s: float) -> None:
        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self._timeout = publish_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._ready_at = 0.0
        self._ready = False

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=1,
            max_batch_size=256 * 1024,
            request_timeout_ms=int(self._timeout * 1000),
        )

    async def _connect(self) -> None:
        delay = 0.2
        while True:
            producer = self._new_producer()
            try:
                await producer.start()
            except KafkaError as exc:
                await producer.stop()
                log.warning("kafka producer cannot connect yet (%s); retrying in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._producer = producer
            return

    async def start(self) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self._start_once()), timeout=self._timeout)
        except TimeoutError:
            log.warning("kafka not reachable at start; ingest answers 503 until it is")

    async def _start_once(self) -> None:
        if self._connect_task is None:
            self._connect_task = asyncio.create_task(self._connect())
        await self._connect_task

    async def stop(self) -> None:
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
            try:
                await self._connect_task
            except asyncio.CancelledError:
                pass
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        producer = self._producer
        if producer is None:
            raise BusUnavailable("kafka is not reachable")
        try:
            async with asyncio.timeout(self._timeout):
                futures = [await producer.send(m.topic, m.value, key=m.key) for m in messages]
                await asyncio.gather(*futures)
        except TimeoutError as exc:
            self._ready = False
            raise BusUnavailable("kafka did not acknowledge in time") from exc
        except KafkaError as exc:
            self._ready = False
            raise BusUnavailable(f"kafka refused the messages: {type(exc).__name__}") from exc

    async def ready(self) -> bool:
        producer = self._producer
        if producer is None:
            return False
        now = time.monotonic()
        if now - self._ready_at < 1.0:
            return self._ready
        self._ready_at = now
        try:
            async with asyncio.timeout(2.0):
                await producer.client.fetch_all_metadata()
            self._ready = True
        except (KafkaError, TimeoutError, OSError):
            self._ready = False
        return self._ready


class _ListenerBridge(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, listener: RebalanceListener, subscriber: KafkaSubscriber) -> None:
        self._listener = listener
        self._subscriber = subscriber

    async def on_partitions_revoked(self, revoked: list[KafkaTP]) -> None:
        await self._listener.on_revoked({TopicPartition(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: list[KafkaTP]) -> None:
        await self._listener.on_assigned({TopicPartition(tp.topic, tp.partition) for tp in assigned},
                                         self._subscriber)


class KafkaSubscriber:
    def __init__(self, bootstrap_servers: str, topics: tuple[str, ...], group_id: str,
                 listener: RebalanceListener | None, *, client_id: str, max_poll_records: int) -> None:
        self.topics = topics
        self.group_id = group_id
        self._listener = listener
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_poll_records,
            fetch_max_bytes=32 * 1024 * 1024,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )

    async def start(self) -> None:
        await self._consumer.start()
        bridge = _ListenerBridge(self._listener, self) if self._listener is not None else None
        if bridge is not None:
            self._consumer.subscribe(list(self.topics), listener=bridge)
        else:
            self._consumer.subscribe(list(self.topics))

    async def stop(self) -> None:
        await self._consumer.stop()

    async def getmany(self, timeout_ms: int = 1000, max_records: int | None = None) -> list[Record]:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        out: list[Record] = []
        for tp, msgs in batches.items():
            for m in msgs:
                out.append(Record(tp.topic, tp.partition, m.offset, m.key, m.value, m.timestamp))
        return out

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if offsets:
            await self._consumer.commit({KafkaTP(tp.topic, tp.partition): off for tp, off in offsets.items()})

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._consumer.seek(KafkaTP(tp.topic, tp.partition), offset)

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    async def committed(self, tp: TopicPartition) -> int | None:
        return await self._consumer.committed(KafkaTP(tp.topic, tp.partition))

    async def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        ends = await self._consumer.end_offsets([KafkaTP(tp.topic, tp.partition) for tp in partitions])
        return {TopicPartition(tp.topic, tp.partition): off for tp, off in ends.items()}
