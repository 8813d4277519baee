"""The claim transaction on its own (SQLite and PostgreSQL): redelivered and stale risk events are no-ops,
each notification is claimed once, positions never move backwards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from services.alerts.adapters.repository import AlertsRepository
from services.alerts.domain.routing import RoutingTree
from services.alerts.service.pipeline import AlertPipeline
from shared.bus.port import TopicPartition
from shared.db import create_engine
from shared.metrics import AlertsMetrics
from tests.domain.alerts.factories import without_account_grouping
from tests.stack.alerts.conftest import make_risk

TP = TopicPartition("t.risks", 0)


def pipeline(now: datetime) -> AlertPipeline:
    return AlertPipeline(
        without_account_grouping(RoutingTree.default(None)),  # written before per-account grouping
        public_url="https://x.test",
        enabled=None,
        lease=timedelta(minutes=3),
        metrics=AlertsMetrics(CollectorRegistry()),
        clock=lambda: now,
    )


async def test_a_redelivered_batch_claims_nothing_new(database_url: str):
    engine = create_engine(database_url)
    now = datetime.now(UTC)
    p = pipeline(now)
    risks = [make_risk("acct-1", csm="U100"), make_risk("acct-2", csm=None)]
    try:
        async with engine.begin() as conn:
            first = await p.claim_risks(AlertsRepository(conn), risks, {TP: 2})
        async with engine.begin() as conn:
            again = await p.claim_risks(AlertsRepository(conn), [*risks, risks[0]], {TP: 1})
        async with engine.connect() as conn:
            repo = AlertsRepository(conn)
            assert await repo.positions([TP]) == {TP: 2}  # a rewound consumer does not move it back
            counts = await repo.count_deliveries()
    finally:
        await engine.dispose()
    assert sorted(d.target_key for d in first.deliveries) == ["email:ada@example.com", "slack_dm:U100"]
    assert first.outcomes == {"applied": 2, "unrouted": 1}
    assert again.deliveries == [] and again.outcomes == {"duplicate": 3}
    assert counts == {"pending": 2}


async def test_stale_and_same_batch_transitions(database_url: str):
    engine = create_engine(database_url)
    now = datetime.now(UTC)
    p = pipeline(now)
    opened = make_risk("acct-1", severity="high", csm="U100")
    escalated = make_risk("acct-1", severity="critical", csm="U100", seq=2, transition="updated")
    try:
        async with engine.begin() as conn:
            # opened and escalated in one batch: both notify, in order
            both = await p.claim_risks(AlertsRepository(conn), [opened, escalated], {TP: 2})
        async with engine.begin() as conn:
            # an older transition arriving late (new event id, lower seq) changes nothing
            late = make_risk("acct-1", severity="medium", csm="U100", seq=1, transition="updated")
            late = late.model_copy(update={"event_id": "acct-1:champion_left:1:1b"})
            stale = await p.claim_risks(AlertsRepository(conn), [late], {TP: 3})
            alerts = await AlertsRepository(conn).alerts_by_risk([opened.risk_id])
    finally:
        await engine.dispose()
    assert sorted((d.kind, d.channel) for d in both.deliveries) == [
        ("escalated", "email"),
        ("escalated", "slack_dm"),
        ("opened", "email"),
        ("opened", "slack_dm"),
    ]
    assert stale.deliveries == [] and stale.outcomes == {"stale": 1}
    assert alerts[opened.risk_id].severity == "critical" and alerts[opened.risk_id].last_seq == 2
