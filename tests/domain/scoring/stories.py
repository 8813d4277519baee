"""Account stories as data: raw events (docs/events.md JSON) in arrival order, and the risks each must raise.

Every story covers the same ten weeks of event time (`START`..`END`) so that, merged into one stream, the
accounts that keep sending events move the clock forward for the ones that fall silent. A story names
the risk types it must raise, each opened inside a window of event time (after the incident, before a
deadline), or none at all. The events are generated from fixed seeds: the same story every run.

`run_story_pure(engine, stories, lateness)` drives a `PartitionClock` and the engine over the merged
stream exactly like the scoring service does per partition, so the same stories can be replayed through
Kafka and PostgreSQL and compared with `story_problems`.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from functools import cached_property
from typing import Any

from services.scoring.domain import (
    AccountState,
    HealthSnapshot,
    Outcome,
    PartitionClock,
    RiskTransition,
    ScoringEngine,
)
from shared.events import Event, validate_event

START = datetime(2026, 6, 1, tzinfo=UTC)        # a Monday
WEEKS = 10
END = START + timedelta(weeks=WEEKS)
INCIDENT_DAY = 44                               # most incidents happen in week 7, after 6 weeks of history


def at_day(day: float, hour: float = 0.0) -> datetime:
    return START + timedelta(days=day, hours=hour)


@dataclass(frozen=True)
class Expect:
    """A risk type that must open after `after` and no later than `by` (event time).

    Risks caused by an event must open within an hour of it (the event time of a risk is the account's
    clock, which may be ahead of the event when events arrive out of order within the lateness).
    """

    type: str
    after: datetime
    by: datetime
    severity: str | None = None
    by_clock: bool = False          # opened by the clock (no event of the account caused it)


@dataclass(frozen=True)
class Story:
    name: str
    account_id: str
    account_name: str
    description: str
    events: list[dict[str, Any]]
    expect: tuple[Expect, ...] = ()
    resolved_by_end: tuple[str, ...] = ()   # risk types that must have been resolved again by the end

    @property
    def expected_types(self) -> set[str]:
        return {e.type for e in self.expect}

    @cached_property
    def parsed(self) -> list[Event]:
        """The events validated (once per story object)."""
        return parse(self.events)


# -- building events ---------------------------------------------------------------------------------------

_FEATURES = ("login", "dashboard.view", "search", "report.view", "task.update", "comment.add",
             "project.create", "file.upload", "report.export", "integration.sync", "automation.run",
             "api.call", "calendar.view", "admin.settings")


class _Builder:
    def __init__(self, account_id: str, seed: int, offset: timezone = UTC) -> None:
        self.account_id = account_id
        self.rng = random.Random(seed)
        self.offset = offset
        self.events: list[tuple[datetime, int, dict[str, Any]]] = []

    def add(self, when: datetime, kind: str, data: dict[str, Any]) -> None:
        n = len(self.events) + 1
        self.events.append((when, n, {
            "id": f"{self.account_id}:{n:05d}", "type": kind, "account_id": self.account_id,
            "occurred_at": when.astimezone(self.offset).isoformat(), "data": data}))

    def account(self, when: datetime, **data: Any) -> None:
        self.add(when, "account", data)

    def contact(self, when: datetime, contact_id: str, **data: Any) -> None:
        self.add(when, "contact", {"contact_id": contact_id, **data})

    def ticket(self, when: datetime, ticket_id: str, status: str, priority: str | None = None,
               subject: str | None = None) -> None:
        data: dict[str, Any] = {"ticket_id": ticket_id, "status": status}
        if priority:
            data["priority"] = priority
        if subject:
            data["subject"] = subject
        self.add(when, "ticket", data)

    def sentiment(self, when: datetime, source: str, score: float | None = None, text: str | None = None,
                  contact_id: str | None = None) -> None:
        data: dict[str, Any] = {"source": source}
        if score is not None:
            data["score"] = score
        if text is not None:
            data["text"] = text
        if contact_id is not None:
            data["contact_id"] = contact_id
        self.add(when, "sentiment", data)

    def usage(self, when: datetime, feature: str, user_id: str | None, count: int = 1) -> None:
        data: dict[str, Any] = {"feature": feature, "count": count}
        if user_id is not None:
            data["user_id"] = user_id
        self.add(when, "usage", data)

    def usage_day(self, day: int, n_events: int, users: Sequence[str],
                  features: Sequence[str] = _FEATURES[:6], max_count: int = 3,
                  hours: tuple[float, float] = (8.0, 18.0)) -> None:
        """`n_events` usage events spread over the working hours of `day`."""
        weights = [1.0 / (i + 1) ** 0.5 for i in range(len(features))]
        for _ in range(n_events):
            when = at_day(day, self.rng.uniform(*hours))
            feature = self.rng.choices(features, weights)[0]
            self.usage(when, feature, self.rng.choice(users), self.rng.randint(1, max_count))

    def person_uses(self, day: int, user_id: str, n: int = 2,
                    features: Sequence[str] = _FEATURES[:4]) -> None:
        for _ in range(n):
            self.usage(at_day(day, self.rng.uniform(8.0, 18.0)), self.rng.choice(features), user_id)

    def weekly_tickets(self, per_week: float, first_day: int = 2, last_day: int = WEEKS * 7,
                       prefix: str = "T", urgent_share: float = 0.0) -> None:
        """A steady trickle of tickets (about `per_week`), each solved one to three days later."""
        n = 0
        for day in range(first_day, last_day):
            if day % 7 >= 5:
                continue
            for _ in range(_poisson(self.rng, per_week / 5.0)):
                n += 1
                tid = f"{prefix}-{n}"
                opened = at_day(day, self.rng.uniform(9.0, 17.0))
                prio = "urgent" if self.rng.random() < urgent_share else "normal"
                self.ticket(opened, tid, "opened", prio, "Question about " + self.rng.choice(_FEATURES))
                self.ticket(opened + timedelta(days=self.rng.randint(1, 3)), tid, "solved")

    def done(self) -> list[dict[str, Any]]:
        """The events in the order they arrive (event time, then creation order)."""
        return [raw for _, _, raw in sorted(self.events, key=lambda e: (e[0], e[1]))]


def _poisson(rng: random.Random, lam: float) -> int:
    k, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p < limit:
            return k
        k += 1


def _volume(rng: random.Random, mean: float) -> int:
    return max(0, round(rng.gauss(mean, math.sqrt(mean) if mean > 0 else 0)))


def _setup(b: _Builder, name: str, csm: int, renewal_days: int | None = None, arr: float = 48_000,
           segment: str = "mid-market") -> None:
    csms = (("Maya Patel", "maya.patel@example.com", "U01MAYAPATEL"),
            ("Jonas Berg", "jonas.berg@example.com", "U02JONASBERG"),
            ("Chloe Martin", "chloe.martin@example.com", "U03CHLOEMRTN"))
    cname, email, slack = csms[csm % len(csms)]
    data: dict[str, Any] = {"name": name, "csm": {"name": cname, "email": email, "slack_user_id": slack},
                            "arr": arr, "seats": 25, "segment": segment}
    if renewal_days is not None:
        data["renewal_date"] = (START + timedelta(days=renewal_days)).date().isoformat()
    b.account(at_day(0, 0.5), **data)


def _weekday_volume(day: int, weekday: float, weekend: float) -> float:
    return weekday if day % 7 < 5 else weekend


# -- the stories ---------------------------------------------------------------------------------------------

def champion_leaves() -> Story:
    acc, name = "acme-001", "Acme Corp"
    b = _Builder(acc, seed=11)
    _setup(b, name, 0, renewal_days=300)
    users = [f"acme-u{i}" for i in range(1, 7)]
    b.contact(at_day(0, 1), "c-dana", name="Dana Smith", email="dana@acme.example", user_id="acme-u1",
              role="champion", status="active")
    b.contact(at_day(0, 1), "c-omar", name="Omar Haddad", user_id="acme-u2", role="sponsor", status="active")
    left = INCIDENT_DAY + 1
    for day in range(WEEKS * 7):
        active = users if day < left else users[1:]
        b.usage_day(day, _volume(b.rng, _weekday_volume(day, 20, 4)), active)
        if day % 7 < 5 and day < left:
            b.person_uses(day, "acme-u1", 2)
        if day % 7 in (1, 3):
            b.person_uses(day, "acme-u2", 1)
    b.weekly_tickets(1.0, prefix="ACME")
    b.sentiment(at_day(20, 10), "nps", 9, contact_id="c-omar")
    b.sentiment(at_day(30, 11), "csat", 5)
    b.contact(at_day(left, 9.5), "c-dana", status="left")
    return Story("champion_leaves", acc, name, "The champion leaves the company; the CRM marks her as left.",
                 b.done(), (Expect("champion_left", at_day(left, 9.5), at_day(left, 10.5), "critical"),))


def champion_goes_quiet() -> Story:
    acc, name = "globex-002", "Globex"
    b = _Builder(acc, seed=22, offset=timezone(timedelta(hours=2)))
    _setup(b, name, 1, renewal_days=250)
    users = [f"globex-u{i}" for i in range(1, 9)]
    b.contact(at_day(0, 1), "c-priya", name="Priya Singh", user_id="globex-u1", role="champion",
              status="active")
    quiet_from = INCIDENT_DAY - 4
    for day in range(WEEKS * 7):
        b.usage_day(day, _volume(b.rng, _weekday_volume(day, 24, 4)), users[1:])
        if day % 7 < 5 and day < quiet_from and b.rng.random() < 0.9:
            b.person_uses(day, "globex-u1", 3)
    b.weekly_tickets(1.0, prefix="GLX")
    b.sentiment(at_day(15, 10), "nps", 8, contact_id="c-priya")
    return Story("champion_goes_quiet", acc, name,
                 "The champion stops using the product while the rest of the team carries on.",
                 b.done(), (Expect("champion_inactive", at_day(quiet_from + 7), at_day(quiet_from + 16),
                                   "high", by_clock=True),))


def usage_fades() -> Story:
    acc, name = "initech-003", "Initech"
    b = _Builder(acc, seed=33)
    _setup(b, name, 2)
    users = [f"initech-u{i}" for i in range(1, 7)]
    b.contact(at_day(0, 1), "c-bill", name="Bill Lumbergh", user_id="initech-u1", role="sponsor",
              status="active")
    fade_from, stop = INCIDENT_DAY - 7, INCIDENT_DAY + 3
    for day in range(stop):
        level = 1.0 if day < fade_from else max(0.1, 1.0 - (day - fade_from + 1) / (stop - fade_from + 1))
        active = users[: max(2, round(6 * level))]
        b.usage_day(day, _volume(b.rng, _weekday_volume(day, 28, 6) * level), active)
        if day % 7 < 5 and b.rng.random() < level:
            b.person_uses(day, "initech-u1", 1)
    return Story("usage_fades", acc, name,
                 "Usage fades over ten days and then stops; no further event comes from the account.",
                 b.done(), (Expect("usage_drop", at_day(fade_from + 3), at_day(stop + 8), "high",
                                   by_clock=True),
                            Expect("health_drop", at_day(fade_from + 3), at_day(stop + 10), "medium",
                                   by_clock=True)))


def ticket_storm() -> Story:
    acc, name = "umbrella-004", "Umbrella Health"
    b = _Builder(acc, seed=44)
    _setup(b, name, 0, renewal_days=200, arr=120_000, segment="enterprise")
    users = [f"umb-u{i}" for i in range(1, 11)]
    b.contact(at_day(0, 1), "c-alice", name="Alice Wong", user_id="umb-u1", role="champion", status="active")
    for day in range(WEEKS * 7):
        b.usage_day(day, _volume(b.rng, _weekday_volume(day, 30, 6)), users)
        if day % 7 < 5:
            b.person_uses(day, "umb-u1", 2)
    b.weekly_tickets(1.0, last_day=INCIDENT_DAY, prefix="UMB")
    subjects = ("Export to PDF fails", "Reports time out", "Cannot log in with SSO",
                "Data missing after sync", "Dashboard blank", "Export fails again", "API returns 500",
                "Invoices wrong", "SSO loop")
    for i, subject in enumerate(subjects):
        opened = at_day(INCIDENT_DAY + i // 5, 9 + (i % 5) * 1.5)
        b.ticket(opened, f"UMB-S{i}", "opened", "urgent" if i % 3 == 0 else "high", subject)
        b.ticket(opened + timedelta(days=3 + i % 4), f"UMB-S{i}", "solved")
    b.weekly_tickets(1.0, first_day=INCIDENT_DAY + 9, prefix="UMB-L")
    return Story("ticket_storm", acc, name,
                 "An account that files about one ticket a week opens nine in two days, several urgent.",
                 b.done(), (Expect("ticket_spike", at_day(INCIDENT_DAY), at_day(INCIDENT_DAY + 1, 12),
                                   "high"),
                            Expect("health_drop", at_day(INCIDENT_DAY), at_day(INCIDENT_DAY + 2),
                                   "medium")),
                 resolved_by_end=("ticket_spike", "health_drop"))


def sponsor_detractor() -> Story:
    acc, name = "hooli-005", "Hooli"
    b = _Builder(acc, seed=55)
    _setup(b, name, 1, renewal_days=220)
    users = [f"hooli-u{i}" for i in range(1, 8)]
    b.contact(at_day(0, 1), "c-gavin", name="Gavin Belson", user_id="hooli-u7", role="sponsor",
              status="active")
    b.contact(at_day(0, 1), "c-jian", name="Jian Yang", user_id="hooli-u1", role="champion", status="active")
    for day in range(WEEKS * 7):
        b.usage_day(day, _volume(b.rng, _weekday_volume(day, 20, 4)), users)
        if day % 7 < 5:
            b.person_uses(day, "hooli-u1", 2)
    b.weekly_tickets(1.0, prefix="HOO")
    for i, day in enumerate(range(5, INCIDENT_DAY, 8)):
        b.sentiment(at_day(day, 14), "nps", 8 + i % 3, contact_id=f"c-user{i}")
    b.sentiment(at_day(INCIDENT_DAY + 2, 16), "nps", 3, contact_id="c-gavin",
                text="Too expensive for what we get, and the roadmap ignores us.")
    return Story("sponsor_detractor", acc, name, "The executive sponsor answers the NPS survey with a 3.",
                 b.done(), (Expect("sentiment_drop", at_day(INCIDENT_DAY + 2, 16),
                                   at_day(INCIDENT_DAY + 2, 17), "high"),))


def renewal_while_yellow() -> Story:
    acc, name = "vandelay-006", "Vandelay Industries"
    b = _Builder(acc, seed=66)
    _setup(b, name, 2)
    users = [f"vdl-u{i}" for i in range(1, 7)]
    b.contact(at_day(0, 1), "c-art", name="Art Vandelay", user_id="vdl-u1", role="champion", status="active")
    for day in range(WEEKS * 7):
        b.usage_day(day, _volume(b.rng, _weekday_volume(day, 18, 3)), users)
        if day % 7 < 5:
            b.person_uses(day, "vdl-u1", 2)
    # A stubborn backlog: urgent problems that stay open (and get updated every week), plus a steady trickle.
    for i, prio in enumerate(("urgent", "urgent", "urgent", "urgent", "high", "high")):
        tid = f"VDL-B{i}"
        b.ticket(at_day(1 + i, 10), tid, "opened", prio, "Latex import keeps failing")
        for week in range(1, WEEKS):
            b.ticket(at_day(1 + i + 7 * week, 11), tid, "updated")
    b.weekly_tickets(3.0, prefix="VDL")
    texts = ("Still waiting on the urgent fix, not happy.", "The import broke again, this is frustrating.",
             "Okay overall, some annoying bugs.")
    for i, day in enumerate(range(3, WEEKS * 7, 6)):
        b.sentiment(at_day(day, 15), "nps", 4 + i % 2, contact_id=f"c-vu{i % 4}")
        b.sentiment(at_day(day + 2, 12), "conversation", text=texts[i % 3])
    renewal_notice = INCIDENT_DAY - 2
    renewal = (at_day(renewal_notice) + timedelta(days=60)).date().isoformat()
    b.account(at_day(renewal_notice, 9), renewal_date=renewal)
    return Story("renewal_while_yellow", acc, name,
                 "A lukewarm account with a stubborn urgent backlog learns its renewal is 60 days away.",
                 b.done(), (Expect("renewal_risk", at_day(renewal_notice, 9), at_day(renewal_notice, 10),
                                   "high"),))


def steady_seasonal() -> Story:
    acc, name = "wayne-101", "Wayne Enterprises"
    b = _Builder(acc, seed=101)
    _setup(b, name, 0, renewal_days=330, arr=250_000, segment="enterprise")
    users = [f"wayne-u{i}" for i in range(1, 16)]
    b.contact(at_day(0, 1), "c-lucius", name="Lucius Fox", user_id="wayne-u1", role="champion",
              status="active")
    holiday = range(28, 35)                          # a quiet holiday week (June 29 - July 5)
    for day in range(WEEKS * 7):
        date = at_day(day)
        month_end = (date + timedelta(days=3)).month != date.month and day % 7 < 5
        volume = _weekday_volume(day, 36, 3) * (1.6 if month_end else 1.0) * (0.5 if day in holiday else 1.0)
        active = users[:9] if day in holiday else users
        b.usage_day(day, _volume(b.rng, volume), active, _FEATURES[:8])
        if day % 7 < 5 and (day not in holiday or day % 7 in (0, 3)):
            b.person_uses(day, "wayne-u1", 2)
    b.weekly_tickets(1.0, prefix="WAY")
    for i, day in enumerate(range(6, WEEKS * 7, 10)):
        b.sentiment(at_day(day, 13), "nps", 8 + i % 3, contact_id=f"c-wu{i}")
    return Story("steady_seasonal", acc, name,
                 "Weekday-heavy usage with a month-end peak and a quiet holiday week: nothing to report.",
                 b.done())


def steady_low_volume() -> Story:
    acc, name = "pied-102", "Pied Piper"
    b = _Builder(acc, seed=102)
    _setup(b, name, 1, renewal_days=400, arr=6_000, segment="smb")
    b.contact(at_day(0, 1), "c-richard", name="Richard Hendricks", user_id="pp-u1", role="champion",
              status="active")
    for week in range(WEEKS):
        days = sorted(b.rng.sample(range(5), b.rng.randint(2, 4)))
        for d in days:
            b.usage(at_day(week * 7 + d, b.rng.uniform(9, 17)), b.rng.choice(_FEATURES[:3]),
                    b.rng.choice(["pp-u1", "pp-u1", "pp-u2"]))
    for i, day in enumerate((9, 30, 51)):
        b.ticket(at_day(day, 11), f"PP-{i}", "opened", "normal", "How do I export?")
        b.ticket(at_day(day + 2, 11), f"PP-{i}", "solved")
    b.sentiment(at_day(33, 12), "csat", 4, contact_id="c-richard")
    return Story("steady_low_volume", acc, name, "A small account using the product a few times a week.",
                 b.done())


def steady_busy() -> Story:
    acc, name = "massive-103", "Massive Dynamic"
    b = _Builder(acc, seed=103)
    _setup(b, name, 2, renewal_days=280, arr=900_000, segment="enterprise")
    users = [f"md-u{i}" for i in range(1, 61)]
    people = (("c-nina", "Nina Sharp", "md-u1", "champion"),
              ("c-walter", "Walter Bishop", "md-u2", "champion"),
              ("c-william", "William Bell", "md-u3", "sponsor"))
    for cid, person, uid, role in people:
        b.contact(at_day(0, 1), cid, name=person, user_id=uid, role=role, status="active")
    for i in range(4, 12):
        b.contact(at_day(0, 2), f"c-md{i}", name=f"User {i}", user_id=f"md-u{i}", role="user",
                  status="active")
    for day in range(WEEKS * 7):
        b.usage_day(day, _volume(b.rng, _weekday_volume(day, 70, 15)), users, _FEATURES, max_count=8,
                    hours=(6.0, 22.0))
        for _, _, uid, _ in people:
            if day % 7 < 5 and b.rng.random() < 0.85:
                b.person_uses(day, uid, 2)
    b.weekly_tickets(4.0, prefix="MD", urgent_share=0.1)
    texts = ("Great support, thanks for the quick fix!", "The new dashboards are really useful.",
             "Export was slow today but the team helped.")
    for i, day in enumerate(range(2, WEEKS * 7, 4)):
        b.sentiment(at_day(day, 12), "nps", (9, 10, 8, 9, 4, 9, 10)[i % 7], contact_id=f"c-md{4 + i % 8}")
        b.sentiment(at_day(day + 1, 15), "conversation", text=texts[i % 3])
    return Story("steady_busy", acc, name, "A large, busy, happy account: many users, tickets and answers.",
                 b.done())


# -- healthy accounts with the everyday episodes a naive detector mistakes for churn -----------------

def _sessions(b: _Builder, day: int, user_id: str, chance: float,
              features: Sequence[str] = _FEATURES[:6]) -> None:
    """A person's day: with `chance`, one or two sessions of heavy-tailed use (as real usage counts are)."""
    if b.rng.random() >= chance:
        return
    for _ in range(1 + (b.rng.random() < 0.2)):
        when = at_day(day, b.rng.uniform(8.0, 18.0))
        b.usage(when, b.rng.choice(features), user_id, 1 + int(b.rng.expovariate(0.2)))


