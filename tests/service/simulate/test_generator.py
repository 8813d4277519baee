"""The generator: deterministic, realistic rhythms, valid events in the past, stories as scripted."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from services.simulate.generator import Simulation, generate
from services.simulate.model import STORIES, GroundTruth, SimulationParams
from shared.events import Event, validate_event

NOW = datetime(2026, 3, 16, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return generate(SimulationParams(now=NOW, seed=7, accounts=60, history_days=45, live_days=10))


@pytest.fixture(scope="module")
def events(sim: Simulation) -> list:
    return list(sim.events())


def test_same_seed_gives_the_same_events_and_truth(events: list) -> None:
    again = generate(SimulationParams(now=NOW, seed=7, accounts=60, history_days=45, live_days=10))
    assert [(e.at, e.body) for e in again.events()] == [(e.at, e.body) for e in events]
    assert again.truth == generate(SimulationParams(now=NOW, seed=7, accounts=60, history_days=45,
                                                    live_days=10)).truth


def test_another_seed_gives_other_events(events: list) -> None:
    other = generate(SimulationParams(now=NOW, seed=8, accounts=60, history_days=45, live_days=10))
    other_events = list(other.events())
    assert [e.body["data"] for e in other_events[:500]] != [e.body["data"] for e in events[:500]]


def test_events_are_restartable_and_ordered_by_event_time(sim: Simulation, events: list) -> None:
    assert [e.body["id"] for e in sim.events()][:1000] == [e.body["id"] for e in events][:1000]
    times = [e.at for e in events]
    assert times == sorted(times)
    assert len({e.body["id"] for e in events}) == len(events)


def test_every_event_is_valid_and_never_in_the_future(sim: Simulation, events: list) -> None:
    for e in events:
        parsed = validate_event(e.body, now=NOW)
        assert isinstance(parsed, Event), (e.body, parsed)
        assert parsed.occurred_at == e.at
        assert sim.params.start <= parsed.occurred_at <= NOW


def test_weekdays_busier_than_weekends_and_office_hours_busier_than_nights(sim: Simulation,
                                                                            events: list) -> None:
    tz = {a.account_id: timedelta(hours=a.tz_hours) for a in sim.accounts}
    per_day: Counter[tuple[datetime, int]] = Counter()
    per_hour: Counter[int] = Counter()
    for e in events:
        if e.body["type"] == "usage":
            local = e.at + tz[e.body["account_id"]]
            per_day[(local.date(), local.weekday())] += 1
            per_hour[local.hour] += 1
    weekday = [n for (_, wd), n in per_day.items() if wd < 5]
    weekend = [n for (_, wd), n in per_day.items() if wd >= 5]
    assert sum(weekday) / len(weekday) > 3 * sum(weekend) / len(weekend)
    assert per_hour[10] > 10 * per_hour[3]


def test_accounts_range_from_small_to_large(sim: Simulation) -> None:
    seats = sorted(a.seats for a in sim.accounts)
    users = sorted(len(a.users) for a in sim.accounts)
    breadth = sorted(len(a.features) for a in sim.accounts)
    assert seats[0] <= 15 and seats[-1] >= 150
    assert users[0] <= 8 and users[-1] >= 25
    assert breadth[0] < breadth[-1]
    assert {a.segment for a in sim.accounts} == {"smb", "mid_market", "enterprise"}


def test_contacts_have_roles_and_usage_links_to_them_by_user_id(events: list) -> None:
    contacts: dict[str, dict[str, str]] = defaultdict(dict)   # account -> user_id -> role
    accounts: dict[str, dict] = {}
    for e in events:
        body = e.body
        if body["type"] == "contact" and "role" in body["data"]:
            contacts[body["account_id"]][body["data"]["user_id"]] = body["data"]["role"]
        elif body["type"] == "account" and "name" in body["data"]:
            accounts[body["account_id"]] = body["data"]
        elif body["type"] == "usage":
            assert body["data"]["user_id"] in contacts[body["account_id"]]
    for roles in contacts.values():
        counted = Counter(roles.values())
        assert counted["champion"] >= 1 and counted["sponsor"] == 1 and counted["admin"] >= 1
    for facts in accounts.values():
        assert facts["csm"]["email"].endswith("@example.com") and facts["csm"]["slack_user_id"]
        assert facts["renewal_date"] and facts["arr"] > 0 and facts["segment"]


def test_background_has_tickets_and_sentiment_on_healthy_accounts(sim: Simulation, events: list) -> None:
    healthy = set(sim.truth.healthy)
    kinds = Counter((e.body["type"], e.body["data"].get("status") or e.body["data"].get("source"))
                    for e in events if e.body["account_id"] in healthy)
    assert kinds[("ticket", "opened")] > 20 and kinds[("ticket", "solved")] > 20
    assert kinds[("sentiment", "nps")] > 20 and kinds[("sentiment", "csat")] > 5
    assert kinds[("sentiment", "conversation")] > 5


def test_ground_truth_covers_every_story_within_the_timeline(sim: Simulation) -> None:
    truth = sim.truth
    assert {c.story for c in truth.churners} == set(STORIES)
    assert set(truth.healthy) | {c.account_id for c in truth.churners} == set(truth.accounts)
    for churn in truth.churners:
        assert truth.evaluate_from <= churn.signal_start < truth.end
        assert churn.expected_risks == STORIES[churn.story]
    assert GroundTruth.from_dict(truth.to_dict()) == truth


def _account_events(events: list, account_id: str) -> list:
    return [e for e in events if e.body["account_id"] == account_id]


def test_stories_change_behaviour_from_their_signal_start(sim: Simulation, events: list) -> None:
    for churn in sim.truth.churners:
        story = sim.stories[churn.account_id]
        mine = _account_events(events, churn.account_id)
        after = [e for e in mine if e.at >= churn.signal_start]
        if churn.story in ("champion_left", "champion_inactive"):
            champion = story.account.champion.user_id
            assert not [e for e in after
                        if e.body["type"] == "usage" and e.body["data"]["user_id"] == champion]
            assert [e for e in after if e.body["type"] == "usage"], "the rest of the team carries on"
            left = [e for e in after if e.body["type"] == "contact" and e.body["data"].get("status") == "left"
                    and e.body["data"]["contact_id"] == story.account.champion.contact_id]
            assert bool(left) == (churn.story == "champion_left")
        elif churn.story == "usage_fade":
            silent_from = churn.signal_start + timedelta(days=9)
            assert not [e for e in mine if e.at >= silent_from and e.body["type"] == "usage"]
        elif churn.story == "ticket_storm":
            opened = [e for e in after if e.body["type"] == "ticket" and e.body["data"]["status"] == "opened"
                      and e.at < churn.signal_start + timedelta(days=3)]
            assert len(opened) >= 7
        elif churn.story == "detractor_nps":
            sponsor = story.account.sponsor.contact_id
            nps = [e for e in after if e.body["type"] == "sentiment" and e.body["data"]["source"] == "nps"
                   and e.body["data"]["contact_id"] == sponsor]
            assert nps and nps[0].body["data"]["score"] <= 3
        elif churn.story == "renewal_at_risk":
            facts = next(e for e in mine if e.body["type"] == "account")
            renewal = datetime.fromisoformat(facts.body["data"]["renewal_date"]).date()
            assert 30 <= (renewal - churn.signal_start.date()).days <= 90


def test_healthy_key_contacts_never_give_detractor_scores(sim: Simulation, events: list) -> None:
    key = {u.contact_id for a in sim.accounts for u in a.users if u.role in ("champion", "sponsor")}
    healthy = set(sim.truth.healthy)
    for e in events:
        data = e.body["data"]
        if (e.body["account_id"] in healthy and e.body["type"] == "sentiment" and data["source"] == "nps"
                and data["contact_id"] in key):
            assert data["score"] >= 7


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="timezone"):
        SimulationParams(now=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="accounts"):
        SimulationParams(now=NOW, accounts=0)
