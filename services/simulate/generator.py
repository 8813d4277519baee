"""The generator: a pure function from seed + parameters to an ordered event stream and its ground truth.

`generate(params)` plans the accounts and the churn stories up front (so the ground truth is known
before a single event is sent), and `Simulation.events()` yields the events of every account merged
in event-time order. Each account's events come from its own seeded random generator, so the same
parameters always give the same events, in the same order, with the same ids.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from services.simulate import catalog
from services.simulate.model import STORIES, GroundTruth, ScriptedChurn, SimEvent, SimulationParams
from services.simulate.population import Account, User, build_account
from services.simulate.rhythm import business_hour, day_factor, month_end, sample_hour
from services.simulate.stories import NEEDS_TEAM, TAIL_DAYS, Story, local_time, make_story

# How far before the live part stories may start: some unfold during the history, some live.
STORIES_BEFORE_LIVE = timedelta(days=7)

Push = Callable[[datetime, str, dict[str, Any]], None]


@dataclass(frozen=True)
class Simulation:
    params: SimulationParams
    accounts: tuple[Account, ...]
    stories: dict[str, Story]          # account_id -> its story (churners only)
    truth: GroundTruth

    def events(self) -> Iterator[SimEvent]:
        """Every event of every account, ordered by event time (ties by id). Restartable."""
        streams = [_AccountTimeline(self.params, a, self.stories.get(a.account_id)).events()
                   for a in self.accounts]
        return heapq.merge(*streams, key=lambda e: (e.at, e.body["id"]))


def generate(params: SimulationParams) -> Simulation:
    taken: set[str] = set()
    accounts = tuple(build_account(params.seed, i, params.account_prefix, params.start, params.end, taken)
                     for i in range(params.accounts))
    stories, evaluate_from = _plan_stories(params, accounts)
    churners = tuple(
        ScriptedChurn(a.account_id, a.name, s.name, s.signal_start, STORIES[s.name], s.detail)
        for a in accounts if (s := stories.get(a.account_id)) is not None
    )
    truth = GroundTruth(
        seed=params.seed, start=params.start, live_from=params.live_from, end=params.end,
        evaluate_from=evaluate_from, accounts=tuple(a.account_id for a in accounts), churners=churners,
        parameters={"accounts": params.accounts, "history_days": params.history_days,
                    "live_days": params.live_days, "churn_rate": params.churn_rate,
                    "account_prefix": params.account_prefix, "baseline_days": params.baseline_days},
    )
    return Simulation(params, accounts, stories, truth)


def _plan_stories(params: SimulationParams, accounts: tuple[Account, ...]
                  ) -> tuple[dict[str, Story], datetime]:
    """Pick the churners and when each story starts (weekday business hours, after the baselines)."""
    rng = random.Random(f"{params.seed}/plan")
    story_from = max(params.start + timedelta(days=params.baseline_days),
                     params.live_from - STORIES_BEFORE_LIVE)
    story_from = min(story_from, params.end - timedelta(hours=12))
    wanted = round(len(accounts) * params.churn_rate)
    if params.churn_rate > 0 and len(accounts) >= 2 * len(STORIES):
        wanted = max(wanted, len(STORIES))  # every story at least once
    names = list(STORIES)
    candidates = list(accounts)
    rng.shuffle(candidates)
    stories: dict[str, Story] = {}
    for i in range(wanted):
        name = names[i % len(names)]
        account = next((a for a in candidates if a.account_id not in stories
                        and (name not in NEEDS_TEAM or len(a.users) >= 5)), None)
        if account is None:
            continue
        latest = max(story_from, params.end - timedelta(days=TAIL_DAYS[name]))
        start = _working_moment(account, story_from + (latest - story_from) * rng.random(), rng)
        if start > params.end - timedelta(hours=1):
            start = params.end - timedelta(hours=1)
        srng = random.Random(f"{params.seed}/story/{account.index}")
        stories[account.account_id] = make_story(name, account, start, srng)
    return stories, story_from


def _working_moment(account: Account, around: datetime, rng: random.Random) -> datetime:
    """The next weekday business moment of the account at or after the day of `around`."""
    day = (around + timedelta(hours=account.tz_hours)).date()
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return local_time(account, day, business_hour(rng))


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class _AccountTimeline:
    """Writes one account's events day by day; future events (ticket resolution...) wait in a heap."""

    def __init__(self, params: SimulationParams, account: Account, story: Story | None) -> None:
        self.params = params
        self.start, self.end = params.start, params.end
        self.account = account
        self.story = story
        self.rng = random.Random(f"{params.seed}/events/{account.index}")
        self.tag = f"sim{params.seed}-{params.end:%Y%m%d%H%M%S}-{account.index:04d}"
        self._heap: list[tuple[datetime, int, str, dict[str, Any]]] = []
        self._pushed = 0
        self._tickets = 0

    def push(self, at: datetime, kind: str, data: dict[str, Any]) -> None:
        self._pushed += 1
        heapq.heappush(self._heap, (at, self._pushed, kind, data))

    def events(self) -> Iterator[SimEvent]:
        a, start, end = self.account, self.start, self.end
        self._facts()
        tz = timedelta(hours=a.tz_hours)
        day, last_day = (start + tz).date(), (end + tz).date()
        n = 0
        while day <= last_day:
            self._day(day)
            horizon = local_time(a, day + timedelta(days=1), 0.0)
            while self._heap and self._heap[0][0] < horizon:
                at, _, kind, data = heapq.heappop(self._heap)
                if start <= at <= end:
                    n += 1
                    yield SimEvent(at, {"id": f"{self.tag}-{n:06d}", "type": kind, "account_id": a.account_id,
                                        "occurred_at": at.isoformat(), "data": data})
            day += timedelta(days=1)

    # -- CRM facts ---------------------------------------------------------------------------------
    def _facts(self) -> None:
        a, start = self.account, self.start
        renewal = (self.story.renewal_date() if self.story else None) or a.renewal_date
        csm_name, csm_email, csm_slack = a.csm
        csm = {"name": csm_name, "email": csm_email, "slack_user_id": csm_slack}
        self.push(start, "account", {"name": a.name, "segment": a.segment, "seats": a.seats, "arr": a.arr,
                                     "renewal_date": renewal.isoformat(), "csm": csm})
        for i, u in enumerate(a.users):
            self.push(start + timedelta(seconds=1 + i), "contact",
                      {"contact_id": u.contact_id, "email": u.email, "name": u.name, "user_id": u.user_id,
                       "role": u.role, "status": "active"})
            if u.leaves_on is not None:
                self.push(u.leaves_on + timedelta(days=self.rng.uniform(1, 5)), "contact",
                          {"contact_id": u.contact_id, "status": "left"})
        if a.seat_change_on is not None and a.seat_change_to is not None:
            self.push(a.seat_change_on, "account",
                      {"seats": a.seat_change_to, "arr": round(a.arr * a.seat_change_to / a.seats, -2)})
        if self.story is not None:
            for at, kind, data in self.story.events:
                self.push(at, kind, data)

    # -- one local day -----------------------------------------------------------------------------
    def _day(self, day: date) -> None:
        a, rng = self.account, self.rng
        day_start = local_time(a, day, 0.0)
        since = (day_start - self.start).total_seconds() / 86400
        expected = day_factor(day, a.week, a.growth_per_90d, since)
        level = expected * rng.lognormvariate(0.0, a.noise_sigma)
        story_level = self.story.level(day_start + timedelta(hours=12)) if self.story else 1.0
        for user in a.users:
            self._usage(user, day, day_start, level * story_level)
        self._tickets_of_day(day, day_start, expected * story_level)
        self._sentiment_of_day(day, day_start, expected * story_level)

    def _active(self, user: User, at: datetime) -> bool:
        if user.leaves_on is not None and at >= user.leaves_on:
            return False
        if self.story is not None:
            return self.story.user_level(user, at) > 0 and self.story.level(at) > 0
        return True

    def _usage(self, user: User, day: date, day_start: datetime, level: float) -> None:
        rng = self.rng
        if user.on_vacation(day):
            return
        person = self.story.user_level(user, day_start + timedelta(hours=12)) if self.story else 1.0
        if rng.random() >= min(0.97, user.engagement * level * person):
            return
        weights = user.weights
        if month_end(day):
            boosted = catalog.MONTH_END_FEATURES
            weights = tuple(w * 3 if f in boosted else w for f, w in zip(user.features, weights, strict=True))
        for _ in range(1 + (rng.random() < 0.1)):
            at = day_start + timedelta(hours=sample_hour(rng), seconds=rng.randrange(3600))
            if not self._active(user, at):
                continue
            for k in range(1 + (rng.random() < 0.2)):
                feature = rng.choices(user.features, weights)[0]
                count = 1 + int(rng.expovariate(0.2))
                self.push(at + timedelta(minutes=7 * k), "usage",
                          {"feature": feature, "user_id": user.user_id, "count": count})

    def _tickets_of_day(self, day: date, day_start: datetime, level: float) -> None:
        a, rng = self.account, self.rng
        requesters = [u for u in a.users if u.role != "sponsor"]
        for _ in range(_poisson(rng, a.tickets_per_week / 5 * level)):
            opened = day_start + timedelta(hours=business_hour(rng))
            who = rng.choice(requesters)
            if not self._active(who, opened):
                continue
            self._tickets += 1
            ticket_id = f"T{a.index:04d}{self._tickets:05d}"
            priority = rng.choices(("low", "normal", "high", "urgent"), (0.25, 0.55, 0.17, 0.03))[0]
            self.push(opened, "ticket", {"ticket_id": ticket_id, "status": "opened", "priority": priority,
                                         "subject": rng.choice(catalog.TICKET_SUBJECTS),
                                         "requester_id": who.user_id})
            if rng.random() < 0.4:
                self.push(opened + timedelta(hours=rng.uniform(1, 20)), "ticket",
                          {"ticket_id": ticket_id, "status": "updated", "priority": priority})
            solved = opened + timedelta(days=rng.uniform(0.2, 5.0))
            self.push(solved, "ticket", {"ticket_id": ticket_id, "status": "solved", "priority": priority})
            if rng.random() < 0.05:
                reopened = solved + timedelta(hours=rng.uniform(2, 48))
                self.push(reopened, "ticket", {"ticket_id": ticket_id, "status": "reopened",
                                               "priority": priority})
                solved = reopened + timedelta(days=rng.uniform(0.5, 3))
                self.push(solved, "ticket", {"ticket_id": ticket_id, "status": "solved",
                                             "priority": priority})
            if rng.random() < 0.5:
                self.push(solved + timedelta(days=3), "ticket", {"ticket_id": ticket_id, "status": "closed",
                                                                 "priority": priority})
            if rng.random() < 0.3:
                # On a healthy account the champion is happy with support; others are sometimes not.
                score = (rng.choices((5, 4, 3), (55, 35, 10))[0] if who.role == "champion"
                         else rng.choices((5, 4, 3, 2, 1), (45, 35, 12, 5, 3))[0])
                self.push(solved + timedelta(hours=rng.uniform(0.5, 30)), "sentiment",
                          {"source": "csat", "score": score, "contact_id": who.contact_id})

    def _sentiment_of_day(self, day: date, day_start: datetime, level: float) -> None:
        a, rng = self.account, self.rng
        if day.weekday() >= 5:
            return
        for user in a.users:
            if rng.random() >= level / 90:
                continue
            at = day_start + timedelta(hours=business_hour(rng))
            if user.leaves_on is not None and at >= user.leaves_on:
                continue
            if user.role in ("champion", "sponsor"):
                score = rng.choices((7, 8, 9, 10), (10, 25, 35, 30))[0]
            else:
                score = rng.choices(range(11), (1, 1, 1, 2, 3, 4, 5, 12, 18, 28, 25))[0]
            data: dict[str, Any] = {"source": "nps", "score": score, "contact_id": user.contact_id}
            if rng.random() < 0.3:
                data["text"] = rng.choice(catalog.POSITIVE_TEXTS if score >= 9 else catalog.NEUTRAL_TEXTS)
            self.push(at, "sentiment", data)
        if rng.random() < (0.04 + 0.002 * len(a.users)) * level:
            who = rng.choice(a.users)
            at = day_start + timedelta(hours=business_hour(rng))
            if self._active(who, at):
                texts = catalog.POSITIVE_TEXTS if rng.random() < 0.6 else catalog.NEUTRAL_TEXTS
                self.push(at, "sentiment", {"source": "conversation", "text": rng.choice(texts),
                                            "contact_id": who.contact_id})
