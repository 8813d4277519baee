"""Acting from a message: the Slack buttons, reading a click back, Slack signatures, e-mail action tokens."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from services.alerts.domain import action_links, actions, slack_signature
from services.alerts.domain.content import render
from services.alerts.domain.targets import Target
from tests.domain.alerts.factories import NOW, make_risk
from tests.support.slack import validate_message

DM = Target(kind="slack_dm", address="U0DANA", receiver="csm")
MAIL = Target(kind="email", address="dana@vendor.example", receiver="csm")
URL = "https://churnsignal.example/"
SECRET = b"s" * 32
CRM = "https://crm.vendor.example/accounts/acme?tab=1&x=<y>"


def buttons(block: dict) -> dict[str, dict]:
    return {e["action_id"]: e for e in block["elements"]}


# -- the actions block ------------------------------------------------------------------------------------
def test_the_actions_block_carries_the_alert_id_on_every_button() -> None:
    block = actions.slack_actions(42, "https://cs.example/v1/accounts/acme/health", "https://crm.example/a/1")
    assert block["type"] == "actions"
    found = buttons(block)
    assert [e["text"]["text"] for e in block["elements"]] == ["Acknowledge", "Snooze 7 days", "Open account",
                                                               "Open in CRM"]
    assert {e["value"] for e in block["elements"]} == {"42"}
    assert found[actions.OPEN_ACCOUNT_ACTION]["url"] == "https://cs.example/v1/accounts/acme/health"
    assert found[actions.OPEN_CRM_ACTION]["url"] == "https://crm.example/a/1"
    assert "url" not in found[actions.ACK_ACTION] and "url" not in found[actions.SNOOZE_ACTION]
    assert validate_message({"text": "x", "blocks": [block]}) is None


def test_no_crm_button_without_a_crm_url_and_no_overlong_links() -> None:
    block = actions.slack_actions(7, "https://cs.example/" + "a" * 3100, None)
    assert [e["action_id"] for e in block["elements"]] == [actions.ACK_ACTION, actions.SNOOZE_ACTION]


def test_render_with_the_alert_id_adds_the_buttons_and_the_crm_link() -> None:
    risk = make_risk(risk_id="acme:usage_drop:9").model_copy(
        update={"account": make_risk().account.model_copy(update={"crm_url": CRM})})
    n = render(risk, DM, URL, alert_id=1234)
    block = next(b for b in n.slack_blocks if b["type"] == "actions")
    found = buttons(block)
    assert found[actions.ACK_ACTION]["value"] == "1234" != risk.risk_id
    assert found[actions.OPEN_ACCOUNT_ACTION]["url"] == n.link
    assert found[actions.OPEN_CRM_ACTION]["url"] == CRM
    assert validate_message(n.slack_payload()) is None
    assert f"Open in CRM: {CRM}" in n.email_text


def test_render_without_the_alert_id_keeps_the_single_link_button() -> None:
    n = render(make_risk(), DM, URL)
    block = next(b for b in n.slack_blocks if b["type"] == "actions")
    assert [e["text"]["text"] for e in block["elements"]] == ["Open account health"]


def test_email_carries_the_signed_links_escaped() -> None:
    links = action_links.action_links(SECRET, URL, 55, MAIL.address, now=NOW)
    n = render(make_risk(), MAIL, URL, alert_id=55, links=links)
    assert f"Acknowledge: {links.ack}" in n.email_text
    assert f"Snooze 7 days: {links.snooze}" in n.email_text
    assert links.ack.startswith("https://churnsignal.example/v1/alerts/55/actions/ack?t=")
    assert 'href="https://churnsignal.example/v1/alerts/55/actions/snooze?t=' in n.email_html


# -- reading a click ----------------------------------------------------------------------------------------
def click_payload(action_id: str = actions.ACK_ACTION, value: str = "42", user: str = "U0DANA") -> dict:
    return {"type": "block_actions", "user": {"id": user}, "response_url": "https://hooks.slack.com/actions/x",
            "actions": [{"action_id": action_id, "value": value, "block_id": actions.BLOCK_ID}]}


def test_parse_click() -> None:
    click = actions.parse_click(click_payload())
    assert click == actions.Click("ack", 42, "U0DANA", "https://hooks.slack.com/actions/x")
    assert actions.parse_click(click_payload(actions.SNOOZE_ACTION)).action == "snooze"
    assert actions.parse_click(click_payload(actions.OPEN_CRM_ACTION)) is None   # a URL button
    assert actions.parse_click({"type": "view_submission"}) is None


@pytest.mark.parametrize("payload", [click_payload(value="acme:usage_drop:1"), click_payload(value="0"),
                                     click_payload(user="<!channel>")])
def test_a_click_without_an_alert_id_or_user_is_refused(payload: dict) -> None:
    with pytest.raises(actions.BadPayload):
        actions.parse_click(payload)


def test_acted_message_keeps_the_links_and_drops_the_buttons() -> None:
    n = render(make_risk(), DM, URL, alert_id=3)
    message = actions.acted_message(n.slack_payload(), "Acknowledged by <@U0DANA>", "fallback")
    assert message["replace_original"] is True
    ids = [e.get("action_id") for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert ids == [actions.OPEN_ACCOUNT_ACTION]
    assert message["blocks"][-1]["text"]["text"] == "Acknowledged by <@U0DANA>"
    assert validate_message(message) is None


def test_mentions_only_for_slack_user_ids() -> None:
    assert actions.mention("slack:U0DANA") == "<@U0DANA>"
    assert actions.mention("ops <!here>") == "ops &lt;!here&gt;"


# -- Slack signatures -------------------------------------------------------------------------------------
BODY = b"payload=%7B%22type%22%3A%22block_actions%22%7D"


def test_a_signed_request_verifies() -> None:
    ts = str(int(time.time()))
    signature = slack_signature.sign(SECRET, ts, BODY)
    assert signature.startswith("v0=") and len(signature) == 67
    slack_signature.verify(SECRET, ts, signature, BODY, now=time.time())


def test_slacks_documented_example() -> None:
    # https://api.slack.com/authentication/verifying-requests-from-slack
    secret = b"8f742231b10e8888abcd99yyyzzz85a5"
    body = (b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&"
            b"channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&"
            b"response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZ"
            b"RskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
    expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    assert slack_signature.sign(secret, "1531420618", body) == expected
    slack_signature.verify(secret, "1531420618", expected, body, now=1531420618 + 10)


@pytest.mark.parametrize("case", ["tampered", "other_secret", "stale", "future", "missing", "garbage_ts"])
def test_bad_signatures_are_refused(case: str) -> None:
    now = time.time()
    ts = str(int(now))
    signature = slack_signature.sign(SECRET, ts, BODY)
    args = {"timestamp": ts, "signature": signature, "body": BODY, "secret": SECRET}
    if case == "tampered":
        args["body"] = BODY + b"x"
    elif case == "other_secret":
        args["secret"] = b"t" * 32
    elif case in ("stale", "future"):
        moved = str(int(now) + (-301 if case == "stale" else 301))
        args["timestamp"], args["signature"] = moved, slack_signature.sign(SECRET, moved, BODY)
    elif case == "missing":
        args["signature"] = None
    else:
        args["timestamp"] = "12ab"
    with pytest.raises(slack_signature.SignatureError) as err:
        slack_signature.verify(args["secret"], args["timestamp"], args["signature"], args["body"], now=now)
    assert SECRET.decode() not in str(err.value)


# -- e-mail action tokens -----------------------------------------------------------------------------------
def test_an_action_token_acts_on_its_alert_and_action_only() -> None:
    token = action_links.sign_action(SECRET, 9, "ack", "dana@vendor.example", now=NOW)
    claims = action_links.verify_action(SECRET, token, alert_id=9, action="ack", now=NOW + timedelta(days=6))
    assert claims.receiver == "dana@vendor.example" and claims.expires_at == NOW + timedelta(days=7)
    for alert_id, action in ((10, "ack"), (9, "snooze")):
        with pytest.raises(action_links.ActionLinkError) as err:
            action_links.verify_action(SECRET, token, alert_id=alert_id, action=action, now=NOW)
        assert err.value.reason == "mismatch"


def test_expired_forged_and_malformed_tokens() -> None:
    token = action_links.sign_action(SECRET, 9, "snooze", "dana@vendor.example", now=NOW)
    cases = {
        "expired": (SECRET, token, NOW + timedelta(days=7)),
        "forged": (b"k" * 32, token, NOW),
        "malformed": (SECRET, "not-a-token", NOW),
    }
    for reason, (secret, tok, now) in cases.items():
        with pytest.raises(action_links.ActionLinkError) as err:
            action_links.verify_action(secret, tok, alert_id=9, action="snooze", now=now)
        assert err.value.reason == reason
    payload, signature = token.split(".")
    with pytest.raises(action_links.ActionLinkError) as err:  # the payload changed, the signature kept
        action_links.verify_action(SECRET, payload[:-2] + "xx." + signature, alert_id=9, action="snooze", now=NOW)
    assert err.value.reason in ("forged", "malformed")


def test_a_page_link_does_not_act() -> None:
    from shared.links import sign_account_link

    page = sign_account_link(SECRET, "acme", "dana@vendor.example", now=NOW)
    with pytest.raises(action_links.ActionLinkError) as err:
        action_links.verify_action(SECRET, page, alert_id=9, action="ack", now=NOW)
    assert err.value.reason == "malformed"