def champion_week_off() -> Story:
    acc, name = "stark-104", "Stark Industries"
    b = _Builder(acc, seed=104)
    _setup(b, name, 0, renewal_days=320)
    users = [f"stark-u{i}" for i in range(1, 7)]
    b.contact(at_day(0, 1), "c-pepper", name="Pepper Potts", user_id="stark-u1", role="champion",
              status="active")
    last_seen, back = INCIDENT_DAY - 6, INCIDENT_DAY + 6       # a Thursday, and the Tuesday after next
    for day in range(WEEKS * 7):
        b.usage_day(day, _volume(b.rng, _weekday_volume(day, 22, 4)), users[1:])
        if day in (last_seen, back) or (day % 7 < 5 and not last_seen < day < back and b.rng.random() < 0.9):
            b.person_uses(day, "stark-u1", 3)
    b.weekly_tickets(0.8, prefix="STK")
    b.sentiment(at_day(12, 10), "nps", 9, contact_id="c-pepper")
    return Story("champion_week_off", acc, name,
                 "The champion takes a long week off: last seen on a Thursday, back on the Tuesday after "
                 "next (eleven silent days spanning two weekends) while the team carries on.", b.done())


def sponsor_checks_in() -> Story:
    acc, name = "wonka-105", "Wonka Industries"
    b = _Builder(acc, seed=105)
    _setup(b, name, 1, renewal_days=290)
    users = [f"wonka-u{i}" for i in range(1, 9)]
    b.contact(at_day(0, 1), "c-charlie", name="Charlie Bucket", user_id="wonka-u1", role="champion",
              status="active")
    b.contact(at_day(0, 1), "c-willy", name="Willy Wonka", user_id="wonka-u8", role="sponsor",
              status="active")
    visits = (2, 9, 12, 19, 23, 30, 33)        # every week or two; then a month without a login
    for day in range(WEEKS * 7):
        b.usage_day(day, _volume(b.rng, _weekday_volume(day, 20, 4)), users[1:7])
        if day % 7 < 5 and b.rng.random() < 0.9:
            b.person_uses(day, "wonka-u1", 2)
        if day in visits:
            b.person_uses(day, "wonka-u8", 1, features=("dashboard.view", "report.view"))
    b.weekly_tickets(0.8, prefix="WNK")
    b.ticket(at_day(50, 10), "WNK-U1", "opened", "urgent", "Invoices export empty")
    b.ticket(at_day(52, 15), "WNK-U1", "solved")
    for i, day in enumerate(range(8, WEEKS * 7, 9)):
        b.sentiment(at_day(day, 14), "nps", 8 + i % 3, contact_id=f"c-wu{i % 5}")
    return Story("sponsor_checks_in", acc, name,
                 "The executive sponsor looks at the dashboards every week or two, then not for a month.",
                 b.done())


