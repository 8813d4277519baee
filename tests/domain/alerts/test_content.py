"""Rendering: the facts a CSM needs, inside Slack's limits, with user text escaped for each medium."""

from __future__ import annotations

import json
import re

import pytest

from services.alerts.domain.content import (
    FALLBACK_TEXT_MAX,
    Notification,
    escape_mrkdwn,
    header_safe,
    mrkdwn,
    render,
)
from services.alerts.domain.targets import Target
from tests.domain.alerts.factories import make_risk
from tests.support.slack import SPECIAL_TOKEN, message_texts, validate_message

DM = Target(kind="slack_dm", address="U0DANA", receiver="csm")
MAIL = Target(kind="email", address="dana@vendor.example", receiver="csm")
URL = "https://churnsignal.example/"
HOSTILE = "Usage fell <!channel> <!here> <@U0BOSS> see <http://evil.example|click here> & <#C0GENERAL>"


def slack_texts(n: Notification) -> list[str]:
    return message_texts(n.text, n.slack_blocks)


def test_slack_message_has_the_facts() -> None:
    n = render(make_risk(), DM, URL)
    everything = "\n".join(slack_texts(n))
    for fact in ("Acme Corp", "High", "Usage drop", "Weekly active users fell 62%", "38/100 (red)",
                 "-18: usage trend", "Drop pct: 62", "Weekly active users: 31", "$120,000", "2025-05-01"):
        assert fact in everything, fact
    buttons = [e for b in n.slack_blocks if b["type"] == "actions" for e in b["elements"]]
    assert buttons[0]["url"] == "https://churnsignal.example/ui/accounts/acme"
    assert validate_message(n.slack_payload()) is None
    assert n.dedup_key == "acme:usage_drop:1:1|slack_dm:U0DANA|opened"
    assert n.source_received_at is not None


def test_account_id_is_url_encoded_in_the_link() -> None:
    n = render(make_risk(account_id="acme/eu west?x=1#y"), DM, URL)
    assert n.link == "https://churnsignal.example/ui/accounts/acme%2Feu%20west%3Fx%3D1%23y"


def test_injected_mentions_and_links_arrive_escaped() -> None:
    risk = make_risk(summary=HOSTILE, name="<!everyone> Corp", evidence={"note": "<https://x.example|y>"},
                     reasons=["<@U0BOSS> said so"])
    n = render(risk, DM, URL)
    for text in slack_texts(n):
        assert SPECIAL_TOKEN.search(text) is None, text
    section = n.slack_blocks[1]["text"]["text"]
    assert section.startswith("Usage fell &lt;!channel&gt; &lt;!here&gt; &lt;@U0BOSS&gt;")
    assert "&lt;http://evil.example|click here&gt; &amp; &lt;#C0GENERAL&gt;" in section


def test_escape_mrkdwn_drops_control_characters() -> None:
    assert escape_mrkdwn("a&b<c>d\x00\x1b[31m\n") == "a&amp;b&lt;c&gt;d[31m\n"


def test_ten_thousand_characters_are_truncated_inside_limits() -> None:
    long = "x" * 10_000
    risk = make_risk(summary=long, name="N" * 400, evidence={f"k{i}": "v" * 5000 for i in range(20)},
                     reasons=["r" * 5000] * 10)
    n = render(risk, DM, URL)
    assert validate_message(n.slack_payload()) is None
    header = n.slack_blocks[0]["text"]["text"]
    assert len(header) <= 150 and header.endswith("…")
    section = n.slack_blocks[1]["text"]["text"]
    assert len(section) == 3000 and section.endswith("…")
    assert len(n.text) <= FALLBACK_TEXT_MAX and n.text.endswith("…")
    assert len(n.slack_blocks) <= 50
    for block in n.slack_blocks:
        for field in block.get("fields", []):
            assert len(field["text"]) <= 2000
    assert len(n.email_subject) <= 200


def test_truncation_never_cuts_an_escape_sequence() -> None:
    out = mrkdwn("&" * 5000, 3000)
    assert len(out) <= 3000 and out.endswith("…")
    assert re.fullmatch(r"(&amp;)+…", out)


