"""Embedded mode: alerts land in the outbox folder and in one log line each."""

from __future__ import annotations

import email
import json
from email import policy
from pathlib import Path

import pytest

from services.alerts.domain.content import render
from services.alerts.domain.targets import Target
from services.alerts.notify.console import ConsoleChannel
from services.alerts.notify.delivery import Deliverer
from tests.domain.alerts.factories import make_risk
from tests.support.slack import validate_message

DM = Target(kind="slack_dm", address="U0DANA", receiver="csm")
MAIL = Target(kind="email", address="dana@vendor.example", receiver="csm")


async def test_outbox_files_and_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="churnsignal.alerts.outbox")
    console = ConsoleChannel(tmp_path / "outbox")
    deliverer = Deliverer({}, default_channel=console)
    risk = make_risk(summary="Usage fell 62%\nbelow its norm")
    assert await deliverer.deliver(render(risk, DM, "http://cs.example")) == "sent"
    assert await deliverer.deliver(render(risk, MAIL, "http://cs.example")) == "sent"
    assert await deliverer.deliver(render(risk, MAIL, "http://cs.example")) == "sent"   # same key

    [slack_file] = sorted((tmp_path / "outbox").glob("*.json"))
    payload = json.loads(slack_file.read_text())
    assert payload["channel"] == "U0DANA" and validate_message(payload) is None
    [eml] = sorted((tmp_path / "outbox").glob("*.eml"))
    msg = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert msg["To"] == "dana@vendor.example"
    assert msg.get_body(("plain",)) is not None and msg.get_body(("html",)) is not None

    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ALERT")]
    assert lines[0] == ("ALERT opened high to slack_dm:U0DANA : high usage_drop on Acme Corp: "
                        "Usage fell 62% below its norm")
    assert len(lines) == 3 and all("\n" not in line for line in lines)
