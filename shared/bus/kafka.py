"""Kafka adapter of the Bus port (aiokafka): idempotent producer with acks=all, manual commits."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTP
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.client import AIOKafkaClient
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    TopicAlreadyExistsError,
    UnknownProducerId,
)
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.protocol.metadata import MetadataRequest

from shared.backoff import Backoff
from shared.bus.port import OutMessage, RebalanceListener, Record, TopicPartition, partition_for
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

    async def ensure_topics(self, topics: Sequence[str], partitions: int,
                            configs: Mapping[str, Mapping[str, str]] | None = None) -> None:
        """Create the missing topics; raises BusUnavailable when the broker cannot be reached. `configs`:
        topic configs by topic name, given to the topics created here and set on those that exist with other
        values (created earlier by a caller that gave none)."""
        configs = configs or {}
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id=self.client_id)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [NewTopic(t, num_partitions=partitions, replication_factor=1,
                                topic_configs=dict(configs.get(t, {})))
                       for t in topics if t not in existing]
            if missing:
                try:
                    await admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass
            await _align_configs(admin, {t: c for t, c in configs.items() if t in existing and t in topics})
        except (KafkaError, OSError) as exc:
            raise BusUnavailable(f"cannot create topics: {type(exc).__name__}") from exc
        finally:
            await admin.close()

    async def delete_topics(self, topics: Sequence[str]) -> None:
        """Delete the given topics that exist (tests and benchmarks clean up after themselves)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id=self.client_id)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            doomed = [t for t in topics if t in existing]
            if doomed:
                await admin.delete_topics(doomed, timeout_ms=30_000)
        except (KafkaError, OSError) as exc:
            raise BusUnavailable(f"cannot delete topics: {type(exc).__name__}") from exc
        finally:
            await admin.close()

    async def close(self) -> None:
        return None


# DescribeConfigs' source of a value set on the topic itself (the others are broker values and defaults).
_DYNAMIC_TOPIC_CONFIG = 1


async def _align_configs(admin: AIOKafkaAdminClient, wanted: Mapping[str, Mapping[str, str]]) -> None:
    """Set the wanted configs on existing topics whose values differ. AlterConfigs replaces a topic's whole
    set of topic-level values, so the ones already set on it are sent again beside the wanted ones."""
    if not wanted:
        return
    answers = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in wanted])
    changes: list[ConfigResource] = []
    for answer in answers:
        for error_code, _, _, name, entries in (r[:5] for r in answer.resources):
            if error_code or name not in wanted:
                continue
            current = {e[0]: e[1] for e in entries}
            if all(current.get(key) == value for key, value in wanted[name].items()):
                continue
            kept = {e[0]: e[1] for e in entries if e[3] == _DYNAMIC_TOPIC_CONFIG and e[1] is not None}
            changes.append(ConfigResource(ConfigResourceType.TOPIC, name, {**kept, **wanted[name]}))
            log.info("topic %s: setting %s", name, ", ".join(f"{k}={v}" for k, v in wanted[name].items()))
    if changes:
        for answer in await admin.alter_configs(changes):
            for error_code, error_message, _, name in (r[:4] for r in answer.resources):
                if error_code:
                    log.warning("topic %s: configs not set (error %d: %s)", name, error_code, error_message)


@dataclass(eq=False, slots=True)
class _PendingPublish:
    """One `publish` call: its messages, and the future it awaits until all of them are acknowledged."""

    messages: Sequence[OutMessage]
    done: asyncio.Future[None]
    # Batch acknowledgements still awaited, plus one hold while the flush that carries it is running.
    waiting: int = 0


def _settle(members: list[_PendingPublish], ack: asyncio.Future[object]) -> None:
    """A batch was acknowledged (or failed): account for it in every call with a message in it."""
    _release(members, BusUnavailable("kafka publisher stopped") if ack.cancelled() else ack.exception())