def small_team_week_off() -> Story:
    acc, name = "dunder-106", "Dunder Mifflin"
    b = _Builder(acc, seed=106)
    _setup(b, name, 2, renewal_days=260, arr=9_000, segment="smb")
    b.contact(at_day(0, 1), "c-pam", name="Pam Beesly", user_id="dm-u1", role="champion", status="active")
    b.contact(at_day(0, 1), "c-jan", name="Jan Levinson", user_id="dm-u4", role="sponsor", status="active")
    off = range(INCIDENT_DAY - 2, INCIDENT_DAY + 3)    # Monday to Friday of week 7
    people = (("dm-u1", 0.9), ("dm-u2", 0.7), ("dm-u3", 0.5))
    for day in range(WEEKS * 7):
        if day % 7 >= 5:
            continue
        for uid, chance in people:
            if uid in ("dm-u1", "dm-u2") and day in off:
                continue                                # two of the three are on vacation together
            _sessions(b, day, uid, chance)
        if b.rng.random() < 0.1:
            b.person_uses(day, "dm-u4", 1, features=("dashboard.view",))
    b.weekly_tickets(0.4, prefix="DM")
    b.sentiment(at_day(20, 11), "csat", 5, contact_id="c-pam")
    return Story("small_team_week_off", acc, name,
                 "A team of three where two take the same week off: the week's usage falls to a fraction "
                 "of normal, then comes back.", b.done())


