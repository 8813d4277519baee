"""The sparse, purchase-like mode of `churnsignal simulate`: accounts active only every 2 to 12 weeks.

Think of a monthly billing run, biweekly or monthly reporting, planning every couple of months, repeat
purchases: an account comes back for a *visit* (one or two people, one to five usage events each within a
few hours, now and then a follow-up on the next working day), then nothing for weeks.

Rhythm, per account. The usual gap is drawn log-uniform within the configured range (14 .. 84 days by
default). A share of the accounts is periodic: a weekly cadence (every 2, 3 .. 12 weeks from its first
visit) or, when the usual gap is about a month, the same day of every month; each visit lands up to a
few days off the cadence. The other accounts are irregular: gamma-distributed gaps whose mean is the
usual gap and whose shape lies between 1 (memoryless) and 8 (fairly regular), kept within 2 days .. 3x
the usual gap. A visit that falls on a weekend mostly moves to the nearest working day. Some accounts are
customers when the timeline begins, the others sign up during it (their first visit is their sign-up
day), so accounts have different ages.

Pauses are not lapses: any gap may (`pause_rate`) skip a visit or hold a two to four week break, after
which the account resumes (a periodic one on its cadence).

Lapse: after each visit an account stops for good with probability `1 - exp(-h * usual gap)`, `h` the
constant hazard in time for which an active account lapses within a year with probability `lapse_rate`;
so whether an account lapses does not depend on its rhythm. A share (`slowdown_share`) of the lapsing
accounts space out their last two or three visits first (gaps 1.5x, 2x, 2.5x).

Outcomes, the way a business records lapse: a lapsed account is *declared* churned `declare_after`
(180 days by default) after its last activity. The generator then emits an account event with
`lifecycle = "churned"` and `lifecycle_at` = last activity + declare_after (its `occurred_at` the same),
when that moment lies within the timeline. No gap of an account that did not lapse comes within 7 days
of `declare_after`. Hence, with the default, "churned within a 180-day horizon after a cut" means
"active in the 180 days before the cut and never again". The ground truth holds every account's rhythm,
pauses, last activity and declaration (`GroundTruth.sparse`); `outcome_rows` gives `account_id,churned_at`.

Everything comes from generators seeded by the seed, the account and the visit: the same parameters give
the same events, ids and truth.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from services.simulate import catalog
from services.simulate.model import (
    PAUSE_MARGIN_DAYS,
    GroundTruth,
    SimEvent,
    SparseAccountTruth,
    SparseParams,
)
from services.simulate.population import TIMEZONES, _company_name, _slug

DAY = timedelta(days=1)
MONTH_DAYS = 30.44
FOLLOW_UP_CHANCE = 0.12      # a visit goes on the next working day
WEEKEND_MOVE_CHANCE = 0.85   # a visit falling on a weekend moves to the nearest working day
SLOWDOWN_STEP = 0.5          # the last gaps of a slowing lapser: 1.5x, 2x, 2.5x the usual

# (local time, user index or -1, feature)
Usage = tuple[datetime, int, str]


@dataclass(frozen=True)
class Person:
    user_id: str
    contact_id: str
    name: str
    email: str


@dataclass(frozen=True)
class Visit:
    number: int              # 1 for the first visit within the timeline
    day: date                # local day
    follow_up: date | None   # the next working day, when the visit goes on


@dataclass(frozen=True)
class Habits:
    """What an account's visits look like (everything `visit_usage` needs besides the visit)."""

    seed: int
    index: int
    tz_hours: float
    people: int
    not_before: datetime              # its first visit comes after this (the start, or its sign-up)
    features: tuple[str, ...]
    weights: tuple[float, ...]


@dataclass(frozen=True)
class SparseAccount:
    index: int
    account_id: str
    name: str
    segment: str
    arr: float
    csm: tuple[str, str, str]
    people: tuple[Person, ...]
    purpose: str
    first_seen: datetime
    habits: Habits
    visits: tuple[Visit, ...]          # the visits planned within the timeline (the last may cross its end)
    truth: SparseAccountTruth


