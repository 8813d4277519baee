"""Acting on an alert from its message: acknowledge it, or snooze it (a silence of the alert's account and
risk type for `actions.SNOOZE`), recording who did it. The entrypoints (`entrypoints/actions_api.py`:
Slack clicks and e-mail links) check the credential and call `act` in their transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.alerts.domain import actions
from services.alerts.domain.content import TYPE_LABELS
from services.alerts.service.records import AlertRow, SilenceRow


class ActionStore(Protocol):
    async def ack(self, alert_id: int, by: str, now: datetime) -> AlertRow | None: ...

    async def insert_silence(self, row: SilenceRow) -> None: ...


@dataclass(frozen=True)
class Done:
    alert: AlertRow
    note: str           # what happened, as Slack mrkdwn (escaped)
    plain: str          # the same, as plain text


async def act(store: ActionStore, alert: AlertRow, action: str, actor: str, who: str, now: datetime) -> Done:
    """Acknowledge or snooze one alert in the caller's transaction. `who` is how to show the actor."""
    if action == "ack":
        row = await store.ack(alert.id, actor, now)
        assert row is not None
        first = row.acked_by if row.acked_by != actor else None
        shown = actions.mention(row.acked_by)
        note = f":white_check_mark: Acknowledged by {shown}"
        plain = f"Acknowledged by {who}" if first is None else f"Already acknowledged by {row.acked_by}"
        return Done(row, note, plain)
    until = now + actions.SNOOZE
    await store.insert_silence(SilenceRow(
        id=str(uuid.uuid4()), account_id=alert.account_id, types=[alert.type], until=until,
        reason=f"Snoozed for {actions.SNOOZE_DAYS} days from the alert message", created_by=actor,
        created_at=now, deleted_at=None,
    ))
    label = TYPE_LABELS.get(alert.type, alert.type)
    day = until.date().isoformat()
    note = (f":zzz: Snoozed for {actions.SNOOZE_DAYS} days by {actions.mention(actor)}: no {label} "
            f"alerts for this account until {day}")
    return Done(alert, note, f"Snoozed for {actions.SNOOZE_DAYS} days by {who}: no {label} alerts for this "
                             f"account until {day}")