def ticket_busy_week() -> Story:
    acc, name = "initrode-107", "Initrode"
    b = _Builder(acc, seed=107)
    _setup(b, name, 0, renewal_days=240)
    users = [f"itr-u{i}" for i in range(1, 8)]
    b.contact(at_day(0, 1), "c-milton", name="Milton Waddams", user_id="itr-u1", role="champion",
              status="active")
    for day in range(WEEKS * 7):
        b.usage_day(day, _volume(b.rng, _weekday_volume(day, 18, 3)), users)
        if day % 7 < 5:
            b.person_uses(day, "itr-u1", 2)
    b.weekly_tickets(0.7, last_day=INCIDENT_DAY - 2, prefix="ITR")
    for i in range(5):                                  # one question a day, all week: chance, not a storm
        opened = at_day(INCIDENT_DAY - 2 + i, 10 + i)
        b.ticket(opened, f"ITR-W{i}", "opened", "normal", "Question about " + _FEATURES[i])
        b.ticket(opened + timedelta(days=1), f"ITR-W{i}", "solved")
    b.weekly_tickets(0.7, first_day=INCIDENT_DAY + 5, prefix="ITR-L")
    return Story("ticket_busy_week", acc, name,
                 "An account that files under a ticket a week files five in one week, one a day.", b.done())


