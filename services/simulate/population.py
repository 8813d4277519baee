"""Synthetic customer accounts: size, segment, CSM, renewal, and the people who use the product."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from services.simulate import catalog
from services.simulate.rhythm import OFFICE_WEEK, SHIFT_WEEK

# segment -> (share of accounts, seats range, tracked-user cap, yearly price per seat range)
SEGMENTS = {
    "smb": (0.55, (5, 25), 10, (300.0, 600.0)),
    "mid_market": (0.33, (25, 150), 30, (250.0, 450.0)),
    "enterprise": (0.12, (150, 1000), 60, (180.0, 350.0)),
}
TIMEZONES = ((-8.0, 15), (-5.0, 25), (0.0, 15), (1.0, 20), (2.0, 5), (5.5, 5), (8.0, 5), (9.0, 5), (10.0, 5))


@dataclass
class User:
    user_id: str
    contact_id: str
    name: str
    email: str
    role: str                   # champion | sponsor | admin | user
    engagement: float           # chance of using the product on an ordinary weekday
    features: tuple[str, ...]
    weights: tuple[float, ...]
    vacations: list[tuple[date, date]] = field(default_factory=list)
    leaves_on: datetime | None = None   # an ordinary user who leaves the company (background noise)
    days_off: frozenset[date] = field(init=False)

    def __post_init__(self) -> None:
        self.days_off = frozenset(date.fromordinal(d) for first, last in self.vacations
                                  for d in range(first.toordinal(), last.toordinal() + 1))

    def on_vacation(self, day: date) -> bool:
        return day in self.days_off


@dataclass
class Account:
    index: int
    account_id: str
    name: str
    domain: str
    segment: str
    seats: int
    arr: float
    csm: tuple[str, str, str]
    renewal_date: date
    tz_hours: float
    week: tuple[float, ...]
    growth_per_90d: float
    noise_sigma: float
    features: tuple[str, ...]
    users: list[User]
    tickets_per_week: float
    seat_change_on: datetime | None = None   # a CRM update of seats/ARR during the timeline
    seat_change_to: int | None = None

    @property
    def champion(self) -> User:
        return next(u for u in self.users if u.role == "champion")

    @property
    def sponsor(self) -> User:
        return next(u for u in self.users if u.role == "sponsor")

    def by_role(self, role: str) -> list[User]:
        return [u for u in self.users if u.role == role]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def _company_name(rng: random.Random, taken: set[str]) -> str:
    for _ in range(50):
        name = f"{rng.choice(catalog.COMPANY_FIRST)} {rng.choice(catalog.COMPANY_SECOND)}"
        if name not in taken:
            break
    else:
        name = f"{name} {rng.choice(catalog.COMPANY_SUFFIX)} {len(taken)}"
    taken.add(name)
    return name


def _features_for(rng: random.Random, users: int) -> tuple[str, ...]:
    """Bigger accounts use more of the product."""
    core = [f for f, _ in catalog.FEATURES[:3]]
    optional = [f for f, _ in catalog.FEATURES[3:] if f not in catalog.ADMIN_FEATURES]
    breadth = min(len(optional), 3 + int(users ** 0.5) + rng.randint(0, 2))
    return tuple(core + rng.sample(optional, breadth) + list(catalog.ADMIN_FEATURES))


def _user_features(rng: random.Random, account_features: tuple[str, ...], role: str
                   ) -> tuple[tuple[str, ...], tuple[float, ...]]:
    popularity = dict(catalog.FEATURES)
    ordinary = [f for f in account_features if f not in catalog.ADMIN_FEATURES]
    k = min(len(ordinary), rng.randint(2, 5) + (2 if role == "champion" else 0))
    chosen = ["login"] + [f for f in rng.sample(ordinary, k) if f != "login"]
    if role == "admin":
        chosen += list(catalog.ADMIN_FEATURES)
    weights = [popularity[f] * rng.uniform(0.5, 1.5) for f in chosen]
    return tuple(chosen), tuple(weights)


def _vacations(rng: random.Random, start: date, end: date, max_workdays: int) -> list[tuple[date, date]]:
    """A week off now and then (about four a year, at least a month apart), sometimes two weeks;
    a vacation starts on a Monday."""
    out: list[tuple[date, date]] = []
    day = start - timedelta(days=start.weekday() + 7 * rng.randint(0, 8))
    while day <= end:
        if rng.random() < 1 / 10:
            long = max_workdays > 5 and rng.random() < 0.25
            workdays = rng.randint(6, max_workdays) if long else rng.randint(3, min(5, max_workdays))
            last = day + timedelta(days=workdays - 1 + 2 * ((workdays - 1) // 5))
            out.append((day, last))
            day = last + timedelta(days=7 - last.weekday() + 28)   # a month back at work at least
            continue
        day += timedelta(days=7)
    return out


def build_account(seed: int, index: int, prefix: str, start: datetime, end: datetime,
                  taken_names: set[str]) -> Account:
    rng = random.Random(f"{seed}/account/{index}")
    segment = rng.choices(list(SEGMENTS), [s[0] for s in SEGMENTS.values()])[0]
    _, (lo, hi), cap, (p_lo, p_hi) = SEGMENTS[segment]
    seats = int(round(lo * (hi / lo) ** rng.random()))  # log-uniform: many small, few large
    n_users = max(3, min(cap, int(round(seats * rng.uniform(0.45, 0.9)))))
    name = _company_name(rng, taken_names)
    domain = f"{_slug(name)}.example"
    account_id = f"{prefix}{index:04d}"
    features = _features_for(rng, n_users)
    csm = catalog.CSMS[index % len(catalog.CSMS)]
    tz = rng.choices([t for t, _ in TIMEZONES], [w for _, w in TIMEZONES])[0]
    renewal = (end + timedelta(days=rng.uniform(20, 380))).date()

    roles = ["champion", "sponsor"] + ["admin"] * (1 + (n_users >= 25)) + ["user"] * n_users
    roles = roles[:n_users]
    if n_users >= 40:  # large accounts often have a second champion
        roles[-1] = "champion"
    people: set[str] = set()
    users: list[User] = []
    for i, role in enumerate(roles):
        for _ in range(20):
            first, last = rng.choice(catalog.FIRST_NAMES), rng.choice(catalog.LAST_NAMES)
            if (first, last) not in people:
                break
        people.add((first, last))
        engagement = {"champion": rng.uniform(0.85, 0.95), "sponsor": rng.uniform(0.05, 0.15),
                      "admin": rng.uniform(0.55, 0.8)}.get(role, rng.betavariate(2.2, 2.6))
        feats, weights = _user_features(rng, features, role)
        urng = random.Random(f"{seed}/vacation/{index}/{i}")
        max_off = 5 if role == "champion" else 10
        user = User(
            user_id=f"{account_id}-u{i:03d}", contact_id=f"{account_id}-c{i:03d}",
            name=f"{first} {last}", email=f"{_slug(first)}.{_slug(last)}@{domain}", role=role,
            engagement=engagement, features=feats, weights=weights,
            vacations=_vacations(urng, start.date(), end.date(), max_off),
        )
        users.append(user)
    # Now and then an ordinary user leaves the company: their usage stops, their contact is marked left.
    plain = [u for u in users if u.role == "user"]
    if plain and rng.random() < 0.15:
        leaver = rng.choice(plain)
        leaver.leaves_on = start + timedelta(days=rng.uniform(10, (end - start).days - 1))

    growth = rng.gauss(0.04, 0.06)
    account = Account(
        index=index, account_id=account_id, name=name, domain=domain, segment=segment, seats=seats,
        arr=round(seats * rng.uniform(p_lo, p_hi), -2), csm=csm, renewal_date=renewal, tz_hours=tz,
        week=SHIFT_WEEK if rng.random() < 0.1 else OFFICE_WEEK, growth_per_90d=growth,
        noise_sigma=rng.uniform(0.08, 0.18), features=features, users=users,
        tickets_per_week=0.15 + 0.05 * n_users ** 0.8,
    )
    if rng.random() < 0.2:
        account.seat_change_on = start + timedelta(days=rng.uniform(5, (end - start).days - 1))
        account.seat_change_to = max(n_users, int(seats * (1 + growth + rng.uniform(-0.05, 0.1))))
    return account
