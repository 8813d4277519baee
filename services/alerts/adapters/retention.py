"""Alerts' tables under retention (docs/retention.md), as steps of the shared pruner (shared/retention.py).

Only what nothing open or pending refers to goes:
- `alerts_processed`: ids recorded more than the deduplication horizon plus a grace ago (a day; the horizon
  itself when shorter, at least 10 minutes: `dedup_grace`). The consumer skips (and
  counts as expired) a risk event detected more than the horizon ago, so a pruned id is never applied again.
- `alerts_digest_items`: items consumed (sent in a digest) more than the age ago; waiting ones stay.
- `alerts_attempts`, `alerts_deliveries`: of deliveries finished (sent, failed, dead-lettered) more than the
  age ago whose alert is not open; pending deliveries and those of open alerts stay. Attempts go with their
  delivery at the latest (ON DELETE CASCADE). Deliveries are kept at least 8 days: the daily digest looks
  back that far for the last one it sent (settings refuse less).
- `alerts_slack_requests`: signatures of Slack clicks seen more than the age ago (Slack's replay window is
  5 minutes).
Alert rows, their per-target state, silences and positions are not pruned.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from services.alerts.adapters import tables as t
from shared.retention import PruneStep, dedup_grace
from shared.settings import Settings

FINISHED = ("sent", "failed", "dead_letter")


def alerts_steps(settings: Settings) -> list[PruneStep]:
    horizon = settings.retention_age("alerts_processed")
    # Beyond the horizon, what an id is kept for: risk events carry scoring's clock, ids alerts' own.
    grace = dedup_grace(horizon)
    p, d, a, di, s = t.processed.c, t.deliveries.c, t.alerts.c, t.digest_items.c, t.slack_requests.c

    def finished_before(cutoff: datetime) -> sa.ColumnElement[bool]:
        open_alert = sa.exists().where(a.id == d.alert_id, a.status == "open")
        return sa.and_(d.status.in_(FINISHED), d.updated_at < cutoff, ~open_alert)

    def attempts_of_finished(cutoff: datetime) -> sa.ColumnElement[bool]:
        return t.attempts.c.delivery_id.in_(sa.select(d.id).where(finished_before(cutoff)))

    return [
        PruneStep("alerts_processed", p.event_id, lambda cutoff: p.processed_at < cutoff,
                  horizon + grace),
        PruneStep("alerts_digest_items", di.id,
                  lambda cutoff: sa.and_(di.consumed_at.is_not(None), di.consumed_at < cutoff),
                  settings.retention_age("alerts_digest_items")),
        PruneStep("alerts_attempts", t.attempts.c.id, attempts_of_finished, settings.retention_age("alerts_attempts")),
        PruneStep("alerts_deliveries", d.id, finished_before, settings.retention_age("alerts_deliveries")),
        PruneStep("alerts_slack_requests", s.signature, lambda cutoff: s.seen_at < cutoff,
                  settings.retention_age("alerts_slack_requests")),
    ]