def steady_story(account_id: str, seed: int = 7, name: str | None = None) -> Story:
    """A healthy weekday-heavy account, for any account id (e.g. to keep each partition's clock moving)."""
    b = _Builder(account_id, seed=seed)
    _setup(b, name or account_id, seed, renewal_days=365)
    users = [f"{account_id}-u{i}" for i in range(1, 5)]
    b.contact(at_day(0, 1), f"{account_id}-champ", name="Sam Rivera", user_id=users[0], role="champion",
              status="active")
    for day in range(WEEKS * 7):
        b.usage_day(day, _volume(b.rng, _weekday_volume(day, 12, 3)), users)
        if day % 7 < 5:
            b.person_uses(day, users[0], 1)
    return Story(f"steady:{account_id}", account_id, name or account_id, "A steady, healthy account.",
                 b.done())


def all_stories() -> list[Story]:
    return [champion_leaves(), champion_goes_quiet(), usage_fades(), ticket_storm(), sponsor_detractor(),
            renewal_while_yellow(), steady_seasonal(), steady_low_volume(), steady_busy(),
            champion_week_off(), sponsor_checks_in(), small_team_week_off(), ticket_busy_week()]


# -- driving the pure engine like the service does ----------------------------------------------------------

@dataclass
class StoryRun:
    """Everything the engine produced, per account, in order."""

    transitions: dict[str, list[RiskTransition]] = field(default_factory=dict)
    snapshots: dict[str, list[HealthSnapshot]] = field(default_factory=dict)
    states: dict[str, AccountState] = field(default_factory=dict)
    events: int = 0
    evaluations: int = 0

    def opened(self, account_id: str) -> dict[str, RiskTransition]:
        """The first opening of each risk type for the account."""
        out: dict[str, RiskTransition] = {}
        for t in self.transitions.get(account_id, []):
            if t.transition == "opened":
                out.setdefault(t.type, t)
        return out

    def risk_records(self, account_id: str) -> list[dict[str, Any]]:
        return [t.to_dict() for t in self.transitions.get(account_id, [])]


