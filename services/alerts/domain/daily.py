"""Daily digests: one message per target (a CSM's DM, a channel, an address) at a time of day set per
receiver (docs/routing.md, `digest: {at, timezone}`), listing its open risks, its red accounts, renewals
within 90 days and what changed since the previous digest. Risks a route sends `digest_only` reach their
targets this way only.

Pure: the schedule (`DigestSchedule`, with `zoneinfo` for the time zone and its DST changes), when a
target's digest is due (`due_occurrence`), its dedup key (one per target and local day) and the plan
(`plan_daily_digests`) over what the caller read from its own tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.alerts.domain.content import Notification, PageLinks, render_daily_digest
from services.alerts.domain.targets import Target
from shared.risks import RiskEvent

DEFAULT_DIGEST_AT = time(9, 0)
DEFAULT_DIGEST_TIMEZONE = "UTC"
RENEWAL_HORIZON = timedelta(days=90)
DAILY_KIND = "daily_digest"     # the delivery's kind
DAILY_ITEM = "daily"            # the kind of a queued item that waits for the daily digest
CHANGES_LOOKBACK = timedelta(days=8)  # how far back a store looks for alerts changed since the last digest


@dataclass(frozen=True)
class DigestSchedule:
    """When a receiver's targets get their digest: `at` local time in `timezone`, every day.

    `every` (not a routing-file key) replaces the daily rhythm by a fixed period counted from midnight UTC
    of 1970-01-01 plus `at`; the embedded mode uses it to send one digest per simulated day."""

    at: time = DEFAULT_DIGEST_AT
    timezone: str = DEFAULT_DIGEST_TIMEZONE
    every: timedelta | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def local(self, day: date) -> datetime:
        """The scheduled moment on local `day`, in UTC. A time that the DST change skips moves forward
        by the gap (02:30 on a spring-forward day is 03:30); a repeated one is its first occurrence."""
        # fold=0: a time in the gap takes the offset before the change, which lands it after the gap; a
        # repeated time is its first occurrence.
        aware = datetime.combine(day, self.at).replace(tzinfo=self.zone, fold=0)
        return aware.astimezone(UTC)

    def latest_at_or_before(self, now: datetime) -> datetime:
        """The most recent scheduled moment at or before `now` (UTC)."""
        if self.every is not None:
            period = self.every.total_seconds()
            offset = self.at.hour * 3600 + self.at.minute * 60 + self.at.second
            elapsed = (now - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() - offset
            return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=offset + (elapsed // period) * period)
        day = now.astimezone(self.zone).date()
        for back in range(3):
            moment = self.local(day - timedelta(days=back))
            if moment <= now:
                return moment
        raise AssertionError("unreachable: a day has a scheduled moment")

    def next_after(self, moment: datetime) -> datetime:
        """The first scheduled moment strictly after `moment` (UTC)."""
        if self.every is not None:
            return self.latest_at_or_before(moment) + self.every
        day = moment.astimezone(self.zone).date()
        for ahead in range(3):
            candidate = self.local(day + timedelta(days=ahead))
            if candidate > moment:
                return candidate
        raise AssertionError("unreachable: a day has a scheduled moment")

    def label(self, occurrence: datetime) -> str:
        """The occurrence in the dedup key: the local day (one digest per target and day)."""
        if self.every is not None:
            return occurrence.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return occurrence.astimezone(self.zone).date().isoformat()


def due_occurrence(schedule: DigestSchedule, *, now: datetime, last_sent: datetime | None,
                   first_seen: datetime) -> datetime | None:
    """The scheduled moment whose digest is due for a target, or None.

    That is the latest moment at or before `now`, provided the target had something before it
    (`first_seen`) and no digest went out at or after it (`last_sent`). A digest missed while the service
    was down goes out late, once; days missed before it are not made up."""
    occurrence = schedule.latest_at_or_before(now)
    if first_seen > occurrence:
        return None
    if last_sent is not None and last_sent >= occurrence:
        return None
    return occurrence


def daily_key(target: Target, schedule: DigestSchedule, occurrence: datetime) -> str:
    return f"daily|{target.key}|{schedule.label(occurrence)}"


@dataclass(frozen=True)
class DigestSelection:
    """Which risks a route sends to the daily digest instead of at once: a risk whose type is one of
    `types` or whose severity is one of `severities`."""

    types: frozenset[str] = frozenset({"health_drop"})
    severities: frozenset[str] = frozenset({"low"})

    def selects(self, risk: RiskEvent) -> bool:
        return risk.type in self.types or risk.severity in self.severities


NO_DIGEST_ONLY = DigestSelection(types=frozenset(), severities=frozenset())


@dataclass(frozen=True)
class TrackedAlert:
    """One alert a target was told about (or will be, in its digest), as the alerts tables hold it."""

    risk: RiskEvent                      # the alert's last event
    target: Target
    status: str                          # open | resolved
    opened_at: datetime
    updated_at: datetime
    acked: bool = False


@dataclass(frozen=True)
class DailyItem:
    """A notification that waits for the target's digest (a `digest_only` risk)."""

    item_id: int
    risk: RiskEvent
    target: Target
    kind: str                            # the policy's kind: opened, escalated, repeat, resolved
    queued_at: datetime


