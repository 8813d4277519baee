"""Grouping: openings and reminders wait `group_wait`, then go out as one message per target and group
(by default one per target and account: `group_by: [account_id]`, docs/routing.md). Severities in the
route's `group_bypass` (default: critical) never wait; neither do escalations and resolutions.

The service queues a `PendingItem` instead of sending when `send_mode` says "digest", and periodically
calls `plan_digests` with everything still queued; the plan says which notifications to claim now and
which items they consume. Pure: the caller owns the queue (a table) and the clock. Risks a route sends
`digest_only` wait for the daily digest instead (`services.alerts.domain.daily`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from services.alerts.domain.action_links import ActionLinks
from services.alerts.domain.content import Notification, PageLinks, dedup_key, render, render_digest, render_group
from services.alerts.domain.targets import Target
from shared.risks import RiskEvent

DEFAULT_GROUP_BY: tuple[str, ...] = ("account_id",)
DEFAULT_GROUP_BYPASS = frozenset({"critical"})
SendMode = Literal["now", "digest", "daily"]


@dataclass(frozen=True)
class PendingItem:
    risk: RiskEvent
    target: Target
    queued_at: datetime
    due_at: datetime                 # queued_at + the route's group_wait
    kind: str = "opened"             # the policy decision's kind / dedup suffix, used when sent alone
    dedup_suffix: str = "opened"
    group_by: tuple[str, ...] = ()   # the route's group_by: split one target's queue into groups

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
    carried_by: dict[str, str] = field(default_factory=dict)  # consumed item key -> its notification's key


def goes_to_digest(risk: RiskEvent, kind: str | None, group_wait: timedelta,
                   bypass: frozenset[str] = DEFAULT_GROUP_BYPASS) -> bool:
    """Openings and reminders wait `group_wait` to be grouped, unless their severity is in `bypass`;
    resolutions and escalations are sent at once."""
    return risk.severity not in bypass and kind in ("opened", "repeat") and group_wait > timedelta(0)


def send_mode(risk: RiskEvent, kind: str | None, *, group_wait: timedelta, group_bypass: frozenset[str],
              digest_only: bool) -> SendMode:
    """How one notification goes out: at once, after `group_wait` in its group, or in the daily digest
    (`digest_only`: the route selects the risk for the digest). A severity in `group_bypass` never waits."""
    if risk.severity in group_bypass:
        return "now"
    if digest_only:
        return "daily"
    return "digest" if goes_to_digest(risk, kind, group_wait, group_bypass) else "now"


def pending(risk: RiskEvent, target: Target, *, now: datetime, group_wait: timedelta, kind: str = "opened",
            dedup_suffix: str | None = None, group_by: tuple[str, ...] = ()) -> PendingItem:
    return PendingItem(risk=risk, target=target, queued_at=now, due_at=now + group_wait, kind=kind,
                       dedup_suffix=dedup_suffix or kind, group_by=tuple(group_by))


def next_due(items: Iterable[PendingItem]) -> datetime | None:
    """When the earliest group becomes due (for the flush loop's sleep)."""
    return min((i.due_at for i in items), default=None)


def plan_digests(items: Iterable[PendingItem], *, now: datetime, public_url: str | PageLinks,
                 alert_ids: Mapping[str, int] | None = None,
                 action_links: Callable[[int, Target], ActionLinks | None] | None = None) -> DigestPlan:
    """Groups queued items per target and the route's `group_by` values; a group is due when its oldest
    item's `due_at` has passed.

    Within a due group only the latest event of each risk counts, and a risk whose latest event is a
    resolution is dropped. A group left with one risk is sent as a plain notification (its own dedup key);
    several risks of one account (`group_by` has `account_id`) as one message listing them worst first
    (`render_group`), otherwise as one digest (deterministic keys over the event ids). The risks whose
    alert id is known (`alert_ids`, by risk id) carry their buttons and e-mail action links
    (`action_links(alert id, target)`), as a message sent at once does.
    """
    alert_ids = alert_ids or {}
    groups: dict[str, list[PendingItem]] = {}
    for item in items:
        groups.setdefault(item.group_key, []).append(item)
    ready: list[Notification] = []
    consumed: list[PendingItem] = []
    waiting: list[PendingItem] = []
    carried_by: dict[str, str] = {}
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
        def links_for(alert_id: int, target: Target = target) -> ActionLinks | None:
            return None if action_links is None else action_links(alert_id, target)

        if len(live) == 1:
            only = live[0]
            alert_id = alert_ids.get(only.risk.risk_id)
            notification = render(only.risk, target, public_url, kind=only.kind, dedup_suffix=only.dedup_suffix,
                                  alert_id=alert_id, links=None if alert_id is None else links_for(alert_id))
        elif "account_id" in live[0].group_by:  # grouped per account: one message about that account
            notification = render_group([i.risk for i in live], target, public_url, alert_ids=alert_ids,
                                        action_links=links_for)
        else:
            notification = render_digest([i.risk for i in live], target, public_url)
        ready.append(notification)
        carried_by.update({i.item_key: notification.dedup_key for i in group})
    return DigestPlan(ready=ready, consumed=consumed, waiting=waiting, carried_by=carried_by)
