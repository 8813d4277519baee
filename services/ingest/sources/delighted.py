"""Delighted: survey responses (`survey_response.created`, `survey_response.updated`) as `sentiment` events.

Authentication: Delighted documents no signature for its webhooks, so the webhook URL carries the source's
shared secret, either as `?token=<secret>` (works with any URL field) or as the password of HTTP Basic auth
(`https://churnsignal:<secret>@ingest.example.com/...`, when the sender turns userinfo into an
`Authorization: Basic` header). Either one must equal the secret; the user name of Basic auth is not checked.

Payload (Delighted, "Webhooks"): `{"event_type", "event_id", "event_data": {"id" (the response), "person":
{"id", "email", "name"}, "survey_type" (nps, csat, ces, ...), "score", "comment", "created_at" (Unix s),
"person_properties": {...} | null, ...}}`.

Mapping (id `delighted:<response id>`: `created` and later `updated` deliveries of one response are one
answer, counted once, as its first delivery has it; `occurred_at` = the response's `created_at`): `survey_type`
`nps` -> source `nps` (0-10), `csat` and `five_star` -> `csat` (1-5); other survey types (ces, smileys,
thumbs, pmf, enps) and `unsubscribe.created` are ignored. `comment` -> `text`, the person's email (else their
id) -> `contact_id`. Account: the person property `account_field` (default `account_id`) in
`person_properties`, through the `accounts` map, else as is.
"""

from __future__ import annotations

import base64
import binascii
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
    from_epoch,
    kind_of,
    resolve_account,
    unprocessable,
)
from services.ingest.sources.options import DelightedOptions
from services.ingest.sources.signing import same
from shared.errors import Unauthorized

NAME = "delighted"
TOKEN_PARAM = "token"

_RESPONSES = frozenset({"survey_response.created", "survey_response.updated"})
_KINDS = {"nps": "nps", "csat": "csat", "five_star": "csat"}


def verify(delivery: Delivery, secret: str, now: datetime) -> None:
    token = delivery.query.get(TOKEN_PARAM)
    password = _basic_password(delivery.headers.get("authorization"))
    if token is None and password is None:
        raise Unauthorized(f"missing credentials: add ?{TOKEN_PARAM}=<secret> to the Delighted webhook URL "
                           "(or send the secret as the password of HTTP Basic auth)")
    # Both are checked when both are given, so that neither can be wrong unnoticed.
    if any(given is not None and not same(secret, given) for given in (token, password)):
        raise Unauthorized("the Delighted webhook's token does not match the configured secret")


def _basic_password(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("Authorization header is not valid Basic credentials") from None
    _, colon, password = decoded.partition(":")
    return password if colon else None


def parse(payload: Any, query: Mapping[str, str], options: DelightedOptions) -> Mapped:
    if not isinstance(payload, dict):
        raise unprocessable("Delighted", [], f"a Delighted webhook is a JSON object, got {kind_of(payload)}")
    event_type = payload.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        raise unprocessable("Delighted", ["event_type"], "required: the webhook's event type, e.g. "
                            "survey_response.created")
    if event_type not in _RESPONSES:
        return Mapped(ignored=[event_type])
    problems = Problems("Delighted")
    response = as_object(payload.get("event_data"), ["event_data"], problems)
    problems.raise_if_any()
    assert response is not None
    survey_type = response.get("survey_type", "nps")  # (responses of accounts from before survey types: NPS)
    if not isinstance(survey_type, str):
        raise unprocessable("Delighted", ["event_data", "survey_type"], f"must be a string, got {kind_of(survey_type)}")
    response_id = as_id(response.get("id"), ["event_data", "id"], problems)
    occurred_at = from_epoch(response.get("created_at"), ["event_data", "created_at"], problems)
    score = response.get("score")
    if not isinstance(score, int | float) or isinstance(score, bool):
        problems.add(["event_data", "score"], "required: the response's score" if score is None
                     else f"must be a number, got {kind_of(score)}")
    person = response.get("person") if isinstance(response.get("person"), dict) else {}
    properties = response.get("person_properties")
    properties = properties if isinstance(properties, dict) else {}
    account = resolve_account(query, properties.get(options.account_field), options.accounts)
    if account is None:
        problems.add(["event_data", "person_properties", options.account_field],
                     f"no account: the response has no person property '{options.account_field}'; send it "
                     f"with the survey, set delighted.account_field, or add ?{ACCOUNT_PARAM}= to the webhook URL")
    problems.raise_if_any()
    assert response_id and occurred_at and account
    if survey_type not in _KINDS:
        return Mapped(ignored=[f"{event_type} ({survey_type})"])
    data: dict[str, Any] = {"source": _KINDS[survey_type], "score": score}
    comment = as_text(response.get("comment"), 10_000)
    if comment is not None:
        data["text"] = comment
    contact = as_id(person.get("email"), []) or as_id(person.get("id"), [])
    if contact is not None:
        data["contact_id"] = contact[:256]
    return Mapped(events=[{"id": f"delighted:{response_id}"[:128], "type": "sentiment", "account_id": account,
                           "occurred_at": occurred_at, "data": data}])