def visit_usage(habits: Habits, visit: Visit) -> list[Usage]:
    """The usage events of a visit (time, person index, feature), from the visit's own generator."""
    rng = random.Random(f"{habits.seed}/sparse/visit/{habits.index}/{visit.number}")
    people, features, weights = habits.people, habits.features, habits.weights
    at = _local(habits.tz_hours, visit.day, rng.uniform(8.0, 16.5))
    if visit.number == 1 and at <= habits.not_before:
        at = habits.not_before + timedelta(minutes=rng.uniform(5, 90))
    primary = 0 if people == 1 or rng.random() < 0.7 else rng.randrange(1, people)
    who = [primary]
    if people >= 2 and rng.random() < 0.35:
        who.append(rng.choice([i for i in range(people) if i != primary]))
    out: list[Usage] = []
    for k, person in enumerate(who):
        t = at + (timedelta(minutes=rng.uniform(10, 180)) if k else timedelta(0))
        for _ in range(rng.randint(1, 5)):
            t += timedelta(minutes=rng.uniform(1, 25))
            out.append((t, person, rng.choices(features, weights)[0]))
    if visit.follow_up is not None:
        t = _local(habits.tz_hours, visit.follow_up, rng.uniform(8.0, 16.5))
        for _ in range(rng.randint(1, 3)):
            t += timedelta(minutes=rng.uniform(1, 25))
            out.append((t, primary, rng.choices(features, weights)[0]))
    out.sort()
    return out


def _local(tz_hours: float, day: date, hours: float) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(hours=hours - tz_hours)


def _next_working_day(day: date) -> date:
    day += DAY
    while day.weekday() >= 5:
        day += DAY
    return day


def _add_months(day: date, months: int, dom: int) -> date:
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return date(year, month, min(dom, 28))


def hazard_per_day(lapse_rate: float) -> float:
    """The constant hazard for which an active account lapses within 365 days with `lapse_rate`."""
    return -math.log(1.0 - lapse_rate) / 365.0


