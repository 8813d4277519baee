"""Scripted churn stories: how an account that was healthy starts to go wrong.

A story changes the account's behaviour from its signal start on (usage level, a person's usage,
ticket rate) and may add events of its own (a contact marked as left, a ticket storm, a detractor
NPS answer). Everything is decided from the story's own random generator, so it is reproducible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from services.simulate import catalog
from services.simulate.population import Account, User
from services.simulate.rhythm import business_hour

# (event time, type, data)
StoryEvent = tuple[datetime, str, dict[str, Any]]

# Days of event time a story needs after its start to show fully (used to place stories in the timeline).
TAIL_DAYS = {"champion_left": 8.0, "usage_fade": 14.0, "ticket_storm": 4.0, "detractor_nps": 2.0,
             "renewal_at_risk": 16.0, "champion_inactive": 14.0}
# Stories about a champion need an account where the champion is not the only user.
NEEDS_TEAM = {"champion_left", "champion_inactive"}


def local_time(account: Account, day: date, hours: float) -> datetime:
    """`hours` after local midnight of `day` in the account's time zone, as an aware UTC datetime."""
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return midnight + timedelta(hours=hours - account.tz_hours)


@dataclass
class Story:
    name: str
    account: Account
    signal_start: datetime
    detail: str = ""
    events: list[StoryEvent] = field(default_factory=list)

    def level(self, at: datetime) -> float:
        """Multiplier on the whole account's activity at event time `at`."""
        return 1.0

    def user_level(self, user: User, at: datetime) -> float:
        """Multiplier on one person's usage (0 means they stopped)."""
        return 1.0

    def renewal_date(self) -> date | None:
        """A renewal date the story needs, if any."""
        return None


class ChampionLeft(Story):
    def __init__(self, account: Account, start: datetime, rng: random.Random) -> None:
        super().__init__("champion_left", account, start)
        champ = account.champion
        self.champion = champ
        lag_days = rng.uniform(1.0, 4.0)
        marked = local_time(account, (start + timedelta(days=lag_days)).date(), business_hour(rng))
        marked = max(marked, start + timedelta(hours=1))
        self.events.append((marked, "contact", {"contact_id": champ.contact_id, "status": "left",
                                                "role": "champion", "user_id": champ.user_id}))
        self.detail = (f"champion {champ.name} stops using the product; the CRM marks them as left "
                       f"{(marked - start).total_seconds() / 86400:.1f} days later")

    def level(self, at: datetime) -> float:
        # The team loses momentum without its champion.
        if at < self.signal_start:
            return 1.0
        return max(0.75, 1.0 - 0.25 * (at - self.signal_start).days / 21)

    def user_level(self, user: User, at: datetime) -> float:
        return 0.0 if user is self.champion and at >= self.signal_start else 1.0


class ChampionInactive(Story):
    def __init__(self, account: Account, start: datetime, rng: random.Random) -> None:
        super().__init__("champion_inactive", account, start)
        self.champion = account.champion
        self.detail = f"champion {self.champion.name} stops using the product while the team carries on"

    def user_level(self, user: User, at: datetime) -> float:
        return 0.0 if user is self.champion and at >= self.signal_start else 1.0


class UsageFade(Story):
    def __init__(self, account: Account, start: datetime, rng: random.Random) -> None:
        super().__init__("usage_fade", account, start)
        self.fade = timedelta(days=rng.uniform(5.0, 9.0))
        self.detail = f"usage fades to nothing over {self.fade.days} days, then the account goes silent"

    def level(self, at: datetime) -> float:
        if at < self.signal_start:
            return 1.0
        return max(0.0, 1.0 - (at - self.signal_start) / self.fade)


