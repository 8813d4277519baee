"""Delighted webhooks (services/ingest/sources/delighted.py): a shared token (`?token=` or the Basic password),
and survey responses mapped onto `sentiment` envelopes (fixtures: tests/fixtures/sources/delighted)."""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.ingest.sources import delighted
from services.ingest.sources.delivery import Delivery
from services.ingest.sources.options import DelightedOptions
from shared.errors import Unauthorized, Unprocessable
from shared.events import validate_events

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources" / "delighted"
SECRET = "delighted-shared-token"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
ACME = {"account_id": "acme"}


def payload(name: str = "survey_response_updated.json") -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


def delivery(query: dict[str, str] | None = None, authorization: str | None = None) -> Delivery:
    headers = {} if authorization is None else {"authorization": authorization}
    return Delivery("POST", "https://ingest.example.com/v1/sources/delighted", headers, query or {}, b"{}")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def parse(event: Any, query: dict[str, str] | None = None, **options: Any) -> list[dict[str, Any]]:
    out = delighted.parse(event, ACME if query is None else query, DelightedOptions(**options))
    events, errors = validate_events(list(out.events), now=NOW)
    assert errors == [] and len(events) == len(out.events)
    return out.events


# ------------------------------------------------------------------------------------------ token
def test_the_token_query_parameter_or_the_basic_password_authenticates():
    delighted.verify(delivery({"token": SECRET}), SECRET, NOW)
    delighted.verify(delivery(authorization=basic("churnsignal", SECRET)), SECRET, NOW)
    delighted.verify(delivery(authorization=basic("", SECRET)), SECRET, NOW)


def test_a_wrong_or_missing_token_is_401():
    with pytest.raises(Unauthorized, match="missing credentials"):
        delighted.verify(delivery(), SECRET, NOW)
    with pytest.raises(Unauthorized, match="does not match"):
        delighted.verify(delivery({"token": SECRET + "x"}), SECRET, NOW)
    with pytest.raises(Unauthorized, match="does not match"):
        delighted.verify(delivery(authorization=basic(SECRET, "guess")), SECRET, NOW)
    with pytest.raises(Unauthorized, match="not valid Basic"):
        delighted.verify(delivery(authorization="Basic %%%"), SECRET, NOW)
    with pytest.raises(Unauthorized, match="missing credentials"):
        delighted.verify(delivery(authorization=f"Bearer {SECRET}"), SECRET, NOW)


def test_both_given_both_must_match():
    with pytest.raises(Unauthorized):
        delighted.verify(delivery({"token": "wrong"}, basic("x", SECRET)), SECRET, NOW)


# ------------------------------------------------------------------------------------------ mapping
def test_the_documented_response_is_an_nps_answer_of_the_person():
    assert parse(payload()) == [{
        "id": "delighted:5435", "type": "sentiment", "account_id": "acme", "occurred_at": "2024-11-21T11:00:44+00:00",
        "data": {"source": "nps", "score": 9, "text": "Your service is fast and flawless!",
                 "contact_id": "charlie_gravis@example.com"}}]


def test_created_and_updated_deliveries_of_one_response_share_its_id():
    [created] = parse(payload("survey_response_created.json"))
    [updated] = parse(payload())
    assert created["id"] == updated["id"] == "delighted:5435"
    assert created["occurred_at"] == updated["occurred_at"]
    assert "text" not in created["data"] and created["data"]["score"] == 9


@pytest.mark.parametrize(("survey_type", "source"), [("nps", "nps"), ("csat", "csat"), ("five_star", "csat")])
def test_survey_types(survey_type: str, source: str):
    event = payload()
    event["event_data"] |= {"survey_type": survey_type, "score": 4}
    assert parse(event)[0]["data"]["source"] == source


@pytest.mark.parametrize("survey_type", ["ces", "smileys", "thumbs", "pmf", "enps"])
def test_other_survey_types_are_ignored(survey_type: str):
    event = payload()
    event["event_data"]["survey_type"] = survey_type
    out = delighted.parse(event, ACME, DelightedOptions())
    assert (out.events, out.ignored) == ([], [f"survey_response.updated ({survey_type})"])


def test_unsubscribes_are_ignored_and_an_answer_without_survey_type_is_nps():
    out = delighted.parse({"event_type": "unsubscribe.created", "event_data": {}}, ACME, DelightedOptions())
    assert (out.events, out.ignored) == ([], ["unsubscribe.created"])
    event = payload()
    del event["event_data"]["survey_type"]
    assert parse(event)[0]["data"]["source"] == "nps"


def test_a_person_without_email_is_named_by_id():
    event = payload()
    del event["event_data"]["person"]["email"]
    assert parse(event)[0]["data"]["contact_id"] == "5975"


# ------------------------------------------------------------------------------------------ account
def test_the_account_is_a_person_property_mapped_or_as_is_and_the_url_wins():
    event = copy.deepcopy(payload())
    event["event_data"]["person_properties"] = {"account_id": "Globex", "Delighted Source": "Email"}
    assert parse(event, {})[0]["account_id"] == "Globex"
    assert parse(event, {}, accounts={"Globex": "globex"})[0]["account_id"] == "globex"
    assert parse(event, {"account_id": "acme"})[0]["account_id"] == "acme"
    event["event_data"]["person_properties"] = {"Company": "Initech"}
    assert parse(event, {}, account_field="Company")[0]["account_id"] == "Initech"


def test_a_response_without_an_account_is_422_naming_the_property():
    with pytest.raises(Unprocessable) as caught:
        delighted.parse(payload(), {}, DelightedOptions())
    [error] = caught.value.details["errors"]
    assert error["loc"] == ["event_data", "person_properties", "account_id"] and "no account" in error["msg"]


# ------------------------------------------------------------------------------------------ shapes
def test_unknown_shapes_are_422_naming_what_is_missing():
    with pytest.raises(Unprocessable) as caught:
        delighted.parse({"event_data": {}}, ACME, DelightedOptions())
    assert [e["loc"] for e in caught.value.details["errors"]] == [["event_type"]]
    with pytest.raises(Unprocessable) as caught:
        delighted.parse({"event_type": "survey_response.created"}, ACME, DelightedOptions())
    assert [e["loc"] for e in caught.value.details["errors"]] == [["event_data"]]
    event = payload()
    for key in ("id", "score", "created_at"):
        del event["event_data"][key]
    with pytest.raises(Unprocessable) as caught:
        delighted.parse(event, ACME, DelightedOptions())
    assert [e["loc"] for e in caught.value.details["errors"]] == [
        ["event_data", "id"], ["event_data", "created_at"], ["event_data", "score"]]


def test_a_score_outside_the_scale_is_left_to_event_validation():
    event = payload()
    event["event_data"] |= {"survey_type": "csat", "score": 9}
    [raw] = delighted.parse(event, ACME, DelightedOptions()).events
    _, errors = validate_events([raw], now=NOW)
    assert [(e.loc, e.msg) for e in errors] == [(("data",), "Value error, score 9 is outside 1..5 for source 'csat'")]
