"""Composition: the console outbox of the embedded mode, the fallback receiver, configuration errors."""

from __future__ import annotations

import asyncio
import email
from email import policy
from pathlib import Path

import pytest

from services.alerts.bootstrap import create_app
from shared.bus.memory import MemoryBus
from shared.bus.port import OutMessage
from shared.settings import Settings
from shared.topics import Topics
from tests.stack.alerts.conftest import RunningApp, Stack, make_risk


def _files(folder: Path, pattern: str) -> list[Path]:
    return sorted(folder.glob(pattern))


async def _publish(bus: MemoryBus, settings: Settings, *risks) -> None:
    await bus.publisher().publish(
        [OutMessage(Topics(settings.topic_prefix).risks, r.account_id.encode(), r.to_json()) for r in risks]
    )


async def test_embedded_without_slack_or_smtp_writes_the_outbox(settings: Settings):
    bus = MemoryBus(6)
    running = RunningApp(create_app(settings, bus=bus))
    await running.start()
    try:
        assert (await running.http.get("/healthz")).status_code == 200
        await running.wait_idle()
        ready = await running.http.get("/readyz")
        assert ready.status_code == 200, ready.text
        await _publish(bus, settings, make_risk("acct-1", csm="U100", summary="Jo left <!channel>"))
        outbox = Path(settings.outbox_dir)
        for _ in range(200):
            if len(_files(outbox, "*")) >= 2:
                break
            await asyncio.sleep(0.05)
        await running.wait_idle()
        slack, mails = _files(outbox, "*.json"), _files(outbox, "*.eml")
        assert len(slack) == 1 and len(mails) == 1
        assert "&lt;!channel&gt;" in slack[0].read_text() and "<!channel>" not in slack[0].read_text()
        mail = email.message_from_bytes(mails[0].read_bytes(), policy=policy.default)
        assert mail["To"] == "ada@example.com" and "Champion left" in mail["Subject"]
        sent = (await running.http.get("/v1/deliveries", params={"status": "sent"})).json()["items"]
        assert sorted(d["channel"] for d in sent) == ["email", "slack_dm"]
    finally:
        await running.stop()


async def test_account_without_csm_goes_to_the_fallback_receiver(stack: Stack):
    app = await stack.start(fallback_email="cs-leads@example.com")
    await stack.publish(make_risk("acct-orphan", csm=None, summary="nobody owns this account"))
    [mail] = await stack.smtp.wait_for(1, timeout_s=10)
    assert mail.rcpt_tos == ("cs-leads@example.com",)
    assert "nobody owns this account" in mail.text_part()
    await app.wait_idle()
    await asyncio.sleep(0.3)
    assert stack.slack.messages() == [] and len(stack.smtp.messages()) == 1


def test_a_bad_routing_file_fails_at_start_naming_the_key(settings: Settings, tmp_path: Path):
    path = tmp_path / "routing.yaml"
    path.write_text("route:\n  receiver: csm\n  repeat_intervall: 1h\n")
    with pytest.raises(ValueError, match="repeat_intervall"):
        create_app(settings.model_copy(update={"routing_file": str(path)}), bus=MemoryBus(6))