class TicketStorm(Story):
    def __init__(self, account: Account, start: datetime, rng: random.Random) -> None:
        super().__init__("ticket_storm", account, start)
        n = rng.randint(7, 14)
        span_h = rng.uniform(24, 72)
        requesters = [u for u in account.users if u.role != "sponsor"]
        for i in range(n):
            opened = start + timedelta(hours=span_h * (i / n) ** 1.3 + rng.uniform(0, 1))
            ticket_id = f"T{account.index:04d}S{i:02d}"
            who = rng.choice(requesters)
            priority = rng.choices(("normal", "high", "urgent"), (0.3, 0.45, 0.25))[0]
            self.events.append((opened, "ticket", {"ticket_id": ticket_id, "status": "opened",
                                                   "priority": priority,
                                                   "subject": rng.choice(catalog.STORM_SUBJECTS),
                                                   "requester_id": who.user_id}))
            solved = opened + timedelta(days=rng.uniform(2, 6))
            self.events.append((solved, "ticket", {"ticket_id": ticket_id, "status": "solved",
                                                   "priority": priority}))
            if rng.random() < 0.25:
                self.events.append((solved + timedelta(hours=rng.uniform(2, 30)), "ticket",
                                    {"ticket_id": ticket_id, "status": "reopened", "priority": priority}))
        self.detail = f"{n} tickets opened within {span_h / 24:.1f} days, mostly high or urgent"

    def level(self, at: datetime) -> float:
        return 0.9 if at >= self.signal_start else 1.0


class DetractorNps(Story):
    def __init__(self, account: Account, start: datetime, rng: random.Random) -> None:
        super().__init__("detractor_nps", account, start)
        sponsor = account.sponsor
        score = rng.randint(0, 3)
        self.events.append((start, "sentiment", {"source": "nps", "score": score,
                                                 "text": rng.choice(catalog.NEGATIVE_TEXTS),
                                                 "contact_id": sponsor.contact_id}))
        self.detail = f"sponsor {sponsor.name} answers the NPS survey with {score}"

    def level(self, at: datetime) -> float:
        return 0.9 if at >= self.signal_start else 1.0


class RenewalAtRisk(Story):
    """The renewal is weeks away and the account sours: usage sinks, tickets linger, people complain."""

    def __init__(self, account: Account, start: datetime, rng: random.Random) -> None:
        super().__init__("renewal_at_risk", account, start)
        self.renewal = (start + timedelta(days=rng.uniform(35, 70))).date()
        self.floor = rng.uniform(0.3, 0.4)
        admin = (account.by_role("admin") or account.users)[0]
        users = [u for u in account.users if u.role == "user"] or account.users
        for i in range(rng.randint(3, 4)):
            opened = start + timedelta(days=rng.uniform(0.5, 9))
            ticket_id = f"T{account.index:04d}R{i:02d}"
            self.events.append((opened, "ticket", {"ticket_id": ticket_id, "status": "opened",
                                                   "priority": rng.choice(("normal", "high")),
                                                   "subject": rng.choice(catalog.STORM_SUBJECTS),
                                                   "requester_id": rng.choice(users).user_id}))
            self.events.append((opened + timedelta(days=rng.uniform(4, 9)), "ticket",
                                {"ticket_id": ticket_id, "status": "solved"}))
        self.events.append((start + timedelta(days=rng.uniform(1, 3)), "sentiment",
                            {"source": "conversation", "text": catalog.NEGATIVE_TEXTS[1],
                             "contact_id": admin.contact_id}))
        self.events.append((start + timedelta(days=rng.uniform(2, 5)), "sentiment",
                            {"source": "csat", "score": rng.randint(1, 2),
                             "contact_id": rng.choice(users).contact_id}))
        self.events.append((start + timedelta(days=rng.uniform(5, 8)), "sentiment",
                            {"source": "conversation", "text": catalog.NEGATIVE_TEXTS[2],
                             "contact_id": rng.choice(users).contact_id}))
        self.detail = (f"renewal on {self.renewal.isoformat()}; usage sinks to {self.floor:.0%} of normal "
                       "within a week, tickets linger and the admin says they are evaluating alternatives")

    def level(self, at: datetime) -> float:
        if at < self.signal_start:
            return 1.0
        progress = min(1.0, (at - self.signal_start) / timedelta(days=6))
        return 1.0 - (1.0 - self.floor) * progress

    def renewal_date(self) -> date | None:
        return self.renewal


STORY_TYPES: dict[str, type[Story]] = {
    "champion_left": ChampionLeft,
    "usage_fade": UsageFade,
    "ticket_storm": TicketStorm,
    "detractor_nps": DetractorNps,
    "renewal_at_risk": RenewalAtRisk,
    "champion_inactive": ChampionInactive,
}


def make_story(name: str, account: Account, start: datetime, rng: random.Random) -> Story:
    return STORY_TYPES[name](account, start, rng)  # type: ignore[call-arg]
