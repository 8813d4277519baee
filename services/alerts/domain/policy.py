"""When a risk event notifies a target: when the risk opens, when its severity rises, again after the
route's `repeat_interval` while unacknowledged, and when it resolves if the route has `send_resolved`
(docs/routing.md). Each decision is claimed and sent once (docs/architecture.md).

State is kept per (risk_id, target key). `decide` is pure; `next_state` is the state to store after it,
whatever the decision (so a silenced or suppressed event still moves `last_seq`). `plan_target` puts them
together for one routed target: what to store, when to look again and whether to send now or in a digest;
the consumer's claim of risk events and the periodic repeat sweep both go through it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from services.alerts.domain.digest import SendMode, send_mode
from shared.risks import RiskEvent, severity_rises

NotificationKind = Literal["opened", "escalated", "repeat", "resolved"]


@dataclass(frozen=True)
class AlertState:
    """What one target has been told about one risk."""

    risk_id: str
    target_key: str
    last_severity: str | None = None          # severity of the last notification sent
    last_notified_at: datetime | None = None
    acked: bool = False
    count: int = 0                            # notifications decided so far
    last_seq: int = 0                         # highest risk event seq seen for this target
    resolved_notified: bool = False


@dataclass(frozen=True)
class Decision:
    notify: bool
    kind: NotificationKind | None
    reason: str
    sequence: int = 0                          # 1-based number of this notification (0 when not notifying)

    @property
    def dedup_suffix(self) -> str:
        """`kind`, numbered for repeats (one event may be repeated several times by a periodic sweep)."""
        if self.kind == "repeat":
            return f"repeat:{self.sequence}"
        return self.kind or "none"


def decide(risk: RiskEvent, previous: AlertState | None, *, now: datetime, repeat_interval: timedelta,
           send_resolved: bool, silenced: bool) -> Decision:
    count = previous.count if previous is not None else 0

    def yes(kind: NotificationKind, reason: str) -> Decision:
        return Decision(True, kind, reason, count + 1)

    def no(reason: str) -> Decision:
        return Decision(False, None, reason)

    if silenced:
        return no("silenced")
    if previous is not None and risk.seq < previous.last_seq:
        return no(f"stale event: seq {risk.seq} < {previous.last_seq} already seen")
    if risk.transition == "resolved":
        if not send_resolved:
            return no("send_resolved is off for this route")
        if previous is None or previous.count == 0:
            return no("resolved, but this target was never notified of the risk")
        if previous.resolved_notified:
            return no("resolution already notified")
        return yes("resolved", "risk resolved")
    if previous is None or previous.count == 0:
        # First notification for this target: the opening itself, or an update of a risk that was
        # silenced (or routed elsewhere) when it opened.
        first = "risk opened" if risk.transition == "opened" else "first notification for target"
        return yes("opened", first)
    if previous.resolved_notified:
        return no("risk already resolved for this target")
    if previous.last_severity is not None and severity_rises(previous.last_severity, risk.severity):
        return yes("escalated", f"severity rose from {previous.last_severity} to {risk.severity}")
    if previous.acked:
        return no("acknowledged")
    if previous.last_notified_at is not None and now - previous.last_notified_at >= repeat_interval:
        return yes("repeat", f"unacknowledged for {_human(repeat_interval)} (repeat_interval)")
    if risk.transition == "opened":
        return no("already notified")
    return no("no severity rise; repeat_interval not reached")


def next_state(previous: AlertState | None, risk: RiskEvent, target_key: str, decision: Decision, *,
               now: datetime) -> AlertState:
    state = previous or AlertState(risk_id=risk.risk_id, target_key=target_key)
    state = replace(state, last_seq=max(state.last_seq, risk.seq))
    if not decision.notify:
        return state
    if decision.kind == "resolved":
        return replace(state, count=state.count + 1, last_notified_at=now, resolved_notified=True)
    return replace(state, count=state.count + 1, last_notified_at=now, last_severity=risk.severity)


def repeat_due_at(state: AlertState, repeat_interval: timedelta) -> datetime | None:
    """When a periodic sweep should call `decide` again for an unacknowledged, unresolved risk."""
    if state.acked or state.resolved_notified or state.last_notified_at is None:
        return None
    return state.last_notified_at + repeat_interval


@dataclass(frozen=True)
class TargetPlan:
    """What one risk event (or one repeat check) does to one routed target."""

    decision: Decision
    state: AlertState                         # to store, whatever the decision
    last_kind: str | None                     # kind of the last notification decided for this target
    next_repeat_at: datetime | None           # when the repeat sweep should look at it again
    send: SendMode | None                     # now, digest (after group_wait), daily (digest); None: nothing
    suppressed: bool                          # held back by a silence (counted as such)


def plan_target(risk: RiskEvent, previous: AlertState | None, *, target_key: str, last_kind: str | None,
                now: datetime, repeat_interval: timedelta, send_resolved: bool, group_wait: timedelta,
                silenced_until: datetime | None, sweep: bool = False,
                group_bypass: frozenset[str] = frozenset(), digest_only: bool = False) -> TargetPlan:
    """The decision for one target and everything stored with it.

    `silenced_until` is the end of the silence covering the risk (None: not silenced). `sweep` is True for
    the periodic repeat check: being the one that comes back, it reschedules itself for when the silence
    ends and stops asking about a target whose repeat time has passed without a notification (nothing
    will change that by itself). A risk event only records the state; the sweep takes it from there.

    `group_bypass` (severities that never wait) and `digest_only` (the route sends this risk to the daily
    digest) choose how a notification goes out (`send_mode`); a digest-only risk is never repeated on its
    own: the daily digest lists it while it is open.
    """
    silenced = silenced_until is not None
    decision = decide(risk, previous, now=now, repeat_interval=repeat_interval, send_resolved=send_resolved,
                      silenced=silenced)
    state = next_state(previous, risk, target_key, decision, now=now)
    due = repeat_due_at(state, repeat_interval) if risk.transition != "resolved" else None
    if sweep and silenced:
        due = silenced_until  # look again when the silence ends
    elif sweep and not decision.notify and due is not None and due <= now:
        due = None
    if digest_only and risk.severity not in group_bypass:
        due = None
    send: SendMode | None = None
    if decision.notify:
        send = send_mode(risk, decision.kind, group_wait=group_wait, group_bypass=group_bypass,
                         digest_only=digest_only)
    return TargetPlan(decision=decision, state=state,
                      last_kind=decision.kind if decision.notify else last_kind,
                      next_repeat_at=due, send=send, suppressed=silenced)


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"
