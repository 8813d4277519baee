"""The OpenAPI description of `POST /v1/events`, built from the one event schema (`shared.events`).

The endpoint is a plain ASGI app that reads its body itself (fast path, exact error locations), so
FastAPI cannot infer the operation; it is declared here instead, precise enough that a schema-driven
fuzzer generates events ingest accepts and mutations it rejects. Data models come from their pydantic
JSON schema; the rules pydantic checks in code (sentiment score range per source, score or text; an
account's `lifecycle_at` only with its `lifecycle`) are added by hand.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from shared.events import DATA_MODELS, SENTIMENT_RANGES, Envelope, EventType

SECURITY_SCHEME = "bearerAuth"
# Sources whose score must be a whole number (SentimentData._score_or_text).
_WHOLE_SCORE_SOURCES = ("nps", "csat")


class Accepted(BaseModel):
    accepted: int = Field(description="Events published (all of the request)", ge=0)


class ErrorBody(BaseModel):
    """Every error answer: `error` says what is wrong; some carry details (`line`, `types`, ...)."""

    model_config = ConfigDict(extra="allow")
    error: str


class EventProblem(BaseModel):
    index: int = Field(description="Position of the event in the request (NDJSON: among its events)")
    loc: list[str | int] = Field(description="Path to the offending field inside the event")
    msg: str


class InvalidEvents(BaseModel):
    model_config = ConfigDict(extra="allow")
    error: str
    errors: list[EventProblem]


DESCRIPTION = """Publish events to Kafka. The answer is `202 {"accepted": n}` only once Kafka has
acknowledged every event of the request (`acks=all`, idempotent producer); a request with any invalid
or forbidden event publishes nothing. Retry on 503 after `Retry-After` seconds: event ids are
idempotency keys, so a retried event counts once."""

_RESPONSES: dict[str, tuple[type[BaseModel], str, dict[str, Any]]] = {
    "202": (Accepted, "Every event of the request was acknowledged by Kafka", {}),
    "400": (ErrorBody, "Not JSON / NDJSON (says where it broke), or no event at all", {}),
    "401": (ErrorBody, "Missing or unknown API key",
            {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}}),
    "403": (ErrorBody, "The key lacks the scope for an event type of the request", {}),
    "413": (ErrorBody, "Body (even decompressed) over the limit, or too many events", {}),
    "415": (ErrorBody, "Unsupported Content-Type, charset or Content-Encoding", {}),
    "422": (InvalidEvents, "Every invalid event, located; nothing was published", {}),
    "503": (ErrorBody, "Kafka unavailable: nothing acknowledged, retry later",
            {"Retry-After": {"schema": {"type": "integer"}, "required": True,
                             "description": "Seconds to wait before retrying"}}),
}


def operation() -> dict[str, Any]:
    """The OpenAPI operation object of `POST /v1/events`."""
    responses = {}
    for status, (model, description, headers) in _RESPONSES.items():
        response: dict[str, Any] = {"description": description, "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
        if headers:
            response["headers"] = headers
        responses[status] = response
    return {"tags": ["events"], "summary": "Send events (one, a JSON array, or NDJSON)",
            "description": DESCRIPTION, "operationId": "post_events", "requestBody": request_body(),
            "responses": responses, "security": [{SECURITY_SCHEME: []}]}


def _response_schemas() -> dict[str, dict[str, Any]]:
    _, top = models_json_schema([(m, "serialization") for m in (Accepted, ErrorBody, InvalidEvents)],
                                ref_template="#/components/schemas/{model}")
    return top["$defs"]


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its `$defs` references resolved in place (no `title` noise)."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()
                    if k != "$defs" and not (k == "title" and isinstance(v, str))}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def _sentiment_rules() -> list[dict[str, Any]]:
    score_or_text = {"anyOf": [
        {"required": ["score"], "properties": {"score": {"type": "number"}}},
        {"required": ["text"], "properties": {"text": {"type": "string", "minLength": 1}}},
    ]}
    by_source = []
    for source, (low, high) in SENTIMENT_RANGES.items():
        kind = "integer" if source in _WHOLE_SCORE_SOURCES else "number"
        by_source.append({"properties": {
            "source": {"const": source},
            "score": {"anyOf": [{"type": kind, "minimum": low, "maximum": high}, {"type": "null"}]},
        }})
    return [score_or_text, {"oneOf": by_source}]


def _account_rules() -> list[dict[str, Any]]:
    """AccountData._lifecycle_at_needs_lifecycle: `lifecycle_at` (not null) only with a `lifecycle`."""
    return [{"anyOf": [
        {"properties": {"lifecycle_at": {"type": "null"}}},
        {"required": ["lifecycle"], "properties": {"lifecycle": {"type": "string"}}},
    ]}]


# docs/events.md / shared.events: no string of an event, key or value, at any depth, may hold U+0000.
_NO_NUL = "^[^\\u0000]*$"
_JSON_VALUE = "JsonValue"


def _nul_free(node: Any) -> Any:
    """A schema with the U+0000 rule spelled out: a pattern on every free-text string, and the unknown keys
    an object keeps (`additionalProperties: true`) narrowed to NUL-free names and JSON values."""
    if isinstance(node, list):
        return [_nul_free(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nul_free(v) for k, v in node.items()}
    if out.get("type") == "string" and not {"pattern", "enum", "const", "format"} & out.keys():
        out["pattern"] = _NO_NUL
    if out.get("type") == "object" and out.get("additionalProperties") is True:
        out["propertyNames"] = {"pattern": _NO_NUL}
        out["additionalProperties"] = {"$ref": f"#/components/schemas/{_JSON_VALUE}"}
    return out


def _json_value_schema() -> dict[str, Any]:
    """Any JSON value whose strings and keys hold no U+0000 (what an unknown `data` key may carry)."""
    ref = {"$ref": f"#/components/schemas/{_JSON_VALUE}"}
    return {"anyOf": [{"type": ["null", "boolean", "number"]},
                      {"type": "string", "pattern": _NO_NUL},
                      {"type": "array", "items": ref},
                      {"type": "object", "propertyNames": {"pattern": _NO_NUL}, "additionalProperties": ref}]}


def _data_name(kind: EventType) -> str:
    return f"{kind.value.capitalize()}Data"


def _event_name(kind: EventType) -> str:
    return f"{kind.value.capitalize()}Event"


def component_schemas(max_events: int) -> dict[str, dict[str, Any]]:
    """Schemas to add under `components/schemas`: each data model, each event type, Event, EventList."""
    envelope = _nul_free(_inline(Envelope.model_json_schema())["properties"])
    out: dict[str, dict[str, Any]] = {_JSON_VALUE: _json_value_schema()}
    for kind, model in DATA_MODELS.items():
        data = _nul_free(_inline(model.model_json_schema()))
        if kind is EventType.SENTIMENT:
            data["allOf"] = _sentiment_rules()
        elif kind is EventType.ACCOUNT:
            data["allOf"] = _account_rules()
        out[_data_name(kind)] = data
        out[_event_name(kind)] = {
            "type": "object",
            "description": f"A `{kind.value}` event (see docs/events.md). Unknown top-level fields are rejected.",
            "additionalProperties": False,
            "required": ["id", "type", "account_id", "occurred_at", "data"],
            "properties": {
                "id": {**envelope["id"], "description": "Chosen by the sender; the idempotency key"},
                "type": {"const": kind.value},
                "account_id": envelope["account_id"],
                "occurred_at": {**envelope["occurred_at"],
                                "description": "RFC 3339 with offset; at most 5 minutes in the future"},
                "data": {"$ref": f"#/components/schemas/{_data_name(kind)}"},
            },
        }
    out["Event"] = {"oneOf": [{"$ref": f"#/components/schemas/{_event_name(k)}"} for k in DATA_MODELS]}
    out["EventList"] = {"type": "array", "minItems": 1, "maxItems": max_events,
                        "items": {"$ref": "#/components/schemas/Event"}}
    return out


def request_body() -> dict[str, Any]:
    return {
        "required": True,
        "description": "One event, a JSON array of events, or NDJSON (one event per line). "
                       "`Content-Encoding: gzip` is accepted; the size limit applies once decompressed too. "
                       "CloudEvents 1.0 are accepted too (`application/cloudevents+json`, "
                       "`application/cloudevents-batch+json`, or binary mode with `ce-*` headers): see "
                       "docs/events.md, \"CloudEvents\".",
        "content": {
            "application/json": {"schema": {"oneOf": [{"$ref": "#/components/schemas/Event"},
                                                      {"$ref": "#/components/schemas/EventList"}]}},
            "application/x-ndjson": {"schema": {"$ref": "#/components/schemas/EventList"}},
        },
    }


def install_openapi(app: FastAPI, *, path: str, max_events: int) -> None:
    """Generate the app's OpenAPI document once, with the events operation, its schemas and the bearer
    scheme added to what FastAPI infers from its own routes."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema.setdefault("paths", {})[path] = {"post": operation()}
            components = schema.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            schemas.update(_response_schemas())
            schemas.update(component_schemas(max_events))
            components["securitySchemes"] = {SECURITY_SCHEME: {
                "type": "http", "scheme": "bearer",
                "description": "An API key with scope `ingest` (every type) or `ingest:<type>`"}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