def parse(raw_events: Iterable[dict[str, Any]]) -> list[Event]:
    out = []
    for raw in raw_events:
        ev = validate_event(raw, check_future=False)
        if not isinstance(ev, Event):
            raise ValueError(f"story event {raw.get('id')} is invalid: {ev}")
        out.append(ev)
    return out


def merged_events(stories: Sequence[Story], *, jitter: timedelta | None = None, seed: int = 0) -> list[Event]:
    """All stories' events in one stream, as one partition would carry them.

    Without `jitter`, the arrival order of each story is kept and stories interleave by event time. With
    `jitter`, each event arrives up to `jitter` after its event time, shuffling the order; with a jitter
    no larger than the allowed lateness no event is ever late for the clock.
    """
    keyed: list[tuple[datetime, int, int, Event]] = []
    rng = random.Random(seed)
    for s_index, story in enumerate(stories):
        latest: datetime | None = None
        for ev in story.parsed:
            latest = ev.occurred_at if latest is None or ev.occurred_at > latest else latest
            arrival = latest
            if jitter is not None:
                arrival = ev.occurred_at + jitter * rng.random() * 0.999
            keyed.append((arrival, s_index, len(keyed), ev))
    keyed.sort(key=lambda k: (k[0], k[1], k[2]))
    return [k[3] for k in keyed]