def test_email_subject_has_no_line_breaks() -> None:
    risk = make_risk(name="Acme\r\nBcc: everyone@vendor.example\nX-Injected: 1\u2028Evil\x85Corp\x0b")
    n = render(risk, MAIL, URL)
    assert not re.search(r"[\r\n\x0b\x0c\x85\u2028\u2029]", n.email_subject)
    assert n.email_subject == ("[churnsignal] HIGH Usage drop: Acme Bcc: everyone@vendor.example "
                               "X-Injected: 1 Evil Corp")


@pytest.mark.parametrize("text", ["a\rb", "a\nb", "a\r\nb", "a\u2028b", "a\x00b"])
def test_header_safe(text: str) -> None:
    assert header_safe(text) == "a b"


def test_email_parts_are_escaped() -> None:
    risk = make_risk(summary="<script>alert(1)</script> & co", name="Acme <b>Corp</b>")
    n = render(risk, MAIL, URL)
    assert "<script>" not in n.email_html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in n.email_html
    assert "Acme &lt;b&gt;Corp&lt;/b&gt;" in n.email_html
    assert 'href="https://churnsignal.example/ui/accounts/acme"' in n.email_html
    assert "<script>alert(1)</script> & co" in n.email_text        # plain text stays readable
    assert "Account health: https://churnsignal.example/ui/accounts/acme" in n.email_text


def test_kinds_change_the_wording_and_the_key() -> None:
    risk = make_risk(seq=2, transition="updated", severity="critical")
    n = render(risk, DM, URL, kind="escalated")
    assert n.slack_blocks[0]["text"]["text"].startswith("Escalated: Critical")
    assert n.dedup_key.endswith("|escalated")
    repeat = render(risk, DM, URL, kind="repeat", dedup_suffix="repeat:3")
    assert repeat.dedup_key == "acme:usage_drop:1:2|slack_dm:U0DANA|repeat:3"
    assert repeat.email_subject.startswith("[churnsignal] Reminder: CRITICAL")


def test_webhook_body_is_the_risk() -> None:
    risk = make_risk()
    n = render(risk, Target(kind="webhook", address="crm", receiver="crm", url_ref="CRM"), URL)
    body = json.loads(json.dumps(n.webhook_body))
    assert body["risk"] == json.loads(risk.to_json())
    assert body["kind"] == "opened" and body["link"] == n.link and body["dedup_key"] == n.dedup_key


def test_unknown_health_and_missing_account_facts() -> None:
    risk = make_risk(score=None, tier="unknown", name=None, arr=None, segment=None, csm=False, reasons=[],
                     evidence={})
    n = render(risk, DM, URL)
    assert validate_message(n.slack_payload()) is None
    assert "unknown (unknown)" in "\n".join(slack_texts(n))
    assert n.email_subject == "[churnsignal] HIGH Usage drop: acme"


def test_round_trip_through_json() -> None:
    n = render(make_risk(), DM, URL)
    assert Notification.from_dict(json.loads(json.dumps(n.to_dict()))) == n


def test_every_control_character_but_newline_and_tab_is_dropped() -> None:
    import unicodedata

    controls = "".join(chr(i) for i in range(0x20000) if unicodedata.category(chr(i)) == "Cc")
    assert escape_mrkdwn(f"a{controls}b") == "a\t\nb"
    assert header_safe(f"a{controls}b") == "a b"
    assert escape_mrkdwn("é ✓ \u200b") == "é ✓ \u200b"  # other categories stay


def test_only_the_causing_event_sets_the_signal_time() -> None:
    from datetime import UTC, datetime

    from shared.risks import Trigger

    received = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    risk = make_risk().model_copy(update={"trigger": Trigger(event_id="e-1", received_at=received)})
    assert render(risk, DM, URL).source_received_at == received
    assert render(risk, DM, URL, kind="escalated").source_received_at == received
    # A reminder is caused by the clock: measuring it from the original event would inflate the latency.
    assert render(risk, DM, URL, kind="repeat", dedup_suffix="repeat:1").source_received_at is None
