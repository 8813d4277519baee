"""Typeform: a submitted NPS / CSAT form (`form_response`) as a `sentiment` event.

Signature (Typeform, "Secure your webhooks"): `Typeform-Signature` is `sha256=` + base64(HMAC-SHA256(the
webhook's secret, raw body)). Typeform sends no timestamp.

Payload (Typeform, "Example payload"): `{"event_id", "event_type": "form_response", "form_response":
{"form_id", "token" (the response id), "submitted_at", "hidden": {...}, "definition": {"fields": [{"id",
"ref", "type"}]}, "answers": [{"type", "number" | "text" | "email" | ..., "field": {"id", "type", "ref"?}}]}}`.

Mapping (id `typeform:<token>`, so one submission counts once however often it is delivered; `occurred_at` =
`submitted_at`): the score is the answer to `score_field` (a field's ref or id), by default the first answer
to an `nps` question, else to an `opinion_scale`, else to a `rating` one; its kind is `kind`, by default
`nps` for `nps` and `opinion_scale` questions (0-10) and `csat` for `rating` (1-5). The text is the answer
to `comment_field`, by default the first `long_text` answer; the contact is the hidden field
`contact_field`, by default the first `email` answer. A response without a score is ignored, as is
`form_response_partial`. Account: the hidden field `account_field` (default `account_id`), through the
`accounts` map, else as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from services.ingest.sources.delivery import (
    ACCOUNT_PARAM,
    Delivery,
    Mapped,
    Problems,
    as_id,
    as_object,
    as_text,
    kind_of,
    resolve_account,
    rfc3339,
    unprocessable,
)
from services.ingest.sources.options import TypeformOptions
from services.ingest.sources.signing import hmac_sha256_base64, required_header, same
from shared.errors import Unauthorized

NAME = "typeform"
SIGNATURE = "Typeform-Signature"

_SCORE_KINDS = {"nps": "nps", "opinion_scale": "nps", "rating": "csat"}


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac_sha256_base64(secret, body)


def verify(delivery: Delivery, secret: str, now: datetime) -> None:
    signature = required_header(delivery.headers, SIGNATURE, "Typeform")
    if not same(sign(secret, delivery.body), signature):
        raise Unauthorized(f"{SIGNATURE} does not match the body: check the webhook's secret")


def parse(payload: Any, query: Mapping[str, str], options: TypeformOptions) -> Mapped:
    if not isinstance(payload, dict):
        raise unprocessable("Typeform", [], f"a Typeform webhook is a JSON object, got {kind_of(payload)}")
    event_type = payload.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        raise unprocessable("Typeform", ["event_type"], "required: the webhook's event type, e.g. form_response")
    if event_type != "form_response":
        return Mapped(ignored=[event_type])
    problems = Problems("Typeform")
    response = as_object(payload.get("form_response"), ["form_response"], problems)
    problems.raise_if_any()
    assert response is not None
    token = as_id(response.get("token"), ["form_response", "token"], problems)
    submitted_at = rfc3339(response.get("submitted_at"), ["form_response", "submitted_at"], problems)
    answers = response.get("answers")
    if not isinstance(answers, list):
        problems.add(["form_response", "answers"], "required: the list of answers" if answers is None
                     else f"must be an array, got {kind_of(answers)}")
        answers = []
    hidden = response.get("hidden") if isinstance(response.get("hidden"), dict) else {}
    account = resolve_account(query, hidden.get(options.account_field), options.accounts)
    if account is None:
        problems.add(["form_response", "hidden", options.account_field],
                     f"no account: the response has no hidden field '{options.account_field}'; add it to "
                     f"the form (e.g. ...?{options.account_field}=acme on the form's link), set "
                     f"typeform.account_field, or add ?{ACCOUNT_PARAM}= to the webhook URL")
    refs = _refs(response.get("definition"))
    score = _score_answer(answers, refs, options)
    if options.score_field is not None and score is None:
        problems.add(["form_response", "answers"], f"no answer to the score field '{options.score_field}'")
    problems.raise_if_any()
    assert token and submitted_at and account
    if score is None:
        return Mapped(ignored=["form_response without a score"])
    number, question_type = score
    data: dict[str, Any] = {"source": options.kind or _SCORE_KINDS.get(question_type, "nps"), "score": number}
    comment = _text_answer(answers, refs, options.comment_field)
    if comment is not None:
        data["text"] = comment
    contact = (as_id(hidden.get(options.contact_field), []) if options.contact_field
               else _first_of_type(answers, "email", "email"))
    if contact is not None:
        data["contact_id"] = contact[:256]
    return Mapped(events=[{"id": f"typeform:{token}"[:128], "type": "sentiment", "account_id": account,
                           "occurred_at": submitted_at, "data": data}])


def _refs(definition: Any) -> dict[str, str]:
    """Field id -> ref, from the form definition (answers name their field by id, the ref only sometimes)."""
    fields = definition.get("fields") if isinstance(definition, dict) else None
    out: dict[str, str] = {}
    for spec in fields if isinstance(fields, list) else []:
        if isinstance(spec, dict) and isinstance(spec.get("id"), str) and isinstance(spec.get("ref"), str):
            out[spec["id"]] = spec["ref"]
    return out


def _names(answer: Mapping[str, Any], refs: Mapping[str, str]) -> tuple[set[str], str]:
    """The names an answer's question goes by (id and ref) and its question type."""
    spec = answer.get("field") if isinstance(answer.get("field"), dict) else {}
    names = {v for v in (spec.get("id"), spec.get("ref"), refs.get(spec.get("id", ""))) if isinstance(v, str)}
    return names, spec.get("type") if isinstance(spec.get("type"), str) else ""


def _score_answer(answers: list[Any], refs: Mapping[str, str],
                  options: TypeformOptions) -> tuple[int | float, str] | None:
    """The named score field's answer; else the first answer to an `nps`, then `opinion_scale`, then
    `rating` question."""
    found: dict[str, tuple[int | float, str]] = {}
    for answer in answers:
        if not isinstance(answer, dict):
            continue
        names, question_type = _names(answer, refs)
        number = answer.get("number")
        if not isinstance(number, int | float) or isinstance(number, bool):
            continue
        if options.score_field:
            if options.score_field in names:
                return number, question_type
        elif question_type in _SCORE_KINDS:
            found.setdefault(question_type, (number, question_type))
    return next((found[t] for t in _SCORE_KINDS if t in found), None)


def _text_answer(answers: list[Any], refs: Mapping[str, str], field: str | None) -> str | None:
    for answer in answers:
        if not isinstance(answer, dict):
            continue
        names, question_type = _names(answer, refs)
        if (field in names) if field else question_type == "long_text":
            return as_text(answer.get("text"), 10_000)
    return None


def _first_of_type(answers: list[Any], answer_type: str, key: str) -> str | None:
    for answer in answers:
        if isinstance(answer, dict) and answer.get("type") == answer_type:
            return as_id(answer.get(key), [])
    return None