class _Planner:
    """Plans one account: who it is, its rhythm, its visits, whether it lapses; its events on demand."""

    def __init__(self, params: SparseParams, index: int, taken: set[str]) -> None:
        self.params = params
        self.index = index
        self.rng = rng = random.Random(f"{params.seed}/sparse/account/{index}")
        segments = catalog.SPARSE_SEGMENTS
        self.segment = rng.choices(list(segments), [s[0] for s in segments.values()])[0]
        lo, hi = segments[self.segment][1]
        self.arr = round(lo * (hi / lo) ** rng.random(), -2)
        self.name = _company_name(rng, taken)
        domain = f"{_slug(self.name)}.example"
        self.account_id = f"{params.account_prefix}{index:04d}"
        self.csm = catalog.CSMS[index % len(catalog.CSMS)]
        self.tz = rng.choices([t for t, _ in TIMEZONES], [w for _, w in TIMEZONES])[0]
        people: list[Person] = []
        seen: set[tuple[str, str]] = set()
        for i in range(rng.choices((1, 2, 3, 4), (30, 40, 20, 10))[0]):
            first, last = rng.choice(catalog.FIRST_NAMES), rng.choice(catalog.LAST_NAMES)
            while (first, last) in seen:
                first, last = rng.choice(catalog.FIRST_NAMES), rng.choice(catalog.LAST_NAMES)
            seen.add((first, last))
            people.append(Person(f"{self.account_id}-u{i:03d}", f"{self.account_id}-c{i:03d}", f"{first} {last}",
                                 f"{_slug(first)}.{_slug(last)}@{domain}"))
        self.people = tuple(people)
        # -- rhythm
        usual = params.gap_min_days * (params.gap_max_days / params.gap_min_days) ** rng.random()
        self.periodic = rng.random() < params.periodic_share
        self.monthly = self.periodic and 26 <= usual <= 35
        self.shape: float | None = None
        self.jitter: int | None = None
        if self.periodic:
            self.jitter = rng.randint(1, 4)
            weeks = 7 * round(usual / 7)
            if self.monthly:
                usual = MONTH_DAYS
            else:
                usual = float(weeks if params.gap_min_days <= weeks <= params.gap_max_days else round(usual))
        else:
            self.shape = math.exp(rng.uniform(0.0, math.log(8.0)))
        self.usual = usual
        if self.monthly:
            self.purpose = rng.choice(("billing_run", "reporting"))
        elif self.periodic:
            self.purpose = "reporting" if usual < 42 or rng.random() < 0.5 else "planning"
        else:
            self.purpose = "repeat_purchase" if rng.random() < 0.7 else "planning"
        # -- when it starts
        start, end = params.start, params.end
        if rng.random() < params.existing_share:
            self.first_seen = start
            day = (start + timedelta(hours=self.tz)).date() + DAY * rng.randint(0, int(usual))
            while day.weekday() >= 5:
                day += DAY
            self.first_day = day
            self.not_before = start
        else:
            span_days = (end - start).total_seconds() / 86400
            day = (start + timedelta(days=rng.uniform(0.0, max(0.0, span_days - 7)), hours=self.tz)).date()
            while day.weekday() >= 5:
                day += DAY
            self.first_seen = max(start, _local(self.tz, day, rng.uniform(8.0, 16.0)))
            self.first_day = day
            self.not_before = self.first_seen
        # -- lapse: the number of visits before it stops for good (None: never), decided up front
        p_lapse = 1.0 - math.exp(-hazard_per_day(params.lapse_rate) * usual)
        self.lapse_after: int | None = None
        if p_lapse > 0:
            self.lapse_after = 1 + int(math.log(1.0 - rng.random()) / math.log(1.0 - p_lapse))
        self.slows = rng.random() < params.slowdown_share
        self.slow_visits = rng.randint(2, 3)
        features = catalog.SPARSE_PURPOSES[self.purpose]
        self.habits = Habits(params.seed, index, self.tz, len(self.people), self.not_before,
                             tuple(f for f, _ in features), tuple(w for _, w in features))

    # -- the schedule ------------------------------------------------------------------------------------
    def _gamma_gap(self) -> float:
        assert self.shape is not None
        rng, usual = self.rng, self.usual
        for _ in range(50):
            gap = rng.gammavariate(self.shape, usual / self.shape)
            if 2.0 <= gap <= 3.0 * usual:
                return gap
        return usual

    def _slot_day(self, slot: int) -> date:
        if self.monthly:
            return _add_months(self.first_day, slot, self.first_day.day)
        return self.first_day + DAY * round(slot * self.usual)

    def plan(self) -> SparseAccount:
        params, rng = self.params, self.rng
        cap = params.declare_after_days - PAUSE_MARGIN_DAYS
        last_day = (params.end + timedelta(hours=self.tz)).date()
        visits: list[Visit] = []
        paused: list[int] = []
        stretched = 0
        slot = 0
        prev_active: date | None = None
        prev_day: date | None = None
        n = 0
        while True:
            n += 1
            pause = False
            if prev_active is None or prev_day is None:
                day = self.first_day
            else:
                slowing = (self.slows and self.lapse_after is not None
                           and n > max(1, self.lapse_after - self.slow_visits) and n <= self.lapse_after)
                pause = rng.random() < params.pause_rate
                if self.periodic and not slowing and not stretched:
                    skip = 0
                    if pause:
                        skip = 1 if rng.random() < 0.5 else math.ceil(rng.uniform(14.0, 28.0) / self.usual)
                    slot += 1 + skip
                    assert self.jitter is not None
                    day = self._slot_day(slot) + DAY * rng.randint(-self.jitter, self.jitter)
                else:
                    gap = self._gamma_gap() if self.shape is not None else self.usual
                    if self.jitter is not None:
                        gap += rng.randint(-self.jitter, self.jitter)
                    if pause:
                        gap += self._gamma_gap() if (self.shape is not None and rng.random() < 0.5) \
                            else rng.uniform(14.0, 28.0)
                    if slowing:
                        assert self.lapse_after is not None
                        stretched += 1
                        gap *= 1.0 + SLOWDOWN_STEP * (n - (self.lapse_after - self.slow_visits))
                    day = prev_day + DAY * round(gap)
                if day.weekday() >= 5 and rng.random() < WEEKEND_MOVE_CHANCE:
                    day += DAY * (7 - day.weekday()) if rng.random() < 0.6 else -DAY * (day.weekday() - 4)
                day = min(max(day, prev_active + 2 * DAY), prev_active + DAY * int(cap))
            if day > last_day:
                break
            follow = _next_working_day(day) if rng.random() < FOLLOW_UP_CHANCE else None
            visits.append(Visit(n, day, follow))
            if pause:
                paused.append(n)
            prev_day, prev_active = day, follow or day
            if n == self.lapse_after:
                break
        return self._account(visits, paused, stretched)

    def _account(self, visits: list[Visit], paused: list[int], stretched: int) -> SparseAccount:
        params = self.params
        end = params.end
        usage = {v.number: visit_usage(self.habits, v) for v in visits}
        seen = [v for v in visits if usage[v.number][0][0] <= end]
        last_activity = max((t for v in seen for t, _, _ in usage[v.number] if t <= end), default=None)
        # Lapsed: it stopped for good, and its whole last visit lies within the timeline.
        lapsed = (self.lapse_after is not None and len(visits) == self.lapse_after
                  and usage[visits[-1].number][-1][0] <= end)
        declared = last_activity + timedelta(days=params.declare_after_days) if lapsed and last_activity else None
        pauses = tuple((usage[n - 1][-1][0], usage[n][0][0]) for n in paused
                       if usage[n - 1][-1][0] <= end and usage[n][0][0] <= end)
        truth = SparseAccountTruth(
            account_id=self.account_id, account_name=self.name, purpose=self.purpose, first_seen=self.first_seen,
            usual_gap_days=round(self.usual, 2), regularity="periodic" if self.periodic else "irregular",
            gamma_shape=None if self.shape is None else round(self.shape, 3), jitter_days=self.jitter,
            visits=len(seen), last_activity=last_activity, lapsed=lapsed,
            slowed_down=lapsed and stretched > 0, declared_at=declared,
            churned_at=declared if declared is not None and declared <= end else None, pauses=pauses,
        )
        return SparseAccount(self.index, self.account_id, self.name, self.segment, self.arr, self.csm,
                             self.people, self.purpose, self.first_seen, self.habits, tuple(visits), truth)