def _release(members: Sequence[_PendingPublish], error: BaseException | None = None) -> None:
    for pending in members:
        if pending.done.done():
            continue
        if error is not None:
            pending.done.set_exception(error)
            continue
        pending.waiting -= 1
        if pending.waiting == 0:
            pending.done.set_result(None)


def _expire(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_exception(TimeoutError())


# Errors after which an idempotent producer's sequence state no longer matches the broker's (seen after a
# broker restart under load: every batch then fails with OutOfOrderSequenceNumber): only a new producer (a new
# producer id) publishes again.
# After a metadata request that failed, the least pause before the producer asks again (`pace_metadata_retries`).
METADATA_RETRY_S = 0.1


def pace_metadata_retries(client: AIOKafkaClient, pause_s: float = METADATA_RETRY_S) -> None:
    """Make `client` (an aiokafka client) answer a failed metadata update only after `pause_s`.

    aiokafka's sender asks for fresh metadata whenever a partition it holds messages for has no known leader,
    then waits for the answer rather than its retry backoff. With the broker down the refusal is immediate, so
    it asks again at once: about 13,000 connection attempts a second from one ingest process while the broker
    of `make chaos` was stopped, each one logged twice. Paced, it asks ten times a second; an update that
    succeeds is answered at once, so a broker that is back is seen as soon as before. The answer is a plain
    future (no task), so one left unanswered when the client closes is dropped without a word."""
    ask = client.force_metadata_update

    def paced() -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bool] = loop.create_future()

        def settle(updated: bool) -> None:
            if not answer.done():
                answer.set_result(updated)

        def relay(update: asyncio.Future[bool]) -> None:
            if update.cancelled():
                answer.cancel()
            elif update.exception() is not None:
                if not answer.done():
                    answer.set_exception(update.exception())   # type: ignore[arg-type]
            elif update.result():
                settle(True)
            else:
                loop.call_later(pause_s, settle, False)

        asyncio.ensure_future(ask()).add_done_callback(relay)
        return answer

    client.force_metadata_update = paced  # type: ignore[method-assign]  # (this client only)


_PRODUCER_STATE_LOST = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch, ProducerFenced)


def _fail(queue: Sequence[_PendingPublish], error: BaseException) -> None:
    for pending in queue:
        if not pending.done.done():
            pending.done.set_exception(error)


