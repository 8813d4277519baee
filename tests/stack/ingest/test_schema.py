"""Schema-driven fuzzing of ingest's OpenAPI description with every schemathesis check.

Positive cases (valid per the published schema) must be accepted, negative ones (any mutation:
wrong types, missing or unknown fields, out-of-range values, ...) rejected with a documented 4xx, and
every answer must match its declared status, headers and body schema.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from services.ingest.bootstrap import create_app
from shared.bus.memory import MemoryBus
from shared.events import EventType
from shared.settings import Settings
from tests.conftest import INGEST_KEY
from tests.conftest import test_api_keys as api_keys

PAST_DATE_TIME = "churnsignal-past-date-time"
_ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
# docs/events.md: any past time is fine, more than 5 minutes in the future is not. JSON Schema cannot say
# "not in the future", so the test draws `occurred_at` from the past, under a format name of its own
# (overriding "date-time" itself would leak into other schema tests of the same session).
schemathesis.openapi.format(PAST_DATE_TIME, st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2025, 12, 31), timezones=st.sampled_from(_ZONES),
).map(lambda d: d.isoformat().replace("+00:00", "Z")))


@schemathesis.serializer("application/x-ndjson")
def _ndjson(_: Any, value: Any) -> bytes:
    items = value if isinstance(value, list) else [value]
    return "\n".join(json.dumps(item, separators=(",", ":")) for item in items).encode()


def _with_past_timestamps(document: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(document)
    schemas = document["components"]["schemas"]
    for kind in EventType:
        occurred_at = schemas[f"{kind.value.capitalize()}Event"]["properties"]["occurred_at"]
        assert occurred_at["format"] == "date-time"
        occurred_at["format"] = PAST_DATE_TIME
    return document


app = create_app(Settings(api_keys=api_keys(), topic_prefix="schemathesis."), bus=MemoryBus())
schema = schemathesis.openapi.from_dict(_with_past_timestamps(app.openapi()))
schema.app = app
schema.location = "/openapi.json"
schema.config.generation.update(max_examples=120)
# 413 is the documented answer to "more than 1,000 events" (the schema's maxItems).
_rejection = schema.config.checks.negative_data_rejection
_rejection.expected_statuses = [*_rejection.expected_statuses, "413"]


@schema.parametrize()
@hypothesis_settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_ingest_conforms_to_its_openapi_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {INGEST_KEY}"})