@dataclass(frozen=True)
class SparseSimulation:
    params: SparseParams
    accounts: tuple[SparseAccount, ...]
    truth: GroundTruth

    def events(self) -> Iterator[SimEvent]:
        """Every event of every account, ordered by event time (ties by id). Restartable."""
        streams = [_account_events(self.params, a) for a in self.accounts]
        return heapq.merge(*streams, key=lambda e: (e.at, e.body["id"]))

    def outcome_rows(self) -> list[tuple[str, datetime | None]]:
        """(account_id, churned_at) for every account: the declared churn within the timeline, else None."""
        return [(a.account_id, a.truth.churned_at) for a in self.accounts]


def generate_sparse(params: SparseParams) -> SparseSimulation:
    taken: set[str] = set()
    accounts = tuple(_Planner(params, i, taken).plan() for i in range(params.accounts))
    truth = GroundTruth(
        seed=params.seed, start=params.start, live_from=params.live_from, end=params.end,
        evaluate_from=params.start, accounts=tuple(a.account_id for a in accounts), churners=(),
        parameters={"mode": "sparse", "accounts": params.accounts, "history_days": params.history_days,
                    "live_days": params.live_days, "account_prefix": params.account_prefix,
                    "gap_min_days": params.gap_min_days, "gap_max_days": params.gap_max_days,
                    "periodic_share": params.periodic_share, "lapse_rate": params.lapse_rate,
                    "lapse_hazard_per_day": hazard_per_day(params.lapse_rate),
                    "slowdown_share": params.slowdown_share, "pause_rate": params.pause_rate,
                    "declare_after_days": params.declare_after_days, "existing_share": params.existing_share},
        mode="sparse", sparse=tuple(a.truth for a in accounts),
    )
    return SparseSimulation(params, accounts, truth)


def _account_events(params: SparseParams, account: SparseAccount) -> Iterator[SimEvent]:
    start, end = params.start, params.end
    csm_name, csm_email, csm_slack = account.csm
    raw: list[tuple[datetime, int, str, dict[str, Any]]] = [
        (account.first_seen, 0, "account", {"name": account.name, "segment": account.segment,
                                            "seats": len(account.people), "arr": account.arr,
                                            "csm": {"name": csm_name, "email": csm_email,
                                                    "slack_user_id": csm_slack}}),
    ]
    for i, p in enumerate(account.people):
        raw.append((account.first_seen + timedelta(seconds=1 + i), len(raw), "contact",
                    {"contact_id": p.contact_id, "email": p.email, "name": p.name, "user_id": p.user_id,
                     "role": "admin" if i == 0 else "user", "status": "active"}))
    for visit in account.visits:
        for at, person, feature in visit_usage(account.habits, visit):
            raw.append((at, len(raw), "usage", {"feature": feature, "user_id": account.people[person].user_id}))
    churned_at = account.truth.churned_at
    if churned_at is not None:
        raw.append((churned_at, len(raw), "account", {"lifecycle": "churned",
                                                      "lifecycle_at": churned_at.isoformat()}))
    raw.sort(key=lambda r: (r[0], r[1]))
    tag = f"sim{params.seed}-sparse-{end:%Y%m%d%H%M%S}-{account.index:04d}"
    n = 0
    for at, _, kind, data in raw:
        if start <= at <= end:
            n += 1
            yield SimEvent(at, {"id": f"{tag}-{n:06d}", "type": kind, "account_id": account.account_id,
                                "occurred_at": at.isoformat(), "data": data})