class KafkaPublisher:
    """Starts even while the broker is down; `publish` then raises BusUnavailable until it is back.

    Concurrent `publish` calls are coalesced: one flusher task turns everything queued since its last
    pass into one record batch per partition (aiokafka's batch builder: the per-message Python work is
    a single append, instead of a coroutine and a future per message with `send`) and hands the batches
    to the idempotent producer. A call returns once every batch holding one of its messages is
    acknowledged; a failed batch fails every call with a message in it. A call that gives up (timeout)
    before its messages were flushed is dropped from the queue, so a 503 does not publish later.
    """

    def __init__(self, bootstrap_servers: str, client_id: str, publish_timeout_s: float) -> None:
        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self._timeout = publish_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._ready_at = 0.0
        self._ready = False
        self._probe: asyncio.Task[bool] | None = None
        self._queue: list[_PendingPublish] = []
        self._flushing: list[_PendingPublish] = []
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        # A producer that stops acknowledging while the broker answers (seen after a broker restart: its
        # sender waits on a connection that is gone, or every batch fails with OutOfOrderSequenceNumber) is
        # replaced: when the last acknowledgement is older than `2 * publish_timeout_s` and a publish times out
        # or fails, or the readiness probe fails; at once when a flush cannot hand its batches over or the
        # broker says the producer's sequence state is lost (_PRODUCER_STATE_LOST).
        self._acked_at = time.monotonic()
        self._unready_since: float | None = None    # the readiness probe fails since
        self._recycling: asyncio.Task[None] | None = None
        # Keys (account ids) repeat: remember their partition instead of hashing each time.
        self._partition_of = functools.lru_cache(maxsize=65_536)(partition_for)

    def _new_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=1,
            max_batch_size=256 * 1024,
            request_timeout_ms=int(self._timeout * 1000),
        )
        pace_metadata_retries(producer.client)
        return producer

    async def _connect(self) -> None:
        backoff = Backoff(0.2, cap=5.0)
        while True:
            producer = self._new_producer()
            try:
                await producer.start()
            except KafkaError as exc:
                await producer.stop()
                delay = backoff.next()
                log.warning("kafka producer cannot connect yet (%s); retrying in %.1fs",
                            type(exc).__name__, delay)
                await asyncio.sleep(delay)
                continue
            self._producer = producer
            self._acked_at = time.monotonic()
            return

    def _stalled(self, *, force: bool = False) -> None:
        """Replace the producer (in the background) when it has stopped acknowledging."""
        if self._recycling is not None and not self._recycling.done():
            return
        if force or time.monotonic() - self._acked_at > 2 * self._timeout:
            self._recycling = asyncio.create_task(self._recycle(), name="kafka-publisher-recycle")

    async def _recycle(self) -> None:
        old, self._producer = self._producer, None   # publishes answer BusUnavailable meanwhile
        self._ready = False
        log.warning("kafka producer acknowledged nothing for %.0fs while publishing (or lost its sequence "
                    "state); replacing it", time.monotonic() - self._acked_at)
        if old is not None:
            try:
                await asyncio.wait_for(old.stop(), self._timeout)
            except (KafkaError, TimeoutError, OSError) as exc:
                log.warning("stalled kafka producer did not stop cleanly (%s)", type(exc).__name__)
        await self._connect()
        log.info("kafka producer replaced")

    def _note_ack(self, ack: asyncio.Future[object]) -> None:
        if not ack.cancelled() and ack.exception() is None:
            self._acked_at = time.monotonic()

    async def start(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_forever(), name="kafka-publisher-flush")
        try:
            await asyncio.wait_for(asyncio.shield(self._start_once()), timeout=self._timeout)
        except TimeoutError:
            log.warning("kafka not reachable at start; publishing answers BusUnavailable until it is")

    async def _start_once(self) -> None:
        if self._connect_task is None:
            self._connect_task = asyncio.create_task(self._connect())
        await self._connect_task

    async def stop(self) -> None:
        for task in (self._connect_task, self._probe, self._flusher, self._recycling):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._flusher = None
        queued, self._queue, self._flushing = self._queue + self._flushing, [], []
        _fail(queued, BusUnavailable("kafka publisher stopped"))
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        if self._producer is None or self._flusher is None:
            raise BusUnavailable("kafka is not reachable")
        # After a failure, answer fast instead of queueing behind a dead broker: at most one metadata
        # probe per second decides, shared by every caller.
        if not self._ready and not await self.ready():
            raise BusUnavailable("kafka is not reachable")
        if not messages:
            return
        loop = asyncio.get_running_loop()
        pending = _PendingPublish(messages, loop.create_future())
        self._queue.append(pending)
        self._wakeup.set()
        # A plain timer rather than asyncio.timeout(): cheaper on the hot path, and the expired call is
        # marked done, which tells the flusher to drop it if it has not been sent yet.
        expiry = loop.call_later(self._timeout, _expire, pending.done)
        try:
            await pending.done
        except TimeoutError as exc:
            self._ready = False
            self._stalled()
            raise BusUnavailable("kafka did not acknowledge in time") from exc
        except KafkaError as exc:
            self._ready = False
            self._stalled(force=isinstance(exc, _PRODUCER_STATE_LOST))
            raise BusUnavailable(f"kafka refused the messages: {type(exc).__name__}") from exc
        finally:
            expiry.cancel()

    async def _flush_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            queue = [p for p in self._queue if not p.done.done()]
            self._queue = []
            producer = self._producer
            if not queue:
                continue
            if producer is None:
                _fail(queue, BusUnavailable("kafka is not reachable"))
                continue
            self._flushing = queue
            try:
                # (handing batches over waits for room in the producer's buffer: bounded, so a stalled
                # producer cannot hold every later publish)
                await asyncio.wait_for(self._flush(producer, queue), self._timeout)
            except TimeoutError:
                _fail(queue, BusUnavailable("kafka did not take the messages in time"))
                self._stalled(force=True)
            except KafkaError as exc:
                _fail(queue, exc)
            except Exception as exc:
                # A bug here must fail its callers, not stall every later publish behind a dead task.
                log.exception("kafka publisher flush failed")
                _fail(queue, exc)
            self._flushing = []

    async def _flush(self, producer: AIOKafkaProducer, queue: list[_PendingPublish]) -> None:
        # Partition counts first: a topic whose lookup fails fails only the calls that publish to it.
        counts: dict[str, int] = {}
        broken: dict[str, KafkaError] = {}
        for topic in {m.topic for pending in queue for m in pending.messages}:
            try:
                counts[topic] = len(await producer.partitions_for(topic))
            except KafkaError as exc:
                broken[topic] = exc
        if broken:
            for pending in queue:
                failed = next((broken[m.topic] for m in pending.messages if m.topic in broken), None)
                if failed is not None and not pending.done.done():
                    pending.done.set_exception(failed)
        queue = [p for p in queue if not p.done.done()]  # failed, or gave up while we waited
        for pending in queue:
            pending.waiting = 1  # held until every batch of this flush is handed over
        batches: dict[tuple[str, int], tuple[BatchBuilder, list[_PendingPublish]]] = {}
        for pending in queue:
            for m in pending.messages:
                partition = self._partition_of(m.key, counts[m.topic])
                entry = batches.get((m.topic, partition))
                if entry is None:
                    entry = batches[(m.topic, partition)] = (producer.create_batch(), [])
                builder, members = entry
                if builder.append(key=m.key, value=m.value, timestamp=None) is None:
                    await self._hand_over(producer, m.topic, partition, builder, members)
                    builder, members = entry = batches[(m.topic, partition)] = (producer.create_batch(), [])
                    builder.append(key=m.key, value=m.value, timestamp=None)
                if not members or members[-1] is not pending:
                    members.append(pending)
        for (topic, partition), (builder, members) in batches.items():
            await self._hand_over(producer, topic, partition, builder, members)
        _release(queue)

    async def _hand_over(self, producer: AIOKafkaProducer, topic: str, partition: int, builder: BatchBuilder,
                         members: list[_PendingPublish]) -> None:
        builder.close()
        ack = await producer.send_batch(builder, topic, partition=partition)
        for pending in members:
            pending.waiting += 1
        ack.add_done_callback(self._note_ack)
        ack.add_done_callback(functools.partial(_settle, members))

    async def ready(self) -> bool:
        producer = self._producer
        if producer is None:
            return False
        if time.monotonic() - self._ready_at < 1.0:
            return self._ready
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._check(producer))
        return await asyncio.shield(self._probe)

    async def _check(self, producer: AIOKafkaProducer) -> bool:
        # A metadata request for no topic at all: the broker answers with itself, and the probe stays
        # cheap however many topics the cluster holds (fetching all of them can take seconds).
        try:
            async with asyncio.timeout(2.0):
                node = producer.client.get_random_node()
                self._ready = node is not None and bool(
                    (await producer.client.send(node, MetadataRequest([]))).brokers)
        except (KafkaError, TimeoutError, OSError):
            self._ready = False
        self._ready_at = now = time.monotonic()
        if self._ready:
            self._unready_since = None
        else:
            # (the probe goes over the producer's own connections: one stuck after a broker restart fails it
            # for ever while the broker answers others, and no publish gets through to time out)
            self._unready_since = self._unready_since or now
            if now - self._unready_since > 2 * self._timeout:
                self._stalled()
        return self._ready


