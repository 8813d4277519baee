"""Which account each Segment user belongs to, as the `group` calls told: shared by every ingest process
through a compacted topic, `<prefix>segment-users` (key: the user, value: the account id, both UTF-8).

A request's memberships are written after its events were accepted; every process reads the whole topic at
start-up (the Segment paths answer 503 until it has) and follows it from then on, so the map survives
restarts and a `group` call answered by one replica serves the `track` calls any replica answers next.

A process also remembers what it wrote itself at once (`pending`), until the topic brings that value back:
a user's next request right after its `group` call finds the account even before the topic's copy
arrived, and the topic's order still decides between replicas (the newest record wins once read).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from shared.backoff import Backoff
from shared.bus.port import Bus, OutMessage, Publisher, Record, Subscriber, TopicPartition

log = logging.getLogger(__name__)


class UserAccounts:
    """The user -> account map of one ingest process, and its copy on the topic."""

    def __init__(self, bus: Bus, publisher: Publisher, topic: str, *, group_id: str,
                 on_size: Callable[[int], None] = lambda _: None, max_backoff_s: float = 5.0) -> None:
        self._bus = bus
        self._publisher = publisher
        self._topic = topic
        self._group_id = group_id
        self._on_size = on_size
        self._max_backoff_s = max_backoff_s
        self._accounts: dict[str, str] = {}
        self._pending: dict[str, str] = {}
        self._loaded = asyncio.Event()
        self._stopping = False

    @property
    def ready(self) -> bool:
        """True once the topic has been read to the end it had when this process started reading it."""
        return self._loaded.is_set()

    async def wait_ready(self) -> None:
        await self._loaded.wait()

    def account_of(self, user: str) -> str | None:
        pending = self._pending.get(user)
        return pending if pending is not None else self._accounts.get(user)

    def __len__(self) -> int:
        return len(self._accounts)

    async def remember(self, memberships: Mapping[str, str]) -> None:
        """Write the memberships that change what is known (raises BusUnavailable when not acknowledged)."""
        changed = {user: account for user, account in memberships.items() if self.account_of(user) != account}
        if not changed:
            return
        # Pending before the publish: the topic's copy may be read back before the publish call returns.
        before = {user: self._pending.get(user) for user in changed}
        self._pending.update(changed)
        try:
            await self._publisher.publish([OutMessage(self._topic, user.encode(), account.encode())
                                           for user, account in changed.items()])
        except BaseException:
            for user, account in changed.items():
                if self._pending.get(user) == account:
                    previous = before[user]
                    if previous is None:
                        del self._pending[user]
                    else:
                        self._pending[user] = previous
            raise

    def apply(self, records: list[Record]) -> None:
        """Records read from the topic, in their order (the newest value of a user wins)."""
        for record in records:
            if record.key is None:
                continue
            user = record.key.decode("utf-8", "replace")
            if not record.value:  # a tombstone: the user's membership was deleted
                self._accounts.pop(user, None)
                continue
            account = record.value.decode("utf-8", "replace")
            self._accounts[user] = account
            if self._pending.get(user) == account:
                del self._pending[user]
        self._on_size(len(self._accounts))

    def stop(self) -> None:
        """Make `run` return (within a fetch's wait): cancelling it alone is not enough, as a fetch that
        completes just as it is cancelled may swallow the cancellation (`asyncio.wait_for` before 3.12)."""
        self._stopping = True

    async def run(self) -> None:
        """Read the topic from its start, then follow it, until stopped; a failing subscriber is replaced
        after a growing pause (what was read stays in use meanwhile)."""
        backoff = Backoff(0.2, cap=self._max_backoff_s)
        while not self._stopping:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever broke the subscriber, a new one starts over
                delay = backoff.next()
                log.warning("reading %s failed (%s: %s); again in %.1fs", self._topic, type(exc).__name__, exc,
                            delay)
                await asyncio.sleep(delay)

    async def _follow(self) -> None:
        subscriber = self._bus.subscriber([self._topic], self._group_id, listener=_FromTheStart())
        try:
            await subscriber.start()
            if not self.ready:
                await self._load(subscriber)
                if self._stopping:
                    return
                self._loaded.set()
                log.info("%d Segment users known from %s", len(self._accounts), self._topic)
            while not self._stopping:
                self.apply(await subscriber.getmany(timeout_ms=1000))
        finally:
            try:
                await subscriber.stop()
            except Exception as exc:  # a reader that failed may fail to close too; a new one is made anyway
                log.warning("closing the reader of %s failed (%s)", self._topic, type(exc).__name__)

    async def _load(self, subscriber: Subscriber) -> None:
        """Read until every partition reaches the end offset it had once assigned (records may come with
        the very fetch that joins the group, before the assignment is known)."""
        read: dict[TopicPartition, int] = {}

        async def fetch() -> None:
            records = await subscriber.getmany(timeout_ms=1000)
            self.apply(records)
            for record in records:
                read[record.tp] = max(read.get(record.tp, 0), record.offset + 1)

        while not subscriber.assignment() and not self._stopping:
            await fetch()
        ends = await subscriber.end_offsets(sorted(subscriber.assignment()))
        while any(read.get(tp, 0) < end for tp, end in ends.items()) and not self._stopping:
            await fetch()


class _FromTheStart:
    """Each process reads the whole topic: its group is its own and commits nothing, and every assignment
    starts at the beginning (compaction keeps the newest record of every user)."""

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        return None

    async def on_assigned(self, partitions: set[TopicPartition], consumer: Subscriber) -> None:
        for tp in partitions:
            consumer.seek(tp, 0)
