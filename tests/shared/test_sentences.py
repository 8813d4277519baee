"""Risk evidence as sentences on the account page (shared/evidence.py): every key of every detector's
evidence (services/scoring/domain/detectors.py) is told, people by name, numbers with units."""

from __future__ import annotations

from typing import Any

import pytest

from shared.evidence import evidence_sentences
from shared.risks import RISK_TYPES

NAMES = {"c-1": "Dana Smith", "c-2": "Lee Wong"}

# One full evidence per risk type and mode, with every key its detector writes.
FULL: dict[str, list[dict[str, Any]]] = {
    "champion_left": [{"contacts": [{"contact_id": "c-1", "name": "Dana Smith", "role": "champion",
                                     "left_at": "2026-02-20T10:00:00+00:00"}], "count": 3}],
    "champion_inactive": [{"contacts": [{"contact_id": "c-2", "name": "c-2", "role": "champion",
                                         "days_since_last_use": 14, "usual_gap_days": 2}],
                           "count": 1, "account_uses_7d": 120}],
    "usage_drop": [
        {"mode": "low", "level": 0.38, "judged_days": 7, "measured_in": "active_user_days", "uses_7d": 118,
         "usual_7d": 310.0, "ratio": 0.41, "active_user_days_7d": 42, "usual_active_user_days_7d": 110,
         "days_silent": 0, "usual_gap_days": 1},
        {"mode": "silent", "level": 0.0, "judged_days": 7, "measured_in": "uses", "uses_7d": 0,
         "usual_7d": 55.5, "ratio": 0.0, "active_user_days_7d": None, "usual_active_user_days_7d": None,
         "days_silent": 12, "usual_gap_days": 2},
        {"mode": "lapsed", "p_active": 0.04, "days_silent": 20, "usual_gap_days": 3.2, "visits": 45,
         "uses_7d": 0},
    ],
    "ticket_spike": [{"opened_7d": 3, "usual_per_week": 0.5, "open_tickets": 5, "urgent_open": 2,
                      "burst": {"days": 2, "opened": 3}}],
    "sentiment_drop": [
        {"mode": "key_detractor", "contact_id": "c-1", "contact": "c-1", "role": "sponsor", "source": "nps",
         "score": 3, "answered_at": "2026-02-10T08:00:00+00:00"},
        {"mode": "trend", "recent_mean": -0.35, "recent_answers": 4, "earlier_mean": 0.2, "earlier_answers": 5},
    ],
    "renewal_risk": [{"renewal_date": "2026-04-15", "days_to_renewal": 45, "score": 38.2, "tier": "red"}],
    "health_drop": [{"from": 72.0, "to": 48.0, "drop": 24.0, "within_days": 7, "main_factor": "usage_trend"}],
}


def test_every_risk_type_is_covered() -> None:
    assert set(FULL) == set(RISK_TYPES)


@pytest.mark.parametrize(("risk_type", "evidence"), [(t, e) for t, es in FULL.items() for e in es])
def test_every_evidence_key_is_told(risk_type: str, evidence: dict[str, Any]) -> None:
    sentences = evidence_sentences(risk_type, evidence, NAMES)
    assert sentences and all(s.endswith(".") for s in sentences)
    # A key nobody told would come out as a "Key: value." leftover sentence.
    for key in evidence:
        assert not any(s.startswith(f"{key.replace('_', ' ').capitalize()}:") for s in sentences), sentences
    text = " ".join(sentences)
    assert "c-1" not in text and "c-2" not in text   # never a raw contact id


def test_examples_read_as_a_csm_would_say_them() -> None:
    usage = evidence_sentences("usage_drop", FULL["usage_drop"][0], NAMES)
    assert "Usage fell 62% over 7 days (measured in active user-days)." in usage
    assert "118 uses in the last 7 days (usual 310)." in usage
    assert "42 active user-days in the last 7 days (usual 110)." in usage
    assert "Uses are at 41% of the usual week." in usage
    tickets = evidence_sentences("ticket_spike", FULL["ticket_spike"][0], NAMES)
    assert tickets[0] == "3 tickets opened in 7 days (usual 0.5 per week)."
    assert "3 of them within 2 days." in tickets and "5 tickets still open, 2 of them urgent." in tickets
    left = evidence_sentences("champion_left", FULL["champion_left"][0], NAMES)
    assert left == ["Dana Smith (champion) left on 2026-02-20.", "2 more key contacts left as well."]
    quiet = evidence_sentences("champion_inactive", FULL["champion_inactive"][0], NAMES)
    assert quiet[0] == "Lee Wong (champion) has not used the product for 14 days (usually every 2 days)."
    assert quiet[1] == "The rest of the account stays active: 120 uses in the last 7 days."
    detractor = evidence_sentences("sentiment_drop", FULL["sentiment_drop"][0], NAMES)
    assert detractor == ["Dana Smith (sponsor) gave an NPS score of 3 on 2026-02-10 (a detractor answer)."]
    trend = evidence_sentences("sentiment_drop", FULL["sentiment_drop"][1], NAMES)
    assert trend == ["Average sentiment \u22120.35 over the last 4 answers (30 days).",
                     "It was +0.20 over 5 answers in the two months before."]
    renewal = evidence_sentences("renewal_risk", FULL["renewal_risk"][0], NAMES)
    assert renewal == ["Renews in 45 days, on 2026-04-15.", "Health is red (score 38) so close to the renewal."]
    drop = evidence_sentences("health_drop", FULL["health_drop"][0], NAMES)
    assert drop == ["Health fell 24 points within 7 days, from 72 to 48.", "Mostly usage trend."]
    silent = evidence_sentences("usage_drop", FULL["usage_drop"][1], NAMES)
    assert silent[0] == "No product usage for 12 days (usually active every 2 days)."
    lapsed = evidence_sentences("usage_drop", FULL["usage_drop"][2], NAMES)
    assert lapsed[:3] == ["No activity for 20 days.",
                          "The account used to be active about every 3.2 days (45 active days in all).",
                          "The chance it is still active is 4%."]


def test_a_person_without_a_known_name_is_a_contact() -> None:
    evidence = {"contacts": [{"contact_id": "c-9", "name": "c-9", "role": "sponsor", "left_at": None}],
                "count": 1}
    assert evidence_sentences("champion_left", evidence, NAMES) == ["A contact (sponsor) left."]
    evidence = {"mode": "key_detractor", "contact_id": "c-9", "contact": None, "role": "champion",
                "source": "csat", "score": 1, "answered_at": None}
    assert evidence_sentences("sentiment_drop", evidence, {}) == [
        "A contact (champion) gave a CSAT score of 1 (a detractor answer)."]


def test_a_risk_closed_because_the_account_churned() -> None:
    assert evidence_sentences("usage_drop", {"reason": "account churned"}, NAMES) == [
        "Closed because the account churned."]


def test_unknown_keys_and_types_still_say_something_without_ids() -> None:
    out = evidence_sentences("ticket_spike", {**FULL["ticket_spike"][0], "reopened_7d": 2, "queue_id": "q-1"},
                             NAMES)
    assert out[-1] == "Reopened 7d: 2." and "q-1" not in " ".join(out)
    assert evidence_sentences("new_type", {"share": 0.5}, NAMES) == ["Share: 0.5."]
