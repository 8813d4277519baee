"""Typeform webhooks (services/ingest/sources/typeform.py): `Typeform-Signature` (sha256= base64 HMAC of the raw
body), and a submitted form mapped onto a `sentiment` envelope (fixtures: Typeform's example payloads,
tests/fixtures/sources/typeform)."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.ingest.sources import typeform
from services.ingest.sources.delivery import Delivery
from services.ingest.sources.options import TypeformOptions
from shared.errors import Unauthorized, Unprocessable
from shared.events import validate_events

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources" / "typeform"
SECRET = "typeform-webhook-secret"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
ACME = {"account_id": "acme"}
TEXT = ("It's cold right now! I live in an older medium-sized city with a university. Geographically, the area "
        "is hilly.")


def body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def payload(name: str = "form_response.json") -> Any:
    return orjson.loads(body(name))


def signed(raw: bytes, secret: str = SECRET) -> Delivery:
    digest = base64.b64encode(hmac.new(secret.encode(), raw, hashlib.sha256).digest()).decode()
    return Delivery("POST", "https://ingest.example.com/v1/sources/typeform",
                    {"typeform-signature": f"sha256={digest}"}, {}, raw)


def parse(event: Any, query: dict[str, str] | None = None, **options: Any) -> list[dict[str, Any]]:
    out = typeform.parse(event, ACME if query is None else query, TypeformOptions(**options))
    events, errors = validate_events(list(out.events), now=NOW)
    assert errors == [] and len(events) == len(out.events)
    return out.events


# ------------------------------------------------------------------------------------------ signature
def test_a_signature_computed_as_typeform_documents_it_verifies():
    typeform.verify(signed(body("form_response.json")), SECRET, NOW)


def test_a_bad_missing_or_unprefixed_signature_is_401():
    raw = body("form_response.json")
    with pytest.raises(Unauthorized, match="does not match"):
        typeform.verify(signed(raw, "other"), SECRET, NOW)
    with pytest.raises(Unauthorized, match="does not match"):
        typeform.verify(Delivery("POST", "/", signed(raw).headers, {}, raw.replace(b"Laura", b"Maura")), SECRET, NOW)
    with pytest.raises(Unauthorized, match="missing Typeform-Signature"):
        typeform.verify(Delivery("POST", "/", {}, {}, raw), SECRET, NOW)
    bare = {"typeform-signature": signed(raw).headers["typeform-signature"].removeprefix("sha256=")}
    with pytest.raises(Unauthorized):
        typeform.verify(Delivery("POST", "/", bare, {}, raw), SECRET, NOW)


# ------------------------------------------------------------------------------------------ mapping
def test_by_default_the_first_opinion_scale_answer_is_an_nps_score():
    assert parse(payload()) == [{
        "id": "typeform:a3a12ec67a1365927098a606107fac15", "type": "sentiment", "account_id": "acme",
        "occurred_at": "2018-01-18T18:17:02+00:00",
        "data": {"source": "nps", "score": 2, "text": TEXT, "contact_id": "laura@example.com"}}]


def test_a_rating_is_a_csat_score():
    [event] = parse(payload("form_response_hidden.json"))
    assert event["data"] == {"source": "csat", "score": 3, "text": "It's cold right now! I live in an older "
                             "medium-sized city...", "contact_id": "laura@example.com"}


def test_the_score_field_is_chosen_by_ref_or_id_with_its_kind():
    assert parse(payload(), score_field="readable_ref_rating")[0]["data"]["score"] == 3
    assert parse(payload(), score_field="readable_ref_rating")[0]["data"]["source"] == "csat"
    by_id = parse(payload(), score_field="pn48RmPazVdM", kind="csat")[0]["data"]
    assert (by_id["source"], by_id["score"]) == ("csat", 4)


def test_an_nps_question_wins_over_other_scales():
    event = payload()
    event["form_response"]["answers"].append({"type": "number", "number": 10,
                                              "field": {"id": "npsq", "type": "nps", "ref": "how_likely"}})
    assert parse(event)[0]["data"]["score"] == 10


def test_comment_and_contact_fields_can_be_named():
    event = payload("form_response_hidden.json")
    data = parse(event, comment_field="readable_ref_long_text", contact_field="user_id")[0]["data"]
    assert data["contact_id"] == "abc123456" and data["text"].startswith("It's cold")


def test_a_response_without_a_score_is_ignored_and_partial_responses_too():
    event = payload()
    event["form_response"]["answers"] = [a for a in event["form_response"]["answers"]
                                         if a["field"]["type"] not in ("opinion_scale", "rating")]
    out = typeform.parse(event, ACME, TypeformOptions())
    assert (out.events, out.ignored) == ([], ["form_response without a score"])
    partial = payload() | {"event_type": "form_response_partial"}
    assert typeform.parse(partial, ACME, TypeformOptions()).ignored == ["form_response_partial"]


def test_a_named_score_field_left_unanswered_is_422():
    with pytest.raises(Unprocessable) as caught:
        typeform.parse(payload(), ACME, TypeformOptions(score_field="nps_question"))
    assert caught.value.details["errors"][0]["loc"] == ["form_response", "answers"]


def test_one_submission_keeps_its_id_however_often_it_is_delivered():
    again = payload() | {"event_id": "another-delivery"}
    assert parse(again)[0]["id"] == parse(payload())[0]["id"] == "typeform:a3a12ec67a1365927098a606107fac15"


# ------------------------------------------------------------------------------------------ account
def test_the_account_is_a_hidden_field_mapped_or_as_is_and_the_url_wins():
    event = payload("form_response_hidden.json")
    assert parse(event, {}, account_field="user_id")[0]["account_id"] == "abc123456"
    assert parse(event, {}, account_field="user_id", accounts={"abc123456": "acme"})[0]["account_id"] == "acme"
    with_hidden = copy.deepcopy(event)
    with_hidden["form_response"]["hidden"]["account_id"] = "globex"
    assert parse(with_hidden, {})[0]["account_id"] == "globex"
    assert parse(with_hidden, {"account_id": "initech"})[0]["account_id"] == "initech"


def test_a_response_without_an_account_is_422_naming_the_hidden_field():
    with pytest.raises(Unprocessable) as caught:
        typeform.parse(payload("form_response_hidden.json"), {}, TypeformOptions())
    [error] = caught.value.details["errors"]
    assert error["loc"] == ["form_response", "hidden", "account_id"] and "no account" in error["msg"]


# ------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize(("change", "loc"), [
    ({"event_type": None}, ["event_type"]),
    ({"form_response": None}, ["form_response"]),
    ({"form_response": []}, ["form_response"]),
])
def test_unknown_envelopes_are_422(change: dict[str, Any], loc: list[str]):
    event = payload() | change
    if change.get("event_type", "") is None:
        del event["event_type"]
    if change.get("form_response", "") is None:
        del event["form_response"]
    with pytest.raises(Unprocessable) as caught:
        typeform.parse(event, ACME, TypeformOptions())
    assert [e["loc"] for e in caught.value.details["errors"]] == [loc]


def test_a_response_without_token_time_or_answers_is_422_naming_each():
    event = payload()
    for key in ("token", "submitted_at", "answers"):
        del event["form_response"][key]
    with pytest.raises(Unprocessable) as caught:
        typeform.parse(event, ACME, TypeformOptions())
    assert [e["loc"] for e in caught.value.details["errors"]] == [
        ["form_response", "token"], ["form_response", "submitted_at"], ["form_response", "answers"]]
