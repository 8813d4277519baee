"""Risk events -> claimed deliveries, in one unit of work (Alertmanager's route -> dedup -> ... -> record).

Every `claim_*` method runs inside the caller's transaction, over a port (`services.alerts.service.ports`):
it reads what it needs in a few batched queries, applies the pure domain (`route_targets`, `plan_target`,
`render`, `plan_digests`) and writes alert rows, per-target state, digest items and pending deliveries
(each under a UNIQUE dedup key). Nothing is sent here; the caller commits, then hands the returned
deliveries over to the `DeliveryRunner`.

`claim_risks`, the consumer's hot path, reads once and writes once through a `ClaimStore`. Between the two
it keys everything by risk id, since an alert row written by the batch has no id yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.alerts.domain.action_links import ActionLinks, action_links
from services.alerts.domain.content import Notification, PageLinks, render
from services.alerts.domain.daily import (
    CHANGES_LOOKBACK,
    DAILY_ITEM,
    DAILY_KIND,
    DailyItem,
    DigestSchedule,
    TrackedAlert,
    latest_scheduled,
    next_scheduled,
    plan_daily_digests,
)
from services.alerts.domain.digest import DEFAULT_GROUP_BY, PendingItem, pending, plan_digests
from services.alerts.domain.policy import AlertState, TargetPlan, plan_target
from services.alerts.domain.routing import RoutedTarget, RoutingTree
from services.alerts.domain.silences import Silence, matching_silence
from services.alerts.domain.targets import Target
from services.alerts.service.ports import ClaimStore, DigestStore, RepeatStore
from services.alerts.service.records import (
    ClaimWrites,
    DailyReads,
    DeliveryRow,
    KnownAlert,
    KnownState,
    SilenceRow,
    StateRow,
    new_delivery,
)
from shared.bus.port import TopicPartition
from shared.metrics import AlertsMetrics
from shared.risks import RiskEvent

log = logging.getLogger(__name__)

YIELD_EVERY = 20
# How many targets' alerts a daily digest check reads at once (its memory is bounded by that, not by every
# open alert).
DAILY_TARGETS_PER_READ = 200


@dataclass
class ClaimResult:
    deliveries: list[DeliveryRow] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)  # risk events by outcome
    queued_for_digest: int = 0

    def count(self, outcome: str, n: int = 1) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + n


class DigestRace(Exception):
    """Another flusher consumed some of the same items first: roll back and try again later."""


def _domain_state(
    acked: bool, row: StateRow | KnownState | None, risk_id: str, target_key: str
) -> AlertState | None:
    if row is None:
        return None
    return AlertState(
        risk_id=risk_id,
        target_key=target_key,
        last_severity=row.last_severity,
        last_notified_at=row.last_notified_at,
        acked=acked,
        count=row.notify_count,
        last_seq=row.last_seq,
        resolved_notified=row.resolved_notified,
    )


def _state_values(
    target: Target,
    state: AlertState,
    *,
    repeat_interval: timedelta,
    kind: str | None,
    next_repeat_at: datetime | None,
) -> dict[str, Any]:
    """The alerts_states columns of one (alert, target) but `alert_id`."""
    return {
        "target_key": target.key,
        "target": target.to_dict(),
        "repeat_interval_s": repeat_interval.total_seconds(),
        "last_severity": state.last_severity,
        "last_kind": kind,
        "last_notified_at": state.last_notified_at,
        "notify_count": state.count,
        "last_seq": state.last_seq,
        "resolved_notified": state.resolved_notified,
        "next_repeat_at": next_repeat_at,
    }


def _planned_values(rt: RoutedTarget, plan: TargetPlan) -> dict[str, Any]:
    return _state_values(
        rt.target,
        plan.state,
        repeat_interval=rt.match.repeat_interval,
        kind=plan.last_kind,
        next_repeat_at=plan.next_repeat_at,
    )


def silence_from_row(row: SilenceRow) -> Silence:
    return Silence(
        id=row.id,
        account_id=row.account_id,
        types=frozenset(row.types),
        until=row.until,
        reason=row.reason,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def _by_account(rows: Sequence[SilenceRow]) -> dict[str, list[Silence]]:
    silences: dict[str, list[Silence]] = {}
    for row in rows:
        silences.setdefault(row.account_id, []).append(silence_from_row(row))
    return silences


class AlertPipeline:
    def __init__(
        self,
        tree: RoutingTree,
        *,
        public_url: str,
        enabled: Collection[str] | None,
        lease: timedelta,
        metrics: AlertsMetrics,
        clock: Callable[[], datetime],
        action_secret: bytes | None = None,
        digest_schedule: DigestSchedule | None = None,
    ) -> None:
        """`action_secret` signs the links of messages: the account pages' and the receivers' portfolios
        (opened without an API key) and the Acknowledge / Snooze links of e-mails (without it, page links
        ask for a read key and e-mails carry no action links)."""
        self.tree = tree
        self.action_secret = action_secret
        self.link_ttl = timedelta(days=7)
        self.public_url = public_url
        self.enabled = enabled
        self.lease = lease
        self.metrics = metrics
        self.clock = clock
        # The daily digest schedule of receivers that do not set `digest` (docs/routing.md).
        self.digest_schedule = digest_schedule or DigestSchedule()
        # Told the earliest `due_at` of newly queued group items (the periodic flush wakes up for it).
        self.on_digest_due: Callable[[datetime], None] | None = None

    def next_daily_due(self, now: datetime) -> datetime | None:
        """The next moment a daily digest of any receiver may be due."""
        return next_scheduled([self.digest_schedule, *self.tree.schedules().values()], now)

    def latest_daily_moment(self, now: datetime) -> datetime | None:
        """The latest scheduled moment of any receiver at or before `now`."""
        return latest_scheduled([self.digest_schedule, *self.tree.schedules().values()], now)

    def _schedule_of(self, target: Target) -> DigestSchedule:
        return self.tree.schedules().get(target.receiver, self.digest_schedule)

    def _hint(self, rows: Sequence[dict[str, Any]]) -> None:
        due = [r["due_at"] for r in rows if r["kind"] != DAILY_ITEM]
        if due and self.on_digest_due is not None:
            self.on_digest_due(min(due))

    def _targets(self, risk: RiskEvent) -> list[RoutedTarget]:
        return self.tree.route_targets(risk, enabled=self.enabled)

    def _plan(
        self,
        risk: RiskEvent,
        rt: RoutedTarget,
        previous: AlertState | None,
        last_kind: str | None,
        silence: Silence | None,
        now: datetime,
        *,
        sweep: bool,
    ) -> TargetPlan:
        """`plan_target` with the route's settings; a silenced target is counted as suppressed."""
        plan = plan_target(
            risk,
            previous,
            target_key=rt.target.key,
            last_kind=last_kind,
            now=now,
            repeat_interval=rt.match.repeat_interval,
            send_resolved=rt.match.send_resolved,
            group_wait=rt.match.group_wait,
            silenced_until=silence.until if silence is not None else None,
            sweep=sweep,
            group_bypass=rt.match.group_bypass,
            digest_only=rt.match.digest_only.selects(risk),
        )
        if plan.suppressed:
            self.metrics.notifications.labels(rt.target.kind, "suppressed").inc()
        return plan

    def links(self, now: datetime) -> PageLinks:
        """The pages a message rendered now links to, signed for its receiver when a key is set."""
        return PageLinks(self.public_url, self.action_secret, now, self.link_ttl)

    def _action_links(self, alert_id: int, target: Target, now: datetime) -> ActionLinks | None:
        """The signed Acknowledge / Snooze links of an e-mail (none without a key, or for chat targets)."""
        if not self.action_secret or target.kind not in ("email", "console"):
            return None
        return action_links(self.action_secret, self.public_url, alert_id, target.address, now=now)

    def _render(
        self, risk: RiskEvent, rt: RoutedTarget, plan: TargetPlan, alert_id: int | None, now: datetime
    ) -> Notification:
        """The message, naming its alert (the buttons' and action links' handle)."""
        target = rt.target
        links = None if alert_id is None else self._action_links(alert_id, target, now)
        return render(
            risk,
            target,
            self.links(now),
            kind=plan.decision.kind,
            dedup_suffix=plan.decision.dedup_suffix,
            alert_id=alert_id,
            links=links,
        )

    # -- risk events ---------------------------------------------------------------------------
    async def claim_risks(
        self, store: ClaimStore, risks: Sequence[RiskEvent], positions: dict[TopicPartition, int]
    ) -> ClaimResult:
        """Apply a consumed batch (in offset order) and save the consumed positions with it."""
        now = self.clock()
        result = ClaimResult()
        reads = await store.claim_reads(risks, now)
        new_ids = reads.new_event_ids
        fresh: list[RiskEvent] = []
        for risk in risks:
            if risk.event_id not in new_ids:
                result.count("duplicate")
                continue
            new_ids.discard(risk.event_id)  # a second copy inside the batch is a duplicate too
            fresh.append(risk)

        alerts = reads.alerts
        applied, latest = self._apply_alerts(fresh, alerts, result)
        silences = _by_account(reads.silences)

        # Everything below is keyed by risk id (one alert row per risk): a new alert has no id yet.
        dirty: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        mem: dict[tuple[str, str], AlertState | None] = {}
        kinds = {key: row.last_kind for key, row in reads.states.items()}
        notifications: list[tuple[Notification, str]] = []
        digest_rows: list[tuple[str, dict[str, Any]]] = []
        for n, risk in enumerate(applied, 1):
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # rendering is CPU work: let sends in flight read their answers
            risk_id = risk.risk_id
            alert = alerts.get(risk_id)  # as loaded: the batch never changes an acknowledgement
            acked = alert is not None and alert.acked
            silence = matching_silence(silences.get(risk.account_id, ()), risk, now)
            routed = self._targets(risk)
            if not routed:
                result.count("unrouted")
                log.warning(
                    "risk %s (%s) of account %s has no receiver: no CSM and no fallback receiver",
                    risk_id,
                    risk.type,
                    risk.account_id,
                )
            for rt in routed:
                key = (risk_id, rt.target.key)
                prev = (
                    mem[key]
                    if key in mem
                    else _domain_state(acked, reads.states.get(key), risk_id, rt.target.key)
                )
                plan = self._plan(risk, rt, prev, kinds.get(key), silence, now, sweep=False)
                mem[key] = plan.state
                kinds[key] = plan.last_kind
                dirty[key] = (risk_id, _planned_values(rt, plan))
                if plan.send in ("digest", "daily"):
                    digest_rows.append((risk_id, self._digest_row(risk, rt, plan, now)))
                elif plan.send == "now":
                    alert_id = alert.id if alert is not None else reads.new_alert_ids.get(risk_id)
                    notifications.append((self._render(risk, rt, plan, alert_id, now), risk_id))
            result.count("applied")

        result.queued_for_digest = len(digest_rows)
        self._hint([row for _, row in digest_rows])
        result.deliveries = await store.claim_writes(
            ClaimWrites(
                now=now,
                lease_until=now + self.lease,
                alerts=latest,
                states=list(dirty.values()),
                digest_items=digest_rows,
                deliveries=notifications,
                positions=positions,
                alert_ids=_alert_ids(latest, alerts, reads.new_alert_ids),
            )
        )
        return result

    @staticmethod
    def _apply_alerts(
        fresh: Sequence[RiskEvent], alerts: dict[str, KnownAlert], result: ClaimResult
    ) -> tuple[list[RiskEvent], list[RiskEvent]]:
        """The events to apply, in order (an event older than what the alert row holds is dropped), and
        the last of them per risk: what its alert row becomes."""
        last_seq = {rid: a.last_seq for rid, a in alerts.items()}
        applied: list[RiskEvent] = []
        latest: dict[str, RiskEvent] = {}
        for risk in fresh:
            if risk.risk_id in last_seq and risk.seq <= last_seq[risk.risk_id]:
                result.count("stale")
                continue
            last_seq[risk.risk_id] = risk.seq
            applied.append(risk)
            latest[risk.risk_id] = risk
        return applied, list(latest.values())

    def _digest_row(self, risk: RiskEvent, rt: RoutedTarget, plan: TargetPlan, now: datetime) -> dict[str, Any]:
        """The alerts_digest_items columns of one queued notification but `alert_id`: waiting `group_wait`
        for its group, or (kind `daily`) for the target's daily digest."""
        item = pending(
            risk,
            rt.target,
            now=now,
            group_wait=rt.match.group_wait,
            kind=plan.decision.kind or "opened",
            dedup_suffix=plan.decision.dedup_suffix,
        )
        daily = plan.send == "daily"
        return {
            "dedup_key": item.item_key,
            "target_key": rt.target.key,
            "target": rt.target.to_dict(),
            "risk": risk.model_dump(mode="json"),
            "kind": DAILY_ITEM if daily else item.kind,
            "dedup_suffix": item.dedup_suffix,
            "queued_at": item.queued_at,
            "due_at": self._schedule_of(rt.target).next_after(now) if daily else item.due_at,
            "consumed_at": None,
            "delivery_id": None,
        }

    # -- repeats (wall clock) ------------------------------------------------------------------
    async def claim_repeats(self, store: RepeatStore, limit: int = 500) -> ClaimResult:
        """Re-check open, unacknowledged alerts whose repeat_interval has passed."""
        now = self.clock()
        result = ClaimResult()
        due = await store.due_repeats(now, limit)
        if not due:
            return result
        silences = _by_account(await store.active_silences({a.account_id for a, _ in due}, now))
        updates: list[dict[str, Any]] = []
        notifications: list[tuple[Notification, int]] = []
        digest_rows: list[dict[str, Any]] = []
        for alert, row in due:
            risk = RiskEvent.model_validate(alert.last_event)
            target = Target.from_dict(row.target)
            rt = next((r for r in self._targets(risk) if r.target.key == target.key), None)
            prev = _domain_state(alert.acked_at is not None, row, risk.risk_id, target.key)
            assert prev is not None
            if rt is None:  # the routing changed: this target no longer hears about the risk
                updates.append({"alert_id": alert.id, **_retired_values(target, prev, row)})
                continue
            silence = matching_silence(silences.get(risk.account_id, ()), risk, now)
            plan = self._plan(risk, rt, prev, row.last_kind, silence, now, sweep=True)
            updates.append({"alert_id": alert.id, **_planned_values(rt, plan)})
            if plan.send in ("digest", "daily"):
                digest_rows.append({"alert_id": alert.id, **self._digest_row(risk, rt, plan, now)})
            elif plan.send == "now":
                notifications.append((self._render(risk, rt, plan, alert.id, now), alert.id))
        await store.upsert_states(updates)
        await store.add_digest_items(digest_rows)
        result.queued_for_digest = len(digest_rows)
        self._hint(digest_rows)
        result.deliveries = await store.claim(
            [new_delivery(n, a) for n, a in notifications], now, now + self.lease
        )
        result.count("repeat", len(notifications) + len(digest_rows))
        return result

    # -- digests -------------------------------------------------------------------------------
    async def claim_digests(self, store: DigestStore, limit: int = 5000) -> ClaimResult:
        """Group the due digest items per target (and the route's `group_by`: by default per account) and
        claim one notification per group. Every item records the delivery that carried it."""
        now = self.clock()
        result = ClaimResult()
        rows = await store.due_digest_items(now, limit)
        if not rows:
            return result
        items: list[PendingItem] = []
        ids: dict[str, int] = {}
        for row in rows:
            risk = RiskEvent.model_validate(row.risk)
            target = Target.from_dict(row.target)
            routed = next((r for r in self._targets(risk) if r.target.key == target.key), None)
            item = PendingItem(
                risk=risk,
                target=target,
                queued_at=row.queued_at,
                due_at=row.due_at,
                kind=row.kind,
                dedup_suffix=row.dedup_suffix,
                group_by=routed.match.group_by if routed is not None else DEFAULT_GROUP_BY,
            )
            items.append(item)
            ids[item.item_key] = row.id
        # (the alerts first: the messages carry their buttons and e-mail action links)
        alerts = await store.alerts_by_risk({i.risk.risk_id for i in items})
        plan = plan_digests(items, now=now, public_url=self.links(now),
                            alert_ids={rid: a.id for rid, a in alerts.items()},
                            action_links=lambda alert_id, target: self._action_links(alert_id, target, now))
        claimed = await store.claim(
            [
                new_delivery(
                    n, alerts[n.risk_ids[0]].id if len(n.risk_ids) == 1 and n.risk_ids[0] in alerts else None
                )
                for n in plan.ready
            ],
            now,
            now + self.lease,
        )
        by_key = {d.dedup_key: d.id for d in claimed}
        assignments = {
            ids[i.item_key]: by_key.get(plan.carried_by.get(i.item_key, "")) for i in plan.consumed
        }
        if not await store.consume_digest_items(assignments, now):
            raise DigestRace("digest items were consumed concurrently; retrying on the next flush")
        result.deliveries = claimed
        result.count("digest", len(plan.ready))
        return result

    # -- daily digests -------------------------------------------------------------------------
    async def claim_daily_digests(self, store: DigestStore) -> ClaimResult:
        """Claim the daily digest of every target whose scheduled moment has come (once per target and
        day: the dedup key names the day), consuming the items that waited for it.

        The targets are read `DAILY_TARGETS_PER_READ` at a time, so what the check holds is bounded by
        that many targets' alerts, not by every open alert."""
        now = self.clock()
        result = ClaimResult()
        since = now - CHANGES_LOOKBACK
        keys = await store.daily_digest_targets(since)
        for start in range(0, len(keys), DAILY_TARGETS_PER_READ):
            reads = await store.daily_digest_reads(now, since, keys[start:start + DAILY_TARGETS_PER_READ])
            result.deliveries.extend(await self._claim_daily(store, reads, now))
        if result.deliveries:
            result.count(DAILY_KIND, len(result.deliveries))
        return result

    async def _claim_daily(self, store: DigestStore, reads: DailyReads, now: datetime) -> list[DeliveryRow]:
        tracked = [
            TrackedAlert(
                risk=RiskEvent.model_validate(alert.last_event),
                target=Target.from_dict(state.target),
                status=alert.status,
                opened_at=alert.opened_at,
                updated_at=alert.updated_at,
                acked=alert.acked_at is not None,
            )
            for alert, state in reads.tracked
            if state.notify_count > 0
        ]
        items = [
            DailyItem(
                item_id=row.id,
                risk=RiskEvent.model_validate(row.risk),
                target=Target.from_dict(row.target),
                kind=row.dedup_suffix.split(":")[0],
                queued_at=row.queued_at,
            )
            for row in reads.items
        ]
        plan = plan_daily_digests(
            tracked,
            items,
            last_sent=reads.last_sent,
            schedule_of=self.tree.schedules(),
            default_schedule=self.digest_schedule,
            now=now,
            public_url=self.links(now),
        )
        if not plan.ready:
            return []
        claimed = await store.claim(
            [new_delivery(d.notification, None) for d in plan.ready], now, now + self.lease
        )
        by_key = {d.dedup_key: d.id for d in claimed}
        assignments = {
            item: by_key[d.notification.dedup_key]
            for d in plan.ready
            if d.notification.dedup_key in by_key
            for item in d.items
        }
        if assignments and not await store.consume_digest_items(assignments, now):
            raise DigestRace("daily digest items were consumed concurrently; retrying later")
        return claimed


def _alert_ids(
    written: Sequence[RiskEvent], known: dict[str, KnownAlert], reserved: dict[str, int]
) -> dict[str, int]:
    """The id of every alert row a claim writes: the row's own, else the one reserved for it."""
    out: dict[str, int] = {}
    for risk in written:
        alert = known.get(risk.risk_id)
        alert_id = alert.id if alert is not None else reserved.get(risk.risk_id)
        if alert_id is not None:
            out[risk.risk_id] = alert_id
    return out


def _retired_values(target: Target, state: AlertState, row: StateRow) -> dict[str, Any]:
    """The state of a target the routing no longer reaches: kept as it was, never repeated again."""
    return _state_values(
        target,
        state,
        repeat_interval=timedelta(seconds=row.repeat_interval_s),
        kind=row.last_kind,
        next_repeat_at=None,
    )
