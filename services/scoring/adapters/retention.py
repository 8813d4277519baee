"""Scoring's tables under retention (docs/retention.md), as steps of the shared pruner (shared/retention.py).

- `scoring_processed_events`: an id goes once no copy of its event can be applied any more. The consumer
  skips (and counts as expired) an event older than its partition's watermark minus the deduplication
  horizon (services/scoring/entrypoints/batches.py); an id is pruned when it was processed more than the
  horizon plus a grace (a day; the horizon itself when shorter, at least 10 minutes: `dedup_grace`) before
  the oldest partition watermark (or before now, whichever is earlier). An event is never processed more
  than 5 minutes before it occurred (ingest refuses `occurred_at` further ahead), so any copy of a pruned id
  is older than every watermark minus the horizon: expired, never applied twice.
- `scoring_outbox`: rows published more than the age ago; unpublished rows stay whatever their age.
- `scoring_history`: snapshots whose `as_of` is older than the age, except each account's latest one (its
  account page keeps a last score and the last "why it moved").
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scoring.adapters import tables as t
from shared.retention import PruneStep, dedup_grace
from shared.settings import Settings


def scoring_steps(settings: Settings) -> list[PruneStep]:
    horizon = settings.retention_age("scoring_processed_events")
    # Beyond the horizon, what an id is kept for: covers ingest's 5 minutes of future `occurred_at` with room.
    grace = dedup_grace(horizon)
    p, o, h = t.processed_events.c, t.outbox.c, t.history.c
    newer = t.history.alias("newer")

    async def processed_cutoff(conn: AsyncConnection, now: datetime) -> datetime | None:
        oldest = (await conn.execute(sa.select(sa.func.min(t.partitions.c.watermark)))).scalar_one_or_none()
        if isinstance(oldest, str):   # (SQLite hands an aggregate back as text)
            oldest = datetime.fromisoformat(oldest)
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=now.tzinfo)
        clock = now if oldest is None else min(now, oldest)
        return clock - horizon - grace

    def not_latest() -> sa.ColumnElement[bool]:
        return sa.exists().where(newer.c.account_id == h.account_id, newer.c.id > h.id)

    return [
        PruneStep("scoring_processed_events", p.event_id, lambda cutoff: p.processed_at < cutoff, horizon,
                  cutoff=processed_cutoff),
        PruneStep("scoring_outbox", o.id,
                  lambda cutoff: sa.and_(o.published_at.is_not(None), o.published_at < cutoff),
                  settings.retention_age("scoring_outbox")),
        PruneStep("scoring_history", h.id, lambda cutoff: sa.and_(h.as_of < cutoff, not_latest()),
                  settings.retention_age("scoring_history")),
    ]
