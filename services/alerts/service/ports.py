"""The ports of the alerts service layer: where the pipeline reads and writes, one transaction at a time.

Every store method runs inside a transaction its caller holds; the stores never commit. Implementations:

- `ClaimStore` (one claim of consumed risk events): `AlertsRepository` / `SqlClaimStore` (SQLAlchemy Core,
  any database) and `PgClaimStore` (two asyncpg statements, PostgreSQL).
- `ClaimSession` (the consumer's claim transactions on one kept connection): `SqlClaimSession` and
  `PgClaimSession`; `services.alerts.adapters.claim_session` picks one for an engine.
- `AlertsStore` and `UnitOfWork` (repeats, digests, delivery outcomes and leases): `AlertsRepository` and
  `SqlUnitOfWork`.
- All of them in memory: `tests/support/alerts_store.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from services.alerts.service.records import (
    AlertRow,
    ClaimReads,
    ClaimWrites,
    DailyReads,
    DeliveryRow,
    DigestItemRow,
    NewDelivery,
    Outcome,
    SilenceRow,
    StateRow,
)
from shared.bus.port import TopicPartition
from shared.risks import RiskEvent


class ClaimStore(Protocol):
    """Where one claim of risk events reads once and writes once, inside the caller's transaction."""

    async def claim_reads(self, risks: Sequence[RiskEvent], now: datetime) -> ClaimReads:
        """Record the batch's event ids as processed; return the new ones and what deciding needs."""
        ...

    async def claim_writes(self, writes: ClaimWrites) -> list[DeliveryRow]:
        """Write everything the claim decided; return the deliveries actually inserted, in claim order."""
        ...


class ClaimSession(Protocol):
    """The consumer's unit of work: one claim transaction per batch on a connection kept between batches
    (no pool checkout per batch), and the stored positions to resume from."""

    @property
    def connection(self) -> object | None:
        """The connection kept between claims; None before the first claim and after `close`."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[ClaimStore]:
        """BEGIN ... COMMIT around the block (ROLLBACK when it raises); a connection a failed claim may
        have broken is not kept."""
        ...

    async def positions(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The next offset to apply per partition, as committed with the claims."""
        ...

    async def close(self, *, invalidate: bool = False) -> None:
        """Give the kept connection back; `invalidate`: discard it instead (it may be broken)."""
        ...


class RepeatStore(Protocol):
    """What the repeat sweep reads and writes."""

    async def due_repeats(self, now: datetime, limit: int) -> list[tuple[AlertRow, StateRow]]: ...

    async def active_silences(self, account_ids: Iterable[str], now: datetime) -> list[SilenceRow]: ...

    async def upsert_states(self, values: list[dict[str, Any]]) -> None: ...

    async def add_digest_items(self, values: list[dict[str, Any]]) -> None: ...

    async def claim(
        self, items: Sequence[NewDelivery], now: datetime, lease_until: datetime
    ) -> list[DeliveryRow]:
        """Insert pending deliveries; a dedup key seen before is skipped. Returns the new rows only."""
        ...


class DigestStore(Protocol):
    """What a digest flush reads and writes."""

    async def due_digest_items(self, now: datetime, limit: int) -> list[DigestItemRow]:
        """Waiting group items (not those waiting for a daily digest) of every target with a due one."""
        ...

    async def daily_digest_targets(self, changed_since: datetime) -> list[str]:
        """The keys, sorted, of the targets a daily digest may be for: those told of an alert that is open
        or was updated since `changed_since`, and those with an item waiting for a daily digest."""
        ...

    async def daily_digest_reads(self, now: datetime, changed_since: datetime,
                                 targets: Sequence[str]) -> DailyReads:
        """For the `targets` only: the states of open alerts and of alerts updated since `changed_since`, the
        items waiting for a daily digest, and each target's last daily digest claimed since `changed_since`."""
        ...

    async def alerts_by_risk(self, risk_ids: Iterable[str]) -> dict[str, AlertRow]: ...

    async def claim(
        self, items: Sequence[NewDelivery], now: datetime, lease_until: datetime
    ) -> list[DeliveryRow]: ...

    async def consume_digest_items(self, assignments: dict[int, int | None], now: datetime) -> bool:
        """Mark items consumed by their delivery; False when another flusher consumed some first."""
        ...


class DeliveryStore(Protocol):
    """What the delivery runner records: outcomes, and the leases of pending deliveries."""

    async def record_outcomes(self, outcomes: Sequence[Outcome], now: datetime) -> None: ...

    async def renew(self, delivery_ids: Iterable[int], lease_until: datetime) -> None: ...

    async def take_over_expired(
        self, now: datetime, lease_until: datetime, limit: int, exclude: Iterable[int] = ()
    ) -> list[DeliveryRow]: ...

    async def release(self, delivery_ids: Iterable[int], now: datetime) -> None: ...


class AlertsStore(ClaimStore, RepeatStore, DigestStore, DeliveryStore, Protocol):
    """Everything the service layer does inside one transaction (retention prunes in shared/retention.py)."""


class UnitOfWork(Protocol):
    """Opens one transaction and hands out the store inside it: committed when the block ends, rolled back
    when it raises."""

    def begin(self) -> AbstractAsyncContextManager[AlertsStore]: ...
