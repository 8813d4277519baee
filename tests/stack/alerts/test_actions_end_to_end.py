"""Acting from the message, end to end on both stacks: a signed Slack click acknowledges (and the message is
replaced through its response_url) or snoozes (a silence; the reminders stop); a bad signature, a stale
timestamp or a replay is refused with 401 and changes nothing; e-mail links confirm on GET and act on POST."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import sqlalchemy as sa

from services.alerts.adapters import tables as t
from services.alerts.domain import actions, slack_signature
from tests.stack.alerts.conftest import RunningApp, Stack, make_risk

SIGNING = "8f742231b10e8888abcd99yyyzzz85a5"
LINK_SECRET = "link-secret-for-the-tests-0123456789"
ROUTING = """
route:
  receiver: csm
  repeat_interval: 1s
  group_wait: 0s
"""


async def start(stack: Stack) -> RunningApp:
    return await stack.start(slack_signing_secret=SIGNING, link_secret=LINK_SECRET,
                             routing_file=stack.routing_file(ROUTING))


def buttons_of(message: Any) -> dict[str, dict[str, Any]]:
    return {e["action_id"]: e for b in message.blocks if b["type"] == "actions" for e in b["elements"]}


def click_body(message: Any, action_id: str, response_url: str, user: str = "U100") -> bytes:
    button = buttons_of(message)[action_id]
    payload = {"type": "block_actions", "user": {"id": user, "username": "ada"},
               "actions": [{"action_id": action_id, "block_id": actions.BLOCK_ID, "value": button["value"],
                            "type": "button"}],
               "response_url": response_url, "message": message.payload}
    return urlencode({"payload": json.dumps(payload)}).encode()


def signed(body: bytes, *, ts: int | None = None, secret: str = SIGNING) -> dict[str, str]:
    stamp = str(int(time.time()) if ts is None else ts)
    return {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": slack_signature.sign(secret.encode(), stamp, body)}


async def db_state(stack: Stack) -> dict[str, list[tuple[Any, ...]]]:
    from shared.db import create_engine

    engine = create_engine(stack.database_url)
    try:
        async with engine.connect() as conn:
            return {
                name: [tuple(r) for r in await conn.execute(sa.select(table).order_by(*table.primary_key))]
                for name, table in (("alerts", t.alerts), ("silences", t.silences), ("states", t.states))
            }
    finally:
        await engine.dispose()


async def first_message(stack: Stack, app: RunningApp) -> Any:
    await stack.publish(make_risk("acct-1", type_="usage_drop"))
    await app.wait_idle()
    [message] = await stack.slack.wait_for(1, "U100")
    return message


async def test_a_signed_acknowledge_click_acks_and_replaces_the_message(stack: Stack):
    app = await start(stack)
    message = await first_message(stack, app)
    buttons = buttons_of(message)
    alert_id = int(buttons[actions.ACK_ACTION]["value"])
    alert = (await app.http.get(f"/v1/alerts/{alert_id}")).json()
    assert alert["risk_id"] == "acct-1:usage_drop:1" and alert["status"] == "open"
    assert "/ui/accounts/acct-1?t=" in buttons[actions.OPEN_ACCOUNT_ACTION]["url"]   # a signed page link

    url = stack.slack.response_url()
    body = click_body(message, actions.ACK_ACTION, url)
    answer = await app.http.post("/v1/slack/interactions", content=body, headers=signed(body))
    assert answer.status_code == 200, answer.text
    alert = (await app.http.get(f"/v1/alerts/{alert_id}")).json()
    assert alert["status"] == "acked" and alert["acked_by"] == "slack:U100"
    [response] = stack.slack.responses()
    assert response.url == url and response.payload["replace_original"] is True
    assert "Acknowledged by <@U100>" in response.text
    assert actions.ACK_ACTION not in {e.get("action_id") for b in response.payload["blocks"]
                                      if b["type"] == "actions" for e in b["elements"]}
    # Acknowledged: no reminder follows.
    await asyncio.sleep(1.6)
    assert len(stack.slack.messages("U100")) == 1


async def test_snooze_creates_a_silence_and_the_reminders_stop(stack: Stack):
    app = await start(stack)
    message = await first_message(stack, app)
    url = stack.slack.response_url()
    body = click_body(message, actions.SNOOZE_ACTION, url, user="U200")
    answer = await app.http.post("/v1/slack/interactions", content=body, headers=signed(body))
    assert answer.status_code == 200, answer.text
    [silence] = (await app.http.get("/v1/silences", params={"account_id": "acct-1"})).json()["items"]
    assert silence["types"] == ["usage_drop"] and silence["created_by"] == "slack:U200" and silence["active"]
    assert "Snoozed for 7 days by <@U200>" in stack.slack.responses()[0].text
    alert_id = int(buttons_of(message)[actions.ACK_ACTION]["value"])
    assert (await app.http.get(f"/v1/alerts/{alert_id}")).json()["status"] == "open"   # not acknowledged
    # The repeat sweep runs every 0.2 s and the route repeats after 1 s: nothing more comes.
    await asyncio.sleep(2.0)
    assert len(stack.slack.messages("U100")) == 1


async def test_without_the_snooze_the_reminder_comes(stack: Stack):
    """(The control for the test above: the same route does remind.)"""
    app = await start(stack)
    await first_message(stack, app)
    messages = await stack.slack.wait_for(2, "U100", timeout_s=5)
    assert messages[1].text.startswith("Reminder: ")


async def test_bad_signature_stale_timestamp_and_replay_are_refused_and_change_nothing(stack: Stack):
    app = await start(stack)
    message = await first_message(stack, app)
    url = stack.slack.response_url()
    body = click_body(message, actions.ACK_ACTION, url)
    before = await db_state(stack)
    refused = [
        signed(body, secret="another-secret-entirely-000000"),       # bad signature
        signed(body, ts=int(time.time()) - 6 * 60),                   # stale timestamp
        {**signed(body), "X-Slack-Signature": "v0=" + "0" * 64},      # forged
        {"Content-Type": "application/x-www-form-urlencoded"},        # unsigned
    ]
    for headers in refused:
        answer = await app.http.post("/v1/slack/interactions", content=body, headers=headers)
        assert answer.status_code == 401, (headers, answer.text)
        assert SIGNING not in answer.text
    assert await db_state(stack) == before
    assert stack.slack.responses() == []

    # A valid click acts once; the very same request again is a replay.
    headers = signed(body)
    assert (await app.http.post("/v1/slack/interactions", content=body, headers=headers)).status_code == 200
    after = await db_state(stack)
    assert after != before
    replay = await app.http.post("/v1/slack/interactions", content=body, headers=headers)
    assert replay.status_code == 401 and "replay" in replay.json()["error"]
    assert await db_state(stack) == after
    assert len(stack.slack.responses()) == 1


async def test_a_click_on_an_unknown_alert_gets_an_ephemeral_answer(stack: Stack):
    app = await start(stack)
    message = await first_message(stack, app)
    before = await db_state(stack)
    payload = {"type": "block_actions", "user": {"id": "U100"}, "response_url": stack.slack.response_url(),
               "actions": [{"action_id": actions.ACK_ACTION, "value": "999999"}], "message": message.payload}
    body = urlencode({"payload": json.dumps(payload)}).encode()
    answer = await app.http.post("/v1/slack/interactions", content=body, headers=signed(body))
    assert answer.status_code == 200
    assert answer.json()["response_type"] == "ephemeral" and "999999" in answer.json()["text"]
    [response] = stack.slack.responses()
    assert response.payload["response_type"] == "ephemeral" and response.payload["replace_original"] is False
    assert {k: v for k, v in (await db_state(stack)).items()} == before


async def test_without_a_signing_secret_the_endpoint_says_so(stack: Stack):
    app = await stack.start()
    answer = await app.http.post("/v1/slack/interactions", content=b"payload=%7B%7D",
                                 headers=signed(b"payload=%7B%7D"))
    assert answer.status_code == 503 and "CHURNSIGNAL_SLACK_SIGNING_SECRET" in answer.json()["error"]


async def test_email_links_confirm_on_get_and_act_on_post(stack: Stack):
    app = await stack.start(slack_signing_secret=SIGNING, link_secret=LINK_SECRET,
                            fallback_email="cs-leads@example.com")
    await stack.publish(make_risk("acct-2", type_="ticket_spike", csm=None))
    await app.wait_idle()
    [mail] = await stack.smtp.wait_for(1)
    text = mail.text_part() or ""
    ack = next(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("Acknowledge: "))
    snooze = next(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("Snooze 7 days: "))
    ack_url = urlsplit(ack)
    alert_id = int(ack_url.path.split("/")[3])
    token = parse_qs(ack_url.query)["t"][0]

    before = await db_state(stack)
    page = await app.http.get(f"{ack_url.path}?{ack_url.query}", headers={"Authorization": ""})
    assert page.status_code == 200 and "<form method=\"post\"" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert await db_state(stack) == before      # a GET (a mail scanner) changes nothing
    forged = await app.http.post(ack_url.path, content=urlencode({"t": token[:-3] + "AAA"}),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert forged.status_code == 403 and await db_state(stack) == before
    wrong = await app.http.post(urlsplit(snooze).path, content=urlencode({"t": token}),
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert wrong.status_code == 403 and await db_state(stack) == before   # an ack token does not snooze

    done = await app.http.post(ack_url.path, content=urlencode({"t": token}),
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert done.status_code == 200 and "Acknowledged" in done.text
    alert = (await app.http.get(f"/v1/alerts/{alert_id}")).json()
    assert alert["status"] == "acked" and alert["acked_by"].startswith("email:")
