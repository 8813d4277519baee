"""The health topic: every health change and risk transition, keyed by account, in the order they happened.

A batch builds its messages while it applies its events (`health_changed`, `risk_changed`; the format is in
docs/events.md and shared/health_feed.py), and its transaction writes them as ONE row per partition it
touched (the messages, one JSON per line), beside the history rows and the risk outbox. Right after the
commit they are published, in the same round trip as the risk events; the rows published are deleted by
the next batch's transaction (or on their own when the consumer is idle or stopping). Rows still stored when
a partition is loaded (bus down, crash) are published again, in commit order, before anything else: a crash
can repeat messages, never lose or reorder them, and a repeated message keeps its `id`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import orjson

from services.scoring.adapters.store import HealthFeedRow, OutboxRow, ScoringStore
from services.scoring.entrypoints.owed import Owed
from services.scoring.entrypoints.ports import Snapshot, Transition
from shared.bus.port import OutMessage
from shared.health_feed import HEALTH_CHANGED, risk_message_type

log = logging.getLogger(__name__)

SEPARATOR = b"\n"   # between the messages of a row (compact JSON never holds a raw newline)


# -- the messages -------------------------------------------------------------------------------------
def health_id(account_id: str, snap: Snapshot) -> str:
    """A health change's id: the same for the same change (account, event time, cause), on every replay.
    Letters, digits and `_` only (a Standard Webhooks id must not hold a `.`)."""
    basis = f"{account_id}\x00{snap.as_of.isoformat()}\x00{snap.cause}".encode()
    return "hc_" + hashlib.blake2b(basis, digest_size=16).hexdigest()


def health_changed(account_id: str, snap: Snapshot, as_dict: dict[str, Any],
                   previous: tuple[float | None, str] | None) -> bytes:
    """The `health.changed` message of a snapshot (`as_dict`: its `to_dict()`, already made for the history
    row); `previous`: the account's (score, tier) before it, when the model tells it."""
    cause = snap.cause
    return orjson.dumps({
        "id": health_id(account_id, snap), "type": HEALTH_CHANGED, "timestamp": snap.as_of,
        "account_id": account_id, "health": {"score": snap.score, "tier": snap.tier},
        "data": {
            "previous": None if previous is None else {"score": previous[0], "tier": previous[1]},
            "reasons": as_dict["reasons"] if "reasons" in as_dict else snap.reasons(3),
            "changes": as_dict.get("deltas", []),
            "trigger": None if cause is None or cause == "clock" else {"event_id": cause},
            "config_version": snap.config_version,
        },
    })


def risk_changed(account_id: str, tr: Transition, row: OutboxRow) -> bytes:
    """The `risk.<transition>` message of a transition: its risk event (the risks topic's, as published
    there) under `data`, with the account's health after it."""
    return orjson.dumps({
        "id": row.event_id, "type": risk_message_type(tr.transition), "timestamp": tr.occurred_at,
        "account_id": account_id, "health": {"score": tr.health.score, "tier": tr.health.tier},
        "data": orjson.Fragment(row.payload),
    })


def row_messages(topic: str, row: HealthFeedRow) -> list[OutMessage]:
    """A stored row's messages, keyed by their account (read back from each message)."""
    return [OutMessage(topic, orjson.loads(value)["account_id"].encode(), value)
            for value in row.messages.split(SEPARATOR)]


# -- publishing ---------------------------------------------------------------------------------------
class HealthFeed(Owed[tuple[int, int]]):
    """Publishes the health feed rows and keeps what is owed: partitions to publish again, rows to delete.
    A (re)load forgets the rows it remembered as published: one may have been deleted since, and its
    (partition, seq) reused."""

    what = "health feed rows"
    forget_on_load = True

    def __init__(self, *, store: ScoringStore, topic: str) -> None:
        super().__init__()
        self._store = store
        self.topic = topic

    async def republish(self, owned: set[int]) -> None:
        """Publish the stored rows of the owned partitions that are owed, in commit order."""
        numbers = self._republish & owned
        rows = await self._store.unpublished_health(numbers)
        if rows:
            await self._send([m for row in rows for m in row_messages(self.topic, row)], rows)
            log.info("re-published %d health feed batches left unpublished", len(rows))
        self._republish -= numbers

    async def publish_committed(self, messages: Sequence[OutMessage], rows: Sequence[HealthFeedRow]) -> None:
        """Publish a committed batch's messages (`rows`: what stores them); if the bus is down they are owed
        (and the failure raised)."""
        await self._committed(self._send(messages, rows), {row.partition for row in rows})

    async def _send(self, messages: Sequence[OutMessage], rows: Sequence[HealthFeedRow]) -> None:
        await self.publisher.publish(messages)
        self._published.extend((row.partition, row.seq) for row in rows)

    def _forget(self, numbers: set[int]) -> None:
        self._published = [key for key in self._published if key[0] not in numbers]

    async def _settle(self, keys: list[tuple[int, int]]) -> None:
        await self._store.delete_health_published(keys)
