"""From ingest to the CSM's inbox: events POSTed to ingest, scored, alerted on Slack and by email,
through the real Kafka and PostgreSQL (the three apps in-process, one event loop)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.ingest.bootstrap import create_app as ingest_app
from services.scoring.bootstrap import create_app as scoring_app
from shared.topics import Topics
from tests.conftest import INGEST_KEY, KAFKA
from tests.conftest import test_api_keys as api_keys
from tests.stack.alerts.conftest import BOT_TOKEN, RunningApp
from tests.support.slack import FakeSlack
from tests.support.smtp import FakeSmtp

pytestmark = pytest.mark.integration


async def test_champion_departure_reaches_the_csm_on_slack_and_by_email(
    pg_database_url: str, topic_prefix: str, tmp_path: Path, fake_slack: FakeSlack, fake_smtp: FakeSmtp
):
    if not KAFKA:
        pytest.skip("CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS not set (run `make services`)")
    from services.alerts.bootstrap import create_app as alerts_app
    from shared.bus.kafka import KafkaBus
    from shared.settings import Settings

    fake_slack.add_channel("U777")
    settings = Settings(
        kafka_bootstrap_servers=KAFKA,
        topic_prefix=topic_prefix,
        database_url=pg_database_url,
        api_keys=api_keys(),
        outbox_dir=str(tmp_path / "outbox"),
        slack_api_url=fake_slack.api_url,
        slack_bot_token=BOT_TOKEN,
        smtp_host=fake_smtp.host,
        smtp_port=fake_smtp.port,
        smtp_from="alerts@churnsignal.test",
        public_url="https://churnsignal.test",
        scoring_group_id=f"{topic_prefix}scoring",
        alerts_group_id=f"{topic_prefix}alerts",
    )
    bus = KafkaBus(KAFKA, publish_timeout_s=10.0)
    await bus.ensure_topics(Topics(topic_prefix).all, partitions=settings.topic_partitions)
    apps = [
        RunningApp(ingest_app(settings, bus=bus)),
        RunningApp(scoring_app(settings, bus=bus)),
        RunningApp(alerts_app(settings, bus=bus)),
    ]
    for app in apps:
        await app.start()
    ingest, _, alerts = apps
    try:
        now = datetime.now(UTC)
        earlier = (now - timedelta(days=40)).isoformat()
        events = [
            {
                "id": "e2e-acct",
                "type": "account",
                "account_id": "acme",
                "occurred_at": earlier,
                "data": {
                    "name": "Acme Rockets",
                    "segment": "enterprise",
                    "arr": 180000,
                    "csm": {"email": "dana@example.com", "slack_user_id": "U777", "name": "Dana Scully"},
                },
            },
            {
                "id": "e2e-champion",
                "type": "contact",
                "account_id": "acme",
                "occurred_at": earlier,
                "data": {
                    "contact_id": "c-1",
                    "name": "Wile E. Coyote",
                    "email": "wile@acme.example",
                    "user_id": "u-1",
                    "role": "champion",
                    "status": "active",
                },
            },
        ]
        headers = {"Authorization": f"Bearer {INGEST_KEY}"}
        r = await ingest.http.post("/v1/events", json=events, headers=headers)
        assert r.status_code == 202, r.text
        left = {
            "id": "e2e-left",
            "type": "contact",
            "account_id": "acme",
            "occurred_at": now.isoformat(),
            "data": {"contact_id": "c-1", "role": "champion", "status": "left"},
        }
        r = await ingest.http.post("/v1/events", json=left, headers=headers)
        assert r.status_code == 202, r.text

        [dm] = await fake_slack.wait_for(1, "U777", timeout_s=30)
        [mail] = await fake_smtp.wait_for(1, timeout_s=30)
        assert "Champion left" in dm.text and "Acme Rockets" in dm.text
        assert "Wile E. Coyote" in "\n".join(dm.all_text())
        assert mail.rcpt_tos == ("dana@example.com",)
        assert "Champion left" in str(mail.message["Subject"]) and "Acme Rockets" in str(
            mail.message["Subject"]
        )
        assert "https://churnsignal.test/ui/accounts/acme" in mail.text_part()

        await alerts.wait_idle(timeout_s=10)
        sent = (await alerts.http.get("/v1/deliveries", params={"status": "sent"})).json()["items"]
        assert sorted(d["channel"] for d in sent) == ["email", "slack_dm"]
        [alert] = (await alerts.http.get("/v1/alerts", params={"account_id": "acme"})).json()["items"]
        assert alert["type"] == "champion_left" and alert["severity"] == "critical"
        metrics = (await alerts.http.get("/metrics")).text
        assert 'churnsignal_signal_to_notification_seconds_count{receiver="slack_dm"} 1.0' in metrics
        # nothing more arrives (no duplicate)
        with pytest.raises(TimeoutError):
            await fake_slack.wait_for(2, "U777", timeout_s=1.5)
        assert len(fake_smtp.messages()) == 1
    finally:
        for app in reversed(apps):
            await app.stop()
        await bus.close()