class Driver:
    """One partition's clock and the engine, fed event by event like the scoring service does it."""

    def __init__(self, engine: ScoringEngine, lateness: timedelta = timedelta(hours=1),
                 run: StoryRun | None = None) -> None:
        self.engine = engine
        self.lateness = lateness
        self.clock = PartitionClock(lateness)
        self.run = run if run is not None else StoryRun()

    def state(self, account_id: str) -> AccountState:
        state = self.run.states.get(account_id)
        if state is None:
            state = self.run.states[account_id] = self.engine.new_state(account_id)
        return state

    def send(self, event: Event) -> Outcome:
        """Apply one event, move the clock, and evaluate every account whose timer came due."""
        outcome = self.engine.apply(self.state(event.account_id), event)
        self.run.events += 1
        self.clock.observe(event.occurred_at)
        self._record(event.account_id, outcome)
        self._drain()
        return outcome

    def advance(self, until: datetime) -> None:
        """Move the watermark to `until`, as an event of some other account at `until + lateness` would."""
        self.clock.observe(until + self.lateness)
        self._drain()

    def _record(self, account_id: str, outcome: Outcome) -> None:
        if outcome.health is not None:
            self.run.snapshots.setdefault(account_id, []).append(outcome.health)
        if outcome.transitions:
            self.run.transitions.setdefault(account_id, []).extend(outcome.transitions)
        self.clock.schedule(account_id, outcome.next_due)

    def _drain(self) -> None:
        for _ in range(100_000):
            due = self.clock.pop_due()
            if not due:
                return
            for at, account_id in due:
                self.run.evaluations += 1
                self._record(account_id, self.engine.evaluate(self.run.states[account_id], at))
        raise RuntimeError("the clock keeps firing: next_due must move forward")


