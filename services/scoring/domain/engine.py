"""The scoring engine: folds events into account state, evaluates health and risks in event time.

- `apply(state, event)` folds one event in. A usage event only updates windows and last-seen days (the
  hot path: no evaluation, since usage is judged on complete days at the daily clock tick). Any other
  event is evaluated at once, as of max(the account's clock, the event's occurred_at), so a champion
  leaving or a ticket storm is reported within the batch that carries it.
- `evaluate(state, at)` is the clock: the service calls it when the partition's watermark passes the
  account's `next_due`, at least daily while the account is live. Usage, breadth and key-contact
  recency are judged there, on complete days before `at`'s day. Because the watermark lags the newest
  event by the allowed lateness, every event of those days is already folded in, whatever the order in
  which they arrived.
- Risks follow a lifecycle: opened, updated (severity or material evidence changed), resolved; at most
  one open risk per type. A history snapshot is emitted only on a significant change.
- An account whose newest lifecycle (account events' `lifecycle`, newest `lifecycle_at` wins) is `churned`
  raises no risk: its open risks are resolved once (evidence `{"reason": "account churned"}`), detectors
  run no more and the daily tick stops, until a newer lifecycle says otherwise. Its health is still scored.
- Quiet ticks may be skipped. `Outcome.next_due` is the next daily tick, as always; `skip_to(state)` tells a
  driver that the ticks from then on cannot change anything anyone sees until a later moment (an account
  with no score yet: too young for a usage baseline, no tickets, answers, contacts or risks; see
  `_quiet_until`), so its timer may be set there instead. The state then keeps the first skipped tick as
  its `next_due`, and before anything else is applied to the account the driver evaluates it once at the
  latest skipped tick the watermark has passed (`owed(state, watermark)`). Evaluating at that one moment
  leaves the state exactly as evaluating at every skipped tick would have (tests/domain/scoring/
  test_quiet_ticks.py runs streams both ways and compares every outcome and the final encoded states).
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from shared.events import (
    AccountData,
    ContactData,
    Event,
    EventType,
    SentimentData,
    TicketData,
    UsageData,
)
from shared.risks import AccountBrief, CsmRef

from . import health as health_model
from .config import COMPONENTS, ScoringConfig
from .detectors import DETECTORS, RISK_TYPES, Context, summary
from .model import Delta, HealthSnapshot, Outcome, RiskTransition
from .sentiment import answer_value
from .signals import (
    complete_days_changed,
    contacts_changed,
    fold_rhythm,
    key_usage_changed,
    measure,
    refresh_usual_gaps,
    sentiments_changed,
    settled,
    tickets_changed,
)
from .state import (
    BREADTH_DAYS,
    C_FIRST,
    C_LEFT,
    C_NAME,
    C_ROLE,
    C_SINCE,
    C_STATUS,
    C_TS,
    C_USER,
    DAY,
    FEATURE_BITS,
    K_LAST,
    K_MASK,
    KEY_ROLES,
    MASK_DAYS,
    MAX_CONTACTS,
    MAX_OPEN_TICKETS,
    MAX_SENTIMENTS,
    NO_SCORE,
    NONE,
    PRIORITIES,
    R_EVIDENCE,
    R_MATERIAL,
    R_N,
    R_OPENED,
    R_SEQ,
    R_SEV,
    RH_FIRST,
    RH_LAST,
    RH_N,
    RH_UPTO,
    ROLES,
    SCORE_DAYS,
    SEVERITIES,
    SOURCES,
    STATUSES,
    TICKET_DAYS,
    USAGE_DAYS,
    USER_BITS,
    AccountState,
    stable_hash,
)
from .usage import folded_rhythm

RISK_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://churnsignal.dev/risk")
# An account with no event for this long (and nothing time-bound pending) stops being ticked daily.
LIVE_DAYS = 100
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# The evidence of a risk resolved because its account churned.
CHURNED_EVIDENCE = {"reason": "account churned"}
# Risks that resolve as time passes, so an account holding one is ticked daily however quiet it is.
_TIME_BOUND = frozenset({"health_drop", "ticket_spike", "sentiment_drop", "renewal_risk"})


def risk_id(account_id: str, risk_type: str, opened_ts: int, n: int) -> str:
    return str(uuid.uuid5(RISK_NAMESPACE, f"{account_id}|{risk_type}|{_dt(opened_ts).isoformat()}|{n}"))


def _ts(when: datetime) -> int:
    return int(when.timestamp() // 1)


def _dt(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class ScoringEngine:
    def __init__(self, config: ScoringConfig) -> None:
        self.config = config
        # Memos of pure functions on the hot path (bounded; cleared when full): a user's hash and bit in
        # the daily users bitmap, a feature's bit in the daily features bitmap, times of day boundaries.
        self._users: dict[str, tuple[int, int]] = {}
        self._features: dict[str, int] = {}
        self._times: dict[int, datetime] = {}
        self._key_features = config.key_features.names
        self._key_keep = config.key_features.window_days + 7   # days of key-feature uses kept
        # Quiet ticks (`_quiet_until`): whether the configuration weighs no component an account without a
        # score has from its first tick, the days of usage before a usage component or rule can judge,
        # the active days that make a usual gap, and whether the activity component is weighed.
        w = config.weights
        rule = config.usage_drop
        self._quiet = (w.tenure <= 0 and not (w.intensity > 0 and config.intensity.typical > 0)
                       and not (w.key_features > 0 and config.key_features.features))
        self._young_days = min(21, 3 * rule.recent_days, max(2 * rule.recent_days, rule.min_history_days))
        self._quiet_active_days = max(2, rule.min_active_days)
        self._weighs_activity = w.activity > 0

    def _user(self, user_id: str) -> tuple[int, int]:
        if len(self._users) >= 100_000:
            self._users.clear()
        h = stable_hash(user_id)
        found = self._users[user_id] = (h, 1 << (h % USER_BITS))
        return found

    def _feature(self, feature: str) -> int:
        if len(self._features) >= 100_000:
            self._features.clear()
        bit = self._features[feature] = 1 << (stable_hash(feature) % FEATURE_BITS)
        return bit

    def _time(self, ts: int) -> datetime:
        when = self._times.get(ts)
        if when is None:
            if len(self._times) >= 10_000:
                self._times.clear()
            when = self._times[ts] = _dt(ts)
        return when

    def new_state(self, account_id: str) -> AccountState:
        return AccountState(account_id)

    # -- events ------------------------------------------------------------------------------------

    def apply(self, state: AccountState, event: Event) -> Outcome:
        ts = int(event.occurred_at.timestamp() // 1)
        day = ts // DAY
        before = state.clock
        first_day = state.first_day
        if day > state.end_day:
            state.advance_to(day)
        if state.first_day == NONE or day < state.first_day:
            state.first_day = day
        if ts > before:
            state.clock = ts
        data = event.data
        if event.type is EventType.USAGE:
            assert isinstance(data, UsageData)
            self._fold_usage(state, day, data)
            return Outcome(None, [], self._due_after_event(state, day))
        unchanged_day = day <= state.end_day and state.first_day == first_day
        if event.type is EventType.TICKET:
            assert isinstance(data, TicketData)
            self._fold_ticket(state, day, data)
        elif event.type is EventType.SENTIMENT:
            assert isinstance(data, SentimentData)
            self._fold_sentiment(state, ts, data)
        elif event.type is EventType.ACCOUNT:
            assert isinstance(data, AccountData)
            self._fold_account(state, ts, data)
        elif event.type is EventType.CONTACT:
            assert isinstance(data, ContactData)
            if not self._fold_contact(state, ts, data) and unchanged_day:
                skipped = self._unchanged(state, max(before, ts))
                if skipped is not None:
                    skipped.next_due = self._due_after_event(state, day)
                    return skipped
        at_ts = max(before, ts)
        at = event.occurred_at.astimezone(UTC) if ts >= before else _dt(at_ts)
        outcome = self._evaluate(state, at_ts, at, event.id)
        outcome.next_due = self._due_after_event(state, day)
        return outcome

    def _fold_usage(self, st: AccountState, day: int, data: UsageData) -> None:
        # The hot path (most events are usage): plain locals, memoized bits.
        if day < st.eval_day:
            complete_days_changed(st)   # a late event
        k = st.end_day - day
        i = USAGE_DAYS - 1 - k
        if i >= 0:
            usage = st.usage
            total = usage[i] + data.count
            usage[i] = total if total < 0xFFFFFFFF else 0xFFFFFFFF
        if st.first_usage_day == NONE or day < st.first_usage_day:
            st.first_usage_day = day
        if day > st.last_usage_day:
            st.last_usage_day = day
        user = data.user_id
        uh = ubit = 0
        if user:
            known = self._users.get(user)
            uh, ubit = known if known is not None else self._user(user)
        i = BREADTH_DAYS - 1 - k
        if i >= 0:
            fbit = self._features.get(data.feature)
            st.features[i] |= fbit if fbit is not None else self._feature(data.feature)
            if user:
                st.users[i] |= ubit
        if self._key_features and data.feature in self._key_features:
            self._count_key_feature(st, day, data)
        if uh and st.key_users:
            rec = st.key_users.get(uh)
            if rec is not None:
                if k < MASK_DAYS:
                    rec[K_MASK] |= 1 << k   # (a complete day's bit: a late event, memo dropped above)
                if day > rec[K_LAST]:
                    seen = st.user_last_active_day(rec, st.eval_day)
                    rec[K_LAST] = day
                    if st.user_last_active_day(rec, st.eval_day) != seen:
                        key_usage_changed(st)

    def _count_key_feature(self, st: AccountState, day: int, data: UsageData) -> None:
        days = st.key_counts.get(data.feature)
        if days is None:
            days = st.key_counts[data.feature] = {}
        days[day] = days.get(day, 0) + data.count
        oldest = st.end_day - self._key_keep
        if min(days) < oldest:
            for old in [d for d in days if d < oldest]:
                del days[old]

    def _fold_ticket(self, st: AccountState, day: int, data: TicketData) -> None:
        tickets_changed(st)
        if st.first_ticket_day == NONE or day < st.first_ticket_day:
            st.first_ticket_day = day
        h = stable_hash(data.ticket_id)
        prio_given = "priority" in data.model_fields_set
        prio = PRIORITIES.index(data.priority)
        rec = st.open_tickets.get(h)
        if data.status in ("opened", "reopened"):
            if rec is None:
                i = st.index(day, TICKET_DAYS)
                if i >= 0:
                    st.tickets_opened[i] = min(255, st.tickets_opened[i] + 1)
                st.open_tickets[h] = [prio, day]
                if len(st.open_tickets) > MAX_OPEN_TICKETS:
                    oldest = min(st.open_tickets.items(), key=lambda kv: (kv[1][1], kv[0]))[0]
                    del st.open_tickets[oldest]
            else:
                if prio_given:
                    rec[0] = prio
                rec[1] = max(rec[1], day)
        elif data.status == "updated":
            if rec is not None:
                if prio_given:
                    rec[0] = prio
                rec[1] = max(rec[1], day)
        elif rec is not None:  # solved / closed
            del st.open_tickets[h]

    def _fold_sentiment(self, st: AccountState, ts: int, data: SentimentData) -> None:
        sentiments_changed(st)
        norm = answer_value(data)
        raw = -1 if data.score is None else round(data.score * 10)
        contact = stable_hash(data.contact_id) if data.contact_id else 0
        rec = [ts, round(norm * 1000), contact, SOURCES.index(data.source), raw]
        samples = st.sentiments
        samples.append(rec)
        samples.sort()  # time order (ties broken by the values, so arrival order never matters)
        horizon = samples[-1][0] - self.config.sentiment.window_days * DAY
        while samples and (samples[0][0] < horizon or len(samples) > MAX_SENTIMENTS):
            samples.pop(0)

    def _fold_account(self, st: AccountState, ts: int, data: AccountData) -> None:
        newer = ts >= st.facts_ts

        def merge(current: Any, value: Any) -> Any:
            if value is None:
                return current
            return value if newer or current is None else current

        st.name = merge(st.name, _bounded(data.name, 120))
        if data.csm is not None:
            st.csm_email = merge(st.csm_email, data.csm.email)
            st.csm_slack = merge(st.csm_slack, data.csm.slack_user_id)
            st.csm_name = merge(st.csm_name, _bounded(data.csm.name, 80))
        renewal = None if data.renewal_date is None else data.renewal_date.toordinal() - _EPOCH_ORDINAL
        st.renewal_day = merge(st.renewal_day, renewal)
        st.arr = merge(st.arr, data.arr)
        st.seats = merge(st.seats, data.seats)
        st.segment = merge(st.segment, _bounded(data.segment, 64))
        st.crm_url = merge(st.crm_url, data.crm_url)   # whole (a cut URL would be a wrong link)
        if newer:
            st.facts_ts = ts
        if data.lifecycle is not None:
            since = ts if data.lifecycle_at is None else _ts(data.lifecycle_at)
            if since >= st.lifecycle_ts:   # the newest lifecycle wins (a tie: the later event)
                st.lifecycle = data.lifecycle
                st.lifecycle_ts = since

    def _fold_contact(self, st: AccountState, ts: int, data: ContactData) -> bool:
        """Folds a contact event in; False when it changed nothing (a user or admin not kept)."""
        cid = data.contact_id
        c = st.contacts.get(cid)
        if data.role in ("user", "admin") and (c is None or ts >= c[C_TS]):
            # Only champions and sponsors matter to scoring (and people whose role is not known yet).
            if c is None:
                return False
            contacts_changed(st)
            del st.contacts[cid]
            st.sync_key_users()
            return True
        contacts_changed(st)
        if c is None:
            c = [None, 0, NONE, NONE, ts, ts, NONE, NONE]
            st.contacts[cid] = c
        newer = ts >= c[C_TS]
        was_active_key = c[C_ROLE] in KEY_ROLES and c[C_STATUS] != 1

        def take(index: int, value: Any, empty: Any) -> None:
            if value is not None and (newer or c[index] == empty):
                c[index] = value

        take(C_NAME, _bounded(data.name, 48), None)
        take(C_USER, stable_hash(data.user_id) if data.user_id else None, 0)
        take(C_ROLE, None if data.role is None else ROLES.index(data.role), NONE)
        take(C_STATUS, None if data.status is None else STATUSES.index(data.status), NONE)
        if data.status == "left" and (c[C_LEFT] == NONE or ts < c[C_LEFT]):
            c[C_LEFT] = ts
        if ts < c[C_FIRST]:
            c[C_FIRST] = ts
        if ts > c[C_TS]:
            c[C_TS] = ts
        is_active_key = c[C_ROLE] in KEY_ROLES and c[C_STATUS] != 1
        if c[C_STATUS] != 1:
            c[C_LEFT] = NONE
        if is_active_key and not was_active_key:
            c[C_SINCE] = ts
        elif not is_active_key:
            c[C_SINCE] = NONE
        if len(st.contacts) > MAX_CONTACTS:
            del st.contacts[_evictable_contact(st)]
        st.sync_key_users()
        return True

    def _unchanged(self, st: AccountState, at_ts: int) -> Outcome | None:
        """The outcome of evaluating at at_ts after an event that changed nothing the evaluation reads, when
        it is known without evaluating: the last evaluation was on the same day and would measure the same
        (`signals.settled`: nothing changed since, usage included), and the score and every detector's
        verdict depend on the measurements and the day only, so evaluating again would give the same score,
        move no risk and record no snapshot. None when it must evaluate."""
        if st.eval_ts == NONE or st.eval_ts // DAY != at_ts // DAY or not settled(st, self.config, at_ts // DAY):
            return None
        if at_ts > st.eval_ts:
            st.eval_ts = at_ts
        return Outcome(None, [], None)

    # -- clock -------------------------------------------------------------------------------------------

    def evaluate(self, state: AccountState, at: datetime) -> Outcome:
        at = at.astimezone(UTC)
        at_ts = _ts(at)
        day = at_ts // DAY
        if day > state.end_day:
            state.advance_to(day)
        if day > state.eval_day:
            state.eval_day = day
            refresh_usual_gaps(state, self.config)   # gaps move at most once a day
            fold_rhythm(state)
        outcome = self._evaluate(state, at_ts, at, None)
        state.next_due = self._due_after_tick(state, at_ts)
        outcome.next_due = None if state.next_due is None else self._time(state.next_due)
        return outcome

    def _due_after_event(self, st: AccountState, day: int) -> datetime | None:
        eval_day = st.eval_day
        candidate = ((day if day > eval_day else eval_day) + 1) * DAY
        due = st.next_due
        if due is None or candidate < due:
            due = st.next_due = candidate
        when = self._times.get(due)
        return when if when is not None else self._time(due)

    def _due_after_tick(self, st: AccountState, at_ts: int) -> int | None:
        if st.churned:
            return None   # nothing to judge any more (an event wakes the account up again)
        day = at_ts // DAY
        nxt = (day + 1) * DAY
        if st.clock // DAY >= day - self._live_days(st) or not _TIME_BOUND.isdisjoint(st.risks):
            return nxt
        if st.renewal_day is not None:
            start = st.renewal_day - self.config.renewal.proximity_start_days
            if day < start:
                return start * DAY
            if day <= st.renewal_day:
                return nxt
        return None

    def _live_days(self, st: AccountState) -> int:
        """How long after its last event an account is still ticked daily: LIVE_DAYS, or longer for a
        sparse account whose rhythm is still being judged (several of its usual gaps)."""
        return self._live_days_of(st.rhythm)

    def _live_days_of(self, rh: list[int]) -> int:
        if rh[RH_N] < 2:
            return LIVE_DAYS
        lapse = self.config.lapse
        gaps = lapse.live_gaps * (rh[RH_LAST] - rh[RH_FIRST]) / (rh[RH_N] - 1)
        return LIVE_DAYS if gaps <= LIVE_DAYS else min(int(gaps), lapse.max_live_days)

    # -- quiet ticks -------------------------------------------------------------------------------------

    def skip_to(self, state: AccountState) -> datetime | None:
        """When to evaluate the account next, skipping quiet ticks: a moment later than its next tick
        (`state.next_due`) when every daily tick from that one until then would change nothing anyone sees
        (no snapshot, no transition, the same score: none) and evaluating once at any of them, or at the
        returned moment, leaves the state as evaluating at each of them in turn would. None when its next
        tick is not known to be quiet (the outcome's `next_due` stands).

        A driver that sets the account's timer here must call `owed` before applying anything else to it."""
        until = self._quiet_until(state)
        return None if until is None else self._time(until)

    def owed(self, state: AccountState, watermark: datetime | None) -> datetime | None:
        """The tick to evaluate before anything else is applied to the account, when its timer was set by
        `skip_to`: the latest midnight at or before the watermark, if its next tick (`state.next_due`, the
        first one skipped) is at or before the watermark too; None otherwise. Called after the timers
        that are due (an account whose next tick was not skipped has none owed once they fired)."""
        due = state.next_due
        if due is None or watermark is None:
            return None
        w = _ts(watermark)
        if due > w:
            return None
        return self._time(w - w % DAY)

    def _quiet_until(self, st: AccountState) -> int | None:
        """The first moment after the next tick at which a tick may change what is seen, when the ticks
        before it cannot (None otherwise). Quiet: the account has no score and none can appear yet.

        The account must have nothing but usage and facts: no published score (nor a component known at
        its last evaluation), no risk, ticket, answer, contact or key user, no usual gap (fewer active days
        than it needs, so none appears without usage), no usage the next tick would not fold into its
        rhythm yet, not churned; the configuration must weigh no component that such an account has from
        its first tick (tenure, a calibrated intensity, configured key features). Then, with no event:
        - usage trend, breadth and the usage-drop rule need weeks of usage before judging (`_young_days`
          after the first usage day); before, usage trend is unknown unless the account is sparse (a
          usual gap of a week or more, judged by its chance to be active: not quiet), activity is unknown
          or not weighed, and support, sentiment, key contacts are unknown, so renewal is too;
        - a lapse (usage_drop's "lapsed") needs `lapse.min_silent_days` complete days of silence after
          the last active day;
        - the daily ticks stop (or follow the renewal) once the account is no longer live.
        The state's changes in between are the daily arrays moving (the same in one step or many), the
        rhythm folding days without usage (nothing), usual gaps staying unknown, and the evaluation's own
        day and time: evaluating once at the end leaves the same state."""
        due = st.next_due
        if due is None or not self._quiet:
            return None
        if (st.last_score is not None or st.known_mask or st.risks or st.contacts or st.key_users
                or st.sentiments or st.first_ticket_day != NONE or st.open_tickets or st.usual_gap
                or st.last_tier != "unknown" or st.churned):
            return None
        cfg = self.config
        day = due // DAY
        first, last = st.first_usage_day, st.last_usage_day
        if last != NONE and last >= day:
            return None   # usage the next tick does not fold in yet
        if USAGE_DAYS - st.usage.count(0) >= self._quiet_active_days:
            return None   # enough active days for a usual gap
        rh = st.rhythm
        if last != NONE and (rh[RH_UPTO] == NONE or last >= rh[RH_UPTO]):
            rh = folded_rhythm(st, day)   # as the next tick leaves it
        visits = rh[RH_N]
        until = self._daily_until(st, day, self._live_days_of(rh))
        if first != NONE:
            until = min(until, first + self._young_days)
        if visits >= 2:
            if self._weighs_activity:
                return None
            span = rh[RH_LAST] - rh[RH_FIRST]
            if span / (visits - 1) >= health_model.SPARSE_GAP_DAYS:
                return None   # judged by its chance to be active, which falls day by day
            until = min(until, rh[RH_LAST] + 1 + cfg.lapse.min_silent_days)
        return until * DAY if until > day else None

    def _daily_until(self, st: AccountState, day: int, live_days: int) -> int:
        """The first tick from `day` on that does not schedule the next day's (`_due_after_tick` without an
        event or a risk): the one that finds the account no longer live, or past its renewal when it
        came within the renewal's proximity by then."""
        after = max(day, st.clock // DAY + live_days + 1)
        renewal = st.renewal_day
        if renewal is not None and renewal - self.config.renewal.proximity_start_days <= after <= renewal:
            return renewal + 1
        return after

    # -- evaluation --------------------------------------------------------------------------------------

    def _evaluate(self, st: AccountState, at_ts: int, at: datetime, cause: str | None) -> Outcome:
        cfg = self.config
        at_day = at_ts // DAY
        sig = measure(st, cfg, at_day)
        health = health_model.assess(sig, cfg)
        score = health.score
        tier = cfg.tier(score)
        known_mask = health.known_mask
        if known_mask != st.known_mask:
            # A drop is only judged between scores made of the same components.
            st.score_max = [NO_SCORE] * SCORE_DAYS
            st.known_mask = known_mask
        peak = self._peak(st, at_day, cfg.health_drop.within_days)
        ctx = Context(cfg, sig, score, tier, peak, health, at_day - st.first_day)
        if score is not None:
            i = st.index(at_day, SCORE_DAYS)
            if i >= 0:
                v = round(score)
                if st.score_max[i] == NO_SCORE or v > st.score_max[i]:
                    st.score_max[i] = v
        pending = self._lifecycle(st, ctx, at_ts)
        if at_ts > st.eval_ts:
            st.eval_ts = at_ts
        snapshot = self._snapshot(st, health, tier, at, cause, bool(pending))
        if snapshot is None:  # no risk moved and the health did not change significantly
            return Outcome(None, [], None)
        transitions = [
            RiskTransition(risk_id=rid, seq=seq, transition=kind, account_id=st.account_id, type=rtype,
                           severity=sev, summary=summary(rtype, evidence, st.display_name()),
                           evidence=evidence, occurred_at=at, trigger_event_id=cause, health=snapshot)
            for rid, seq, kind, rtype, sev, evidence in pending
        ]
        return Outcome(snapshot, transitions, None)

    def _peak(self, st: AccountState, at_day: int, within: int) -> float | None:
        n = len(st.score_max)
        hi = n - 1 - (st.end_day - at_day)
        lo = max(0, hi - within)
        values = [v for v in st.score_max[lo:max(0, hi + 1)] if v != NO_SCORE]
        return float(max(values)) if values else None

    def _lifecycle(self, st: AccountState, ctx: Context,
                   at_ts: int) -> list[tuple[str, int, str, str, str, dict[str, Any]]]:
        """Runs every detector and moves its risk along (a detector sees only its own open risk). For a
        churned account, resolves what is open and runs no detector."""
        out = []
        if st.churned:
            for rtype in RISK_TYPES:
                rec = st.risks.pop(rtype, None)
                if rec is not None:
                    out.append((risk_id(st.account_id, rtype, rec[R_OPENED], rec[R_N]), rec[R_SEQ] + 1,
                                "resolved", rtype, SEVERITIES[rec[R_SEV]], dict(CHURNED_EVIDENCE)))
            return out
        for rtype in RISK_TYPES:
            rec = st.risks.get(rtype)
            v = DETECTORS[rtype](ctx, None if rec is None else rec[R_MATERIAL])
            if rec is None:
                if v is None:
                    continue
                st.risk_counter += 1
                rec = [at_ts, 1, SEVERITIES.index(v.severity), st.risk_counter, v.material, v.evidence]
                st.risks[rtype] = rec
                out.append((risk_id(st.account_id, rtype, at_ts, rec[R_N]), 1, "opened", rtype, v.severity,
                            v.evidence))
                continue
            if v is None:
                del st.risks[rtype]
                out.append((risk_id(st.account_id, rtype, rec[R_OPENED], rec[R_N]), rec[R_SEQ] + 1, "resolved",
                            rtype, SEVERITIES[rec[R_SEV]], rec[R_EVIDENCE]))
                continue
            sev = SEVERITIES.index(v.severity)
            if sev != rec[R_SEV] or v.material != rec[R_MATERIAL]:
                rec[R_SEQ] += 1
                rec[R_SEV] = sev
                rec[R_MATERIAL] = v.material
                rec[R_EVIDENCE] = v.evidence
                out.append((risk_id(st.account_id, rtype, rec[R_OPENED], rec[R_N]), rec[R_SEQ], "updated", rtype,
                            v.severity, v.evidence))
            else:
                rec[R_EVIDENCE] = v.evidence  # fresh numbers for the read API, no transition
        return out

    def _snapshot(self, st: AccountState, health: health_model.Assessment, tier: str, at: datetime,
                  cause: str | None, transitions: bool) -> HealthSnapshot | None:
        """The new snapshot when the health changed significantly (or risks moved), else None."""
        score = health.score
        cfg = self.config
        score10 = None if score is None else round(score * 10)
        significant = (transitions or tier != st.last_tier or (score10 is None) != (st.last_score is None)
                       or (score10 is not None and st.last_score is not None
                           and abs(score10 - st.last_score) >= cfg.snapshot_min_change * 10))
        if not significant:
            return None
        components = health.components()
        prev = {name: rec for name, rec in zip(COMPONENTS, st.last_components, strict=False)}
        deltas = []
        for c in components:
            old = prev.get(c.name)
            old_contribution = 0.0 if old is None else old[1] / 10.0  # type: ignore[operator]
            old_score = None if old is None else old[0]
            change = round(c.contribution - old_contribution, 1)
            if abs(change) < 0.5:
                continue
            new_score = None if c.score is None else round(c.score * 10)
            label = c.label if new_score != old_score else "re-weighted"
            if c.score is None:
                label = f"now unknown: {c.reason}"
            points = f"{abs(change):.0f}" if abs(change) >= 1 else f"{abs(change):.1f}"
            deltas.append(Delta(c.name, change, f"{'+' if change > 0 else '−'}{points}: {label}"))
        deltas.sort(key=lambda d: (-abs(d.change), d.component))
        snap = HealthSnapshot(st.account_id, score, tier, tuple(components), at, cfg.version, tuple(deltas),
                              cause or "clock")
        st.last_score = score10
        st.last_tier = tier
        kept = [[None if c.score is None else round(c.score * 10), round(c.contribution * 10)]
                for c in components]
        while kept and kept[-1][0] is None:   # (unknown components at the end need no bytes)
            kept.pop()
        st.last_components = kept
        return snap

    # -- read side ------------------------------------------------------------------------------------

    def snapshot(self, state: AccountState) -> HealthSnapshot:
        """The current health (as of the last evaluation), without changing the state."""
        at_ts = state.eval_ts if state.eval_ts != NONE else max(state.clock, 0)
        sig = measure(state, self.config, at_ts // DAY)
        components, score = health_model.compute(sig, self.config)
        return HealthSnapshot(state.account_id, score, self.config.tier(score), tuple(components), _dt(at_ts),
                              self.config.version, (), "current")

    def open_risks(self, state: AccountState) -> list[dict[str, Any]]:
        out = []
        for rtype in RISK_TYPES:
            rec = state.risks.get(rtype)
            if rec is None:
                continue
            out.append({"risk_id": risk_id(state.account_id, rtype, rec[R_OPENED], rec[R_N]), "type": rtype,
                        "severity": SEVERITIES[rec[R_SEV]], "seq": rec[R_SEQ],
                        "summary": summary(rtype, rec[R_EVIDENCE], state.display_name()),
                        "evidence": rec[R_EVIDENCE], "opened_at": _dt(rec[R_OPENED]).isoformat()})
        return out

    def account_brief(self, state: AccountState) -> AccountBrief:
        csm = None
        if state.csm_email or state.csm_slack or state.csm_name:
            csm = CsmRef(email=state.csm_email, slack_user_id=state.csm_slack, name=state.csm_name)
        renewal = None if state.renewal_day is None else date.fromordinal(_EPOCH_ORDINAL + state.renewal_day)
        return AccountBrief(name=state.name, csm=csm, segment=state.segment, arr=state.arr,
                            renewal_date=renewal, crm_url=state.crm_url)


def _bounded(text: str | None, limit: int) -> str | None:
    """Display strings are kept short so that the state stays bounded (e-mail addresses are kept whole)."""
    if text is None or len(text) <= limit:
        return text
    return text[:limit - 1] + "…"


def _evictable_contact(st: AccountState) -> str:
    """The contact to forget when over the cap: a plain contact first, then a long-gone one, oldest first."""
    def rank(item: tuple[str, list[Any]]) -> tuple[int, int, str]:
        cid, c = item
        key = c[C_ROLE] in KEY_ROLES
        tier = 0 if not key else 1 if c[C_STATUS] == 1 else 2
        return (tier, c[C_TS], cid)

    return min(st.contacts.items(), key=rank)[0]