@dataclass(frozen=True)
class DailyDigest:
    notification: Notification
    occurrence: datetime
    items: tuple[int, ...] = ()          # the queued items it carries


@dataclass(frozen=True)
class DailyPlan:
    ready: list[DailyDigest] = field(default_factory=list)
    next_due: datetime | None = None     # the next scheduled moment of any target seen


def plan_daily_digests(alerts: Iterable[TrackedAlert], items: Iterable[DailyItem], *,
                       last_sent: Mapping[str, datetime], schedule_of: Mapping[str, DigestSchedule],
                       default_schedule: DigestSchedule, now: datetime, public_url: str | PageLinks) -> DailyPlan:
    """One digest per target whose scheduled moment has come (`due_occurrence`).

    A target is included when it has an open alert, a queued item, or an alert that changed since its
    previous digest; a target with nothing open and nothing changed gets no digest. `schedule_of` maps a
    receiver name to its schedule (others: `default_schedule`)."""
    tracked: dict[str, list[TrackedAlert]] = {}
    targets: dict[str, Target] = {}
    for alert in alerts:
        tracked.setdefault(alert.target.key, []).append(alert)
        targets.setdefault(alert.target.key, alert.target)
    queued: dict[str, list[DailyItem]] = {}
    for item in items:
        queued.setdefault(item.target.key, []).append(item)
        targets.setdefault(item.target.key, item.target)
    ready: list[DailyDigest] = []
    next_due: datetime | None = None
    for key in sorted(targets):
        target = targets[key]
        schedule = schedule_of.get(target.receiver, default_schedule)
        mine, waiting = tracked.get(key, []), queued.get(key, [])
        first_seen = min([a.opened_at for a in mine] + [i.queued_at for i in waiting])
        upcoming = schedule.next_after(now)
        next_due = upcoming if next_due is None else min(next_due, upcoming)
        occurrence = due_occurrence(schedule, now=now, last_sent=last_sent.get(key), first_seen=first_seen)
        if occurrence is None:
            continue
        previous = last_sent.get(key)
        since = previous if previous is not None else occurrence - (schedule.every or timedelta(days=1))
        open_now = [a for a in mine if a.status == "open"]
        changed = [a for a in mine if a.updated_at > since]
        if not open_now and not changed and not waiting:
            continue
        notification = render_daily_digest(
            [a.risk for a in open_now], target, public_url,
            changed=[(a.risk, _change(a, since)) for a in changed] + [
                (i.risk, i.kind) for i in waiting if i.risk.risk_id not in {a.risk.risk_id for a in changed}],
            day=occurrence.astimezone(schedule.zone).date(), since=previous,
            renewal_horizon=RENEWAL_HORIZON, dedup_key=daily_key(target, schedule, occurrence))
        ready.append(DailyDigest(notification, occurrence, tuple(i.item_id for i in waiting)))
    return DailyPlan(ready=ready, next_due=next_due)


def _change(alert: TrackedAlert, since: datetime) -> str:
    if alert.status == "resolved":
        return "resolved"
    if alert.opened_at > since:
        return "opened"
    return "updated"


def next_scheduled(schedules: Sequence[DigestSchedule], now: datetime) -> datetime | None:
    """The next moment any of `schedules` is due (the periodic loop sleeps until then)."""
    return min((s.next_after(now) for s in schedules), default=None)


def latest_scheduled(schedules: Sequence[DigestSchedule], now: datetime) -> datetime | None:
    """The latest moment at or before `now` of any of `schedules`: a check made at or after it has seen
    every digest due so far, so the next one is needed only after a later moment passes."""
    return max((s.latest_at_or_before(now) for s in schedules), default=None)
