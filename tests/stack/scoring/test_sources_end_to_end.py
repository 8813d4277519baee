"""Vendor webhooks end to end (on the embedded default and on the real Kafka + PostgreSQL): each vendor's
documented payloads, posted with valid signatures to a running ingest, become the tickets and answers scoring
keeps for the account (its state and health history), and a replayed delivery counts once.

The accounts are found the documented ways: Zendesk's organization through the `zendesk.accounts` map and
HubSpot's tickets through `hubspot.accounts` (a sources file), the others by `?account_id=` on the URL. The
documented payloads span 2016 to 2025 and a partition's event-time clock carries every account of it to its
newest event, so each vendor's account sits on a partition of its own and keeps its own time."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.ingest.bootstrap import create_app
from services.scoring.domain.codec import decode_state
from services.scoring.domain.state import AccountState
from shared.metrics import new_registry
from tests.stack.ingest.test_sources import fixture, settings_with_secrets, webhook
from tests.stack.scoring.events import accounts_on_partition
from tests.stack.scoring.harness import Stack, database_contents, running, wait_caught_up

ACCOUNT = {source: accounts_on_partition(partition, 1, source)[0]
           for partition, source in enumerate(("zendesk", "intercom", "hubspot", "typeform", "delighted"))}
SOURCES_FILE = f"""\
zendesk:
  accounts: {{"8447346622462": {ACCOUNT["zendesk"]}}}
hubspot:
  accounts: {{1246990: {ACCOUNT["hubspot"]}, 1246991: {ACCOUNT["hubspot"]}}}
"""
# (source, fixture, query) in delivery order; every replay is a second delivery of the same payload.
DELIVERIES = [
    ("zendesk", "ticket_created.json", ""),
    ("zendesk", "ticket_created.json", ""),                   # replayed
    ("zendesk", "ticket_priority_changed.json", ""),
    ("zendesk", "user_active_changed.json", ""),             # ignored
    ("intercom", "conversation_user_created.json", f"account_id={ACCOUNT['intercom']}"),
    ("intercom", "conversation_user_created.json", f"account_id={ACCOUNT['intercom']}"),  # replayed
    ("intercom", "ping.json", ""),                           # ignored
    ("hubspot", "ticket_events.json", ""),
    ("hubspot", "ticket_events.json", ""),                   # replayed (HubSpot's retry: same eventIds)
    ("hubspot", "contact_events.json", ""),                  # ignored
    ("typeform", "form_response.json", f"account_id={ACCOUNT['typeform']}"),
    ("typeform", "form_response.json", f"account_id={ACCOUNT['typeform']}"),  # replayed
    ("delighted", "survey_response_created.json", f"account_id={ACCOUNT['delighted']}"),
    ("delighted", "survey_response_updated.json", f"account_id={ACCOUNT['delighted']}"),  # the same answer, updated
]
EVENT_IDS = {
    "zendesk:cbe4028c-7239-495d-b020-f22348516046", "zendesk:b7c8d9e0-1f2a-3b4c-5d6e-7f8a9b0c1d2e",
    "intercom:notif_3ac27816-d27c-45fd-a65a-bbaf021cf780",
    "hubspot:3816279500", "hubspot:3816279501", "hubspot:3816279502", "hubspot:3816279503",
    "typeform:a3a12ec67a1365927098a606107fac15", "delighted:5435",
}
PRIORITY = {"low": 0, "normal": 1, "high": 2, "urgent": 3}  # the state's priority index (engine.PRIORITIES)


@contextlib.asynccontextmanager
async def _ingest(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(stack.settings, bus=stack.bus, registry=new_registry())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest.test") as client:
            yield client


def _state(contents: dict[str, Any], account_id: str) -> AccountState:
    return decode_state(contents["accounts"][account_id]["state"])


def _component(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in snapshot["components"] if c["name"] == name)


@pytest.fixture
def with_sources(stack: Stack, tmp_path: Path) -> Stack:
    path = tmp_path / "sources.yaml"
    path.write_text(SOURCES_FILE)
    return Stack(stack.kind, stack.bus, settings_with_secrets(stack.settings, sources_file=str(path)))


async def test_vendor_payloads_become_tickets_and_answers_in_scoring_once(with_sources: Stack):
    stack = with_sources
    async with running(stack) as rt, _ingest(stack) as client:
        for source, name, query in DELIVERIES:
            raw = fixture(source, name)
            path, headers = webhook(source, raw, query)
            response = await client.post(path, content=raw, headers=headers)
            assert response.status_code in (200, 202), (source, name, response.text)
        await wait_caught_up(stack, rt)
    contents = await database_contents(stack.settings.database_url)
    assert contents["processed"] == EVENT_IDS

    # Zendesk: ticket 5158 opened (delivered twice, counted once), then raised to urgent.
    zendesk = _state(contents, ACCOUNT["zendesk"])
    assert sum(zendesk.tickets_opened) == 1
    assert [rec[0] for rec in zendesk.open_tickets.values()] == [PRIORITY["urgent"]]
    # Intercom: conversation 367 opened as a priority conversation (delivered twice).
    intercom = _state(contents, ACCOUNT["intercom"])
    assert sum(intercom.tickets_opened) == 1
    assert [rec[0] for rec in intercom.open_tickets.values()] == [PRIORITY["high"]]
    # HubSpot: two tickets opened, one raised to high, the other closed (the batch delivered twice).
    hubspot = _state(contents, ACCOUNT["hubspot"])
    assert sum(hubspot.tickets_opened) == 2
    assert [rec[0] for rec in hubspot.open_tickets.values()] == [PRIORITY["high"]]
    # Typeform: one NPS answer of 2; Delighted: one NPS answer of 9, not two (created, then updated).
    typeform = _state(contents, ACCOUNT["typeform"])
    assert [(sample[3], sample[4]) for sample in typeform.sentiments] == [(0, 20)]  # (nps, score * 10)
    delighted = _state(contents, ACCOUNT["delighted"])
    assert [(sample[3], sample[4]) for sample in delighted.sentiments] == [(0, 90)]

    # The health history shows them: support load from the open tickets, sentiment from the answers.
    support = _component(contents["history"][ACCOUNT["zendesk"]][-1], "support_load")
    assert support["score"] is not None and "1 open ticket (1 urgent)" in support["reason"]
    support = _component(contents["history"][ACCOUNT["hubspot"]][-1], "support_load")
    # (a history row is written when the score moves: closing the second ticket did not move it)
    assert "(1 high)" in support["reason"] and "2 opened in 7 days" in support["reason"]
    sentiment = _component(contents["history"][ACCOUNT["delighted"]][-1], "sentiment")
    assert sentiment["score"] is not None and "over 1 answer" in sentiment["reason"]
    sentiment = _component(contents["history"][ACCOUNT["typeform"]][-1], "sentiment")
    assert "1 detractor" in sentiment["reason"]
    assert set(contents["accounts"]) == set(ACCOUNT.values())
