"""Property: no input makes ingest answer 500, and only a 202 publishes anything (exactly its events).

Arbitrary bytes, arbitrary JSON, near-valid events with mutated fields, valid events, NDJSON, gzip
(valid, truncated, bombs), and arbitrary Content-Type / Content-Encoding / Authorization headers,
mostly plausible so that every layer of checks is reached.
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from services.ingest.bootstrap import create_app
from shared.bus.memory import MemoryBus
from shared.settings import Settings
from shared.topics import Topics
from tests.conftest import ADMIN_KEY, INGEST_KEY, READ_KEY, USAGE_ONLY_KEY
from tests.conftest import test_api_keys as api_keys
from tests.stack.ingest.conftest import running
from tests.stack.ingest.strategies import GZIP_BOMB, HEADER_TEXT, payloads

PREFIX = "fuzz."


def mostly(good: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` 3 times in 4, else `odd`."""
    return st.integers(0, 3).flatmap(lambda n: good if n else odd)


content_types = mostly(st.sampled_from(["application/json", "application/x-ndjson"]), st.none() | HEADER_TEXT
                       | st.sampled_from(["application/ndjson", "application/json; charset=utf-8",
                                          "application/json; charset=latin-1", "APPLICATION/JSON",
                                          "application/vnd.api+json", "text/plain", "", ";",
                                          "application/json;charset", "multipart/form-data"]))
encodings = mostly(st.sampled_from([None, "gzip"]), HEADER_TEXT | st.sampled_from(
    ["identity", "x-gzip", "GZIP", "br", "", "gzip, gzip", "deflate"]))
authorizations = mostly(st.sampled_from([f"Bearer {k}" for k in (INGEST_KEY, USAGE_ONLY_KEY, ADMIN_KEY)]),
                        HEADER_TEXT | st.sampled_from([None, f"Bearer {READ_KEY}", "Bearer", "Bearer  ",
                                                       f"bearer {INGEST_KEY}", "Basic x"]))


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    body = draw(payloads)
    encoding = draw(encodings)
    if encoding is not None and "gzip" in encoding.lower():
        body = draw(st.sampled_from([gzip.compress(body), gzip.compress(body)[: max(1, len(body) // 2)],
                                     GZIP_BOMB]))
    headers = {}
    for name, value in (("Content-Type", draw(content_types)), ("Content-Encoding", encoding),
                        ("Authorization", draw(authorizations))):
        if value is not None:
            headers[name] = value
    return body, headers


@pytest.fixture
async def fuzzed() -> AsyncIterator[tuple[httpx.AsyncClient, MemoryBus]]:
    """One app for every example (the point is that no request can break it)."""
    bus = MemoryBus()
    app = create_app(Settings(api_keys=api_keys(), topic_prefix=PREFIX), bus=bus)
    async with running(app) as client:
        yield client, bus


def published(bus: MemoryBus) -> int:
    return sum(len(bus.records(t)) for t in Topics(PREFIX).all)


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(request=requests())
async def test_no_input_is_a_server_error_and_only_202_publishes(
        fuzzed: tuple[httpx.AsyncClient, MemoryBus], request: tuple[bytes, dict[str, str]]) -> None:
    client, bus = fuzzed
    body, headers = request
    before = published(bus)
    resp = await client.post("/v1/events", content=body, headers=headers)
    event(f"status {resp.status_code}")
    assert resp.status_code < 500, resp.text
    assert resp.headers["content-type"] == "application/json"
    published_now = published(bus) - before
    if resp.status_code == 202:
        assert published_now == resp.json()["accepted"] >= 1
    else:
        assert resp.status_code in (400, 401, 403, 413, 415, 422), resp.text
        assert resp.json()["error"]
        assert published_now == 0
