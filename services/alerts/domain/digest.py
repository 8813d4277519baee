"""Digests: low-severity risks wait `group_wait`, then go out as one message per target (docs/routing.md).

The service queues a `PendingItem` instead of sending when `goes_to_digest` says so, and periodically calls
`plan_digests` with everything still queued; the plan says which notifications to claim now and which items
they consume. Pure: the caller owns the queue (a table) and the clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.alerts.domain.content import Notification, dedup_key, render, render_digest
from services.alerts.domain.targets import Target
from shared.risks import RiskEvent

DIGEST_SEVERITIES = frozenset({"low"})


@dataclass(frozen=True)
class PendingItem:
    risk: RiskEvent
    target: Target
    queued_at: datetime
    due_at: datetime                 # queued_at + the route's group_wait
    kind: str = "opened"             # the policy decision's kind / dedup suffix, used when sent alone
    dedup_suffix: str = "opened"
    group_by: tuple[str, ...] = ()   # the route's group_by: split one target's digest further

    @property
    def group_key(self) -> str:
        risk = self.risk
        csm = risk.account.csm
        values = {"account_id": risk.account_id, "type": risk.type, "severity": risk.severity,
                  "segment": (risk.account.segment or "").casefold(),
                  "csm": (csm.email or csm.slack_user_id or "") if csm is not None else ""}
        return "\x1f".join([self.target.key, *(f"{k}={values.get(k, '')}" for k in self.group_by)])

    @property
    def item_key(self) -> str:
        """Unique per queued notification (the same as the key it would have had when sent alone)."""
        return dedup_key(self.risk, self.target, self.dedup_suffix)


@dataclass(frozen=True)
class DigestPlan:
    ready: list[Notification]         # claim and send these now
    consumed: list[PendingItem]       # remove from the queue together with the claim
    waiting: list[PendingItem]        # keep queued


def goes_to_digest(risk: RiskEvent, kind: str | None, group_wait: timedelta) -> bool:
    """Low-severity openings and reminders are grouped; resolutions and escalations are sent at once."""
    return risk.severity in DIGEST_SEVERITIES and kind in ("opened", "repeat") and group_wait > timedelta(0)


def pending(risk: RiskEvent, target: Target, *, now: datetime, group_wait: timedelta, kind: str = "opened",
            dedup_suffix: str | None = None, group_by: tuple[str, ...] = ()) -> PendingItem:
    return PendingItem(risk=risk, target=target, queued_at=now, due_at=now + group_wait, kind=kind,
                       dedup_suffix=dedup_suffix or kind, group_by=tuple(group_by))


def next_due(items: Iterable[PendingItem]) -> datetime | None:
    """When the earliest group becomes due (for the flush loop's sleep)."""
    return min((i.due_at for i in items), default=None)


def plan_digests(items: Iterable[PendingItem], *, now: datetime, public_url: str) -> DigestPlan:
    """Groups queued items per target (and the route's `group_by`); a group is due when its oldest item's
    `due_at` has passed.

    Within a due group only the latest event of each risk counts, and a risk whose latest event is a
    resolution is dropped. A group left with one risk is sent as a plain notification (its own dedup key),
    with several as one digest (deterministic key over its event ids).
    """
    groups: dict[str, list[PendingItem]] = {}
    for item in items:
        groups.setdefault(item.group_key, []).append(item)
    ready: list[Notification] = []
    consumed: list[PendingItem] = []
    waiting: list[PendingItem] = []
    for group in groups.values():
        if min(i.due_at for i in group) > now:
            waiting.extend(group)
            continue
        consumed.extend(group)
        latest: dict[str, PendingItem] = {}
        for item in sorted(group, key=lambda i: (i.queued_at, i.risk.seq)):
            current = latest.get(item.risk.risk_id)
            if current is None or item.risk.seq >= current.risk.seq:
                latest[item.risk.risk_id] = item
        live = [i for i in latest.values() if i.risk.transition != "resolved"]
        if not live:
            continue
        live.sort(key=lambda i: (i.queued_at, i.risk.account_id, i.risk.risk_id))
        target = live[0].target
        if len(live) == 1:
            only = live[0]
            ready.append(render(only.risk, target, public_url, kind=only.kind,
                                dedup_suffix=only.dedup_suffix))
        else:
            ready.append(render_digest([i.risk for i in live], target, public_url))
    return DigestPlan(ready=ready, consumed=consumed, waiting=waiting)