def run_story_pure(engine: ScoringEngine, stories: Sequence[Story], lateness: timedelta = timedelta(hours=1),
                   *, events: Sequence[Event] | None = None) -> StoryRun:
    """Drive a PartitionClock and the engine over the merged stream, as the scoring service does."""
    driver = Driver(engine, lateness)
    for ev in merged_events(stories) if events is None else events:
        driver.send(ev)
    return driver.run


def event(kind: str, account_id: str, when: datetime, data: dict[str, Any],
          event_id: str | None = None) -> Event:
    """One validated event; the id defaults to a digest of its content."""
    content = f"{account_id}|{kind}|{when.isoformat()}|{sorted(data.items())}"
    digest = hashlib.sha1(content.encode()).hexdigest()[:12]
    raw = {"id": event_id or f"{account_id}:{kind}:{digest}", "type": kind, "account_id": account_id,
           "occurred_at": when.isoformat(), "data": data}
    return parse([raw])[0]


def _when(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def story_problems(story: Story, risk_records: Sequence[dict[str, Any]]) -> list[str]:
    """What is wrong with the risks raised for one story (empty: as expected).

    `risk_records` are risk transitions as dicts (`RiskTransition.to_dict()` or the `risks` topic JSON):
    at least `type`, `transition`, `occurred_at`, `severity`, `summary`, `evidence`, `trigger` or
    `trigger_event_id`.
    """
    problems: list[str] = []
    opened: dict[str, dict[str, Any]] = {}
    last: dict[str, str] = {}
    for r in risk_records:
        if r["transition"] == "opened":
            opened.setdefault(r["type"], r)
        last[r["type"]] = r["transition"]
    unexpected = sorted(set(opened) - story.expected_types)
    if unexpected:
        problems.append(f"{story.name}: unexpected risks {unexpected}: "
                        + "; ".join(opened[t]["summary"] for t in unexpected))
    for exp in story.expect:
        r = opened.get(exp.type)
        if r is None:
            problems.append(f"{story.name}: expected {exp.type} by {exp.by.isoformat()}, none opened")
            continue
        when = _when(r["occurred_at"])
        if not exp.after <= when <= exp.by:
            problems.append(f"{story.name}: {exp.type} opened at {when.isoformat()}, expected between "
                            f"{exp.after.isoformat()} and {exp.by.isoformat()}")
        if exp.severity and r["severity"] != exp.severity:
            problems.append(f"{story.name}: {exp.type} severity {r['severity']}, expected {exp.severity}")
        if "trigger_event_id" in r:
            trigger = r["trigger_event_id"]
        else:
            trigger = (r.get("trigger") or {}).get("event_id")
        if exp.by_clock and trigger is not None:
            problems.append(f"{story.name}: {exp.type} should be noticed by the clock, "
                            f"was caused by {trigger}")
        if not r["summary"] or not r["evidence"]:
            problems.append(f"{story.name}: {exp.type} has no summary or evidence")
    for rtype in story.resolved_by_end:
        if last.get(rtype) != "resolved":
            problems.append(f"{story.name}: {rtype} should be resolved by the end, "
                            f"last was {last.get(rtype)}")
    return problems