class _ListenerBridge(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, listener: RebalanceListener, subscriber: KafkaSubscriber) -> None:
        self._listener = listener
        self._subscriber = subscriber

    async def on_partitions_revoked(self, revoked: list[KafkaTP]) -> None:
        with self._subscriber.in_callback():
            await self._listener.on_revoked({TopicPartition(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: list[KafkaTP]) -> None:
        with self._subscriber.in_callback():
            await self._listener.on_assigned({TopicPartition(tp.topic, tp.partition) for tp in assigned},
                                             self._subscriber)


# The consumer's progress watch (KafkaSubscriber): no progress for STALL_S while the broker answers and the
# consumer is replaced; checks at most every WATCH_EVERY_S; a missing topic's metadata asked at most every
# METADATA_EVERY_S; offset commits and committed-offset reads give up after REQUEST_BOUND_S.
STALL_S = 60.0
WATCH_EVERY_S = 5.0
METADATA_EVERY_S = 1.0
REQUEST_BOUND_S = 30.0
STOP_TIMEOUT_S = 30.0


class KafkaSubscriber:
    """A group member (aiokafka) that keeps making progress.

    Two ways an aiokafka 0.14 member was seen to sit still while its process stayed up:
    - it joined its group before its topics were in its metadata (just created, on a busy broker): the
      assignor gave it no partition, and nothing asks for the topics again before the periodic metadata
      refresh (`metadata_max_age_ms`, 5 minutes). So, while a subscribed topic is missing from the
      consumer's metadata, a refresh is asked (at most every METADATA_EVERY_S); aiokafka rejoins the group as
      soon as the refresh shows the partitions;
    - more generally: whatever leaves it stuck (a coordinator lost across a broker restart...), a member that
      makes no progress for `stall_s` while the broker answers is closed and replaced by a new one, once.
      Progress is records, a fetch answer on any assigned partition that is not paused (an idle partition
      is answered every `fetch_max_wait_ms`), a successful offset commit, or a rebalance callback running;
      all partitions paused by the caller, or no partition because the group has more members than the
      topics have partitions, is idleness by design. The listener sees the old member's partitions revoked,
      then the new member's assigned, as in a rebalance; `replaced` counts the replacements.
    `healthy` is False while no progress was made for `stall_s` (a broker outage included) and after a
    replacement, True again at the next progress. Retriable client errors out of `getmany` are logged and
    polling goes on; commits and committed-offset reads are bounded (REQUEST_BOUND_S) and raise
    BusUnavailable past it.
    """

    def __init__(self, bootstrap_servers: str, topics: tuple[str, ...], group_id: str,
                 listener: RebalanceListener | None, *, client_id: str, max_poll_records: int,
                 stall_s: float = STALL_S) -> None:
        self.topics = topics
        self.group_id = group_id
        self._listener = listener
        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self._max_poll_records = max_poll_records
        self._bridge = _ListenerBridge(listener, self) if listener is not None else None
        self._stall_s = stall_s
        self._consumer = self._new_consumer()
        # End offsets are asked on a connection of their own: on the consumer's, a ListOffsets request
        # would wait behind the fetcher's long poll (up to fetch_max_wait_ms, 500 ms) every time.
        self._lister = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, client_id=f"{client_id}-offsets",
                                        enable_auto_commit=False)
        self._admin: AIOKafkaAdminClient | None = None
        self._progress_at = time.monotonic()
        self._answering_since: float | None = self._progress_at   # the broker answers since (None: it did not)
        self._polled: dict[KafkaTP, int] = {}
        self._watch_at = 0.0
        self._metadata_at = 0.0
        self._metadata: asyncio.Future[bool] | None = None
        self._callbacks = 0
        self.replaced = 0
        self.healthy = True

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self._max_poll_records,
            fetch_max_bytes=32 * 1024 * 1024,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            # Range assignment gives each member the same partition numbers of every subscribed topic,
            # which keeps co-partitioned topics (all of an account's inputs) on one member.
            partition_assignment_strategy=(RangePartitionAssignor,),
        )

    async def start(self) -> None:
        await self._lister.start()
        await self._start_consumer()

    async def _start_consumer(self) -> None:
        await self._consumer.start()
        if self._bridge is not None:
            self._consumer.subscribe(list(self.topics), listener=self._bridge)
        else:
            self._consumer.subscribe(list(self.topics))
        self._polled = {}
        self._progress_at = time.monotonic()   # (healthy again at its first progress)

    async def stop(self) -> None:
        try:
            await self._consumer.stop()
        finally:
            try:
                await self._lister.stop()
            finally:
                if self._admin is not None:
                    await self._admin.close()
                    self._admin = None

    @contextlib.contextmanager
    def in_callback(self) -> Iterator[None]:
        """A rebalance callback runs (loading partitions can take a while): that is progress."""
        self._callbacks += 1
        try:
            yield
        finally:
            self._callbacks -= 1
            self._progressed()

    async def getmany(self, timeout_ms: int = 1000, max_records: int | None = None) -> list[Record]:
        try:
            batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:
            if not exc.retriable:
                raise
            # (e.g. the group coordinator lost across a broker restart: aiokafka finds it again; the
            # progress watch covers a member that never does)
            log.warning("kafka consumer of group %s: %s; polling on", self.group_id, type(exc).__name__)
            batches = {}
        out: list[Record] = []
        for tp, msgs in batches.items():
            for m in msgs:
                out.append(Record(tp.topic, tp.partition, m.offset, m.key, m.value, m.timestamp))
        if out or self._callbacks:
            self._progressed()
        else:
            await self._watch()
        return out

    # -- progress watch --------------------------------------------------------------------------------
    def _progressed(self, now: float | None = None) -> None:
        self._progress_at = time.monotonic() if now is None else now
        self.healthy = True

    async def _watch(self) -> None:
        now = time.monotonic()
        consumer = self._consumer
        self._ask_missing_topics(now)
        if self._fetched(consumer):
            self._progressed(now)
            return
        if now - self._progress_at < self._stall_s:
            return
        self.healthy = False
        if now < self._watch_at:
            return
        self._watch_at = now + WATCH_EVERY_S
        if not await self._broker_answers():
            self._answering_since = None
            return
        if self._answering_since is None:
            self._answering_since = now
        if now - max(self._progress_at, self._answering_since) < self._stall_s:
            return
        if not consumer.assignment() and await self._idle_by_design():
            self._progressed(now)
            return
        await self._replace(now - self._progress_at)

    def _ask_missing_topics(self, now: float) -> None:
        """Ask a metadata refresh while a subscribed topic is missing from the consumer's metadata."""
        if now - self._metadata_at < METADATA_EVERY_S:
            return
        if all(self._consumer.partitions_for_topic(t) for t in self.topics):
            return
        self._metadata_at = now
        # (no public call asks it; the refresh runs in the client's background task)
        self._metadata = self._consumer._client.force_metadata_update()

    def _fetched(self, consumer: AIOKafkaConsumer) -> bool:
        """Whether a fetch answered on an assigned, unpaused partition since the last look (True as well when
        every assigned partition is paused: nothing is to be fetched)."""
        assigned = consumer.assignment()
        paused = consumer.paused()
        live = [tp for tp in assigned if tp not in paused]
        if assigned and not live:
            return True
        moved = False
        for tp in live:
            polled = consumer.last_poll_timestamp(tp)
            if polled is not None and polled != self._polled.get(tp):
                self._polled[tp] = polled
                moved = True
        return moved

    async def _broker_answers(self) -> bool:
        """A metadata request for no topic (the broker answers with itself), on the end-offsets client."""
        client = self._lister._client
        try:
            async with asyncio.timeout(5.0):
                node = client.get_random_node()
                return node is not None and bool((await client.send(node, MetadataRequest([]))).brokers)
        except (KafkaError, TimeoutError, OSError):
            return False

    async def _idle_by_design(self) -> bool:
        """No partition is right when the group has more members than a subscribed topic has partitions
        (range assignment leaves the extra members without any), or when a topic does not exist yet
        (nothing to consume; its metadata is being asked). A topic the broker lists and the consumer's
        metadata still does not is not idleness."""
        counts = [len(self._consumer.partitions_for_topic(t) or ()) for t in self.topics]
        try:
            if self._admin is None:
                self._admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap,
                                                  client_id=f"{self._client_id}-watch")
                await self._admin.start()
            async with asyncio.timeout(10.0):
                if not all(counts):
                    existing = set(await self._admin.list_topics())
                    return not any(t in existing for t, n in zip(self.topics, counts, strict=True) if not n)
                answers = await self._admin.describe_consumer_groups([self.group_id])
        except (KafkaError, TimeoutError, OSError) as exc:
            log.warning("kafka consumer of group %s has no partition and its group cannot be described (%s)",
                        self.group_id, type(exc).__name__)
            return False
        for answer in answers:
            for group in answer.to_object()["groups"]:
                if group["group"] == self.group_id:
                    return group["state"] == "Stable" and len(group["members"]) > min(counts)
        return False

    async def _replace(self, stalled_s: float) -> None:
        old = self._consumer
        revoked = self.assignment()
        log.warning("kafka consumer of group %s made no progress for %.0fs while the broker answers (%d "
                    "partition(s) assigned); replacing it", self.group_id, stalled_s, len(revoked))
        if self._listener is not None and revoked:
            await self._listener.on_revoked(revoked)
        try:
            await asyncio.wait_for(old.stop(), STOP_TIMEOUT_S)
        except (KafkaError, TimeoutError, OSError) as exc:
            log.warning("stalled kafka consumer did not stop cleanly (%s)", type(exc).__name__)
        self._consumer = self._new_consumer()
        self.replaced += 1
        self.healthy = False
        await self._start_consumer()
        log.info("kafka consumer of group %s replaced", self.group_id)

    # -- the rest of the port ------------------------------------------------------------------------
    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets:
            return
        try:
            await asyncio.wait_for(
                self._consumer.commit({KafkaTP(tp.topic, tp.partition): off for tp, off in offsets.items()}),
                REQUEST_BOUND_S)
        except TimeoutError as exc:
            raise BusUnavailable(f"kafka offset commit did not complete in {REQUEST_BOUND_S:.0f}s") from exc
        self._progressed()

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._consumer.seek(KafkaTP(tp.topic, tp.partition), offset)

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self._consumer.pause(*self._assigned(partitions))

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self._consumer.resume(*self._assigned(partitions))

    def _assigned(self, partitions: Iterable[TopicPartition]) -> list[KafkaTP]:
        """Those of `partitions` still assigned (a rebalance may have taken some), as aiokafka's type."""
        assigned = self._consumer.assignment()
        return [k for k in (KafkaTP(tp.topic, tp.partition) for tp in partitions) if k in assigned]

    async def committed(self, tp: TopicPartition) -> int | None:
        try:
            return await asyncio.wait_for(self._consumer.committed(KafkaTP(tp.topic, tp.partition)),
                                          REQUEST_BOUND_S)
        except TimeoutError as exc:
            raise BusUnavailable(f"kafka committed offsets not read in {REQUEST_BOUND_S:.0f}s") from exc

    def highwater(self, tp: TopicPartition) -> int | None:
        kafka_tp = KafkaTP(tp.topic, tp.partition)
        if kafka_tp not in self._consumer.assignment():
            return None
        return self._consumer.highwater(kafka_tp)

    async def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        ends = await self._lister.end_offsets([KafkaTP(tp.topic, tp.partition) for tp in partitions])
        return {TopicPartition(tp.topic, tp.partition): off for tp, off in ends.items()}
