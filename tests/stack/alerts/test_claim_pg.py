"""The claim transaction on PostgreSQL through asyncpg (the consumer's path) against the SQLAlchemy path:
the same batches leave the same rows in every alerts_ table and return the same deliveries; a failure
between the reads and the writes leaves nothing behind and the retried batch applies once."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from services.alerts.adapters import tables as t
from services.alerts.adapters.claim_pg import PgClaimStore
from services.alerts.adapters.repository import AlertsRepository
from services.alerts.domain.routing import RoutingTree
from services.alerts.entrypoints.consumer import RiskConsumer
from services.alerts.service.pipeline import AlertPipeline, ClaimResult
from services.alerts.service.records import ClaimWrites, DeliveryRow, SilenceRow
from shared.bus.memory import MemoryBus
from shared.bus.port import Record, TopicPartition
from shared.db import create_engine
from shared.metrics import AlertsMetrics, CommonMetrics
from shared.risks import RiskEvent
from tests.conftest import _create_pg_database, _drop_pg_database
from tests.domain.alerts.factories import without_account_grouping
from tests.stack.alerts.conftest import make_risk

pytestmark = pytest.mark.integration

TOPIC = "t.risks"
ROUTING = """
receivers:
  - name: leadership
    slack_webhook: {url_env: SLACK_EXEC_WEBHOOK, channel: "#exec-alerts"}
  - name: smb-team
    email: {to: [smb-team@vendor.example]}
  - name: crm
    webhook: {url_env: CRM_HOOK_URL, secret_env: CRM_HOOK_SECRET}
route:
  receiver: csm
  repeat_interval: 10m
  group_wait: 1m
  send_resolved: true
  routes:
    - match: {type: champion_left}
      receiver: leadership
      continue: true
    - match: {segment: smb, severity: [low, medium]}
      receiver: smb-team
      send_resolved: false
      continue: true
    - match: {arr_max: 1000}
      receiver: crm
      repeat_interval: 3m
"""
TYPES = ("champion_left", "usage_drop", "ticket_spike", "renewal_risk")
SEVERITIES = ("low", "medium", "high", "critical")
ACCOUNTS = {  # account -> (csm, segment, arr)
    "acct-1": ("U100", "enterprise", 250_000.0),
    "acct-2": ("U200", "smb", 800.0),
    "acct-3": (None, "smb", 12_000.0),
    "acct-4": ("U300", None, None),
    "acct-5": (None, "enterprise", 500.0),
    "acct-6": ("U400", "smb", 40_000.0),
}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def pipeline(clock: Clock, tree: RoutingTree | None = None) -> AlertPipeline:
    return AlertPipeline(
        without_account_grouping(tree or RoutingTree.from_yaml(ROUTING)),  # written before per-account grouping
        public_url="https://churnsignal.test",
        enabled=None,
        lease=timedelta(seconds=30),
        metrics=AlertsMetrics(CollectorRegistry()),
        clock=clock,
    )


def consumer(engine: Any, pipe: AlertPipeline, clock: Clock) -> RiskConsumer:
    registry = CollectorRegistry()
    return RiskConsumer(
        MemoryBus(1),
        topic=TOPIC,
        group_id="alerts-test",
        engine=engine,
        pipeline=pipe,
        runner=SubmittedDeliveries(),  # type: ignore[arg-type]
        metrics=AlertsMetrics(registry),
        common=CommonMetrics(registry, "alerts"),
        clock=clock,
    )


@dataclass
class SubmittedDeliveries:
    """Stands in for the DeliveryRunner: records what the consumer hands over."""

    rows: list[DeliveryRow] = field(default_factory=list)

    def submit(self, rows: list[DeliveryRow]) -> None:
        self.rows.extend(rows)


@pytest.fixture
async def second_pg_database_url(pg_database_url: str) -> AsyncIterator[str]:
    url = await _create_pg_database()
    yield url
    await _drop_pg_database(url)


# -- a scripted, then random, story of risk events -------------------------------------------------------
@dataclass
class Story:
    rnd: random.Random
    risks: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (account, type) -> state
    sent: list[RiskEvent] = field(default_factory=list)
    stale_n: int = 0

    def event(self, account: str, type_: str, *, severity: str | None = None, resolve: bool = False) -> RiskEvent:
        csm, segment, arr = ACCOUNTS[account]
        state = self.risks.get((account, type_))
        if state is None or state["resolved"]:
            n = 1 if state is None else state["n"] + 1
            state = {"n": n, "seq": 1, "resolved": False}
            self.risks[(account, type_)] = state
            transition = "opened"
        else:
            state["seq"] += 1
            transition = "resolved" if resolve else "updated"
            state["resolved"] = resolve
        risk = make_risk(
            account,
            type_=type_,
            severity=severity or self.rnd.choice(SEVERITIES),
            transition=transition,
            seq=state["seq"],
            n=state["n"],
            csm=csm,
            segment=segment,
            arr=arr,
        )
        self.sent.append(risk)
        return risk

    def stale(self) -> RiskEvent | None:
        """An older transition arriving late under a new event id."""
        older = [r for r in self.sent if r.seq > 1]
        if not older:
            return None
        base = self.rnd.choice(older)
        self.stale_n += 1
        return base.model_copy(update={"event_id": f"{base.event_id}:late{self.stale_n}", "seq": base.seq - 1})

    def random_batch(self) -> list[RiskEvent]:
        batch: list[RiskEvent] = []
        for _ in range(self.rnd.randint(1, 4)):
            roll = self.rnd.random()
            if roll < 0.1 and self.sent:
                batch.append(self.rnd.choice(self.sent))  # redelivered from an earlier batch
            elif roll < 0.15 and batch:
                batch.append(batch[-1])  # twice in one batch
            elif roll < 0.2:
                late = self.stale()
                if late is not None:
                    batch.append(late)
            else:
                account = self.rnd.choice(sorted(ACCOUNTS))
                type_ = self.rnd.choice(TYPES)
                batch.append(self.event(account, type_, resolve=self.rnd.random() < 0.25))
        return batch


def scripted(story: Story) -> list[list[RiskEvent]]:
    e = story.event
    opened = e("acct-1", "champion_left", severity="high")
    huge = e("acct-4", "usage_drop", severity="critical").model_copy(
        update={"evidence": {"events_last_week": 2**70, "ratio": 0.1, "note": "it's \"quoted\" ' \\ ✓"}}
    )
    story.sent[-1] = huge
    return [
        [opened, e("acct-2", "ticket_spike", severity="low"), e("acct-3", "usage_drop", severity="medium")],
        [e("acct-1", "champion_left", severity="critical"), opened],  # escalated + a redelivery
        [e("acct-1", "champion_left", severity="medium"), e("acct-1", "champion_left", severity="high")],
        [huge, huge, e("acct-5", "renewal_risk", severity="low")],  # a duplicate inside the batch
        [e("acct-2", "ticket_spike", severity="low", resolve=True), e("acct-2", "ticket_spike", severity="low")],
        [e("acct-6", "usage_drop", severity="low"), e("acct-6", "ticket_spike", severity="low")],
        [],  # nothing new: only the positions move
    ]


# -- running both paths --------------------------------------------------------------------------------
@dataclass
class Side:
    engine: Any
    pipe: AlertPipeline
    consumer: RiskConsumer | None = None  # the asyncpg path when set

    async def claim(self, batch: list[RiskEvent], positions: dict[TopicPartition, int]) -> ClaimResult:
        if self.consumer is not None:
            return await self.consumer.claim(batch, positions)
        async with self.engine.begin() as conn:
            return await self.pipe.claim_risks(AlertsRepository(conn), batch, positions)

    async def repo_call(self, name: str, *args: Any) -> Any:
        async with self.engine.begin() as conn:
            return await getattr(AlertsRepository(conn), name)(*args)

    async def periodic(self, name: str) -> ClaimResult:
        async with self.engine.begin() as conn:
            return await getattr(self.pipe, name)(AlertsRepository(conn))

    def suppressed(self) -> dict[str, float]:
        out = {}
        for metric in self.pipe.metrics.notifications.collect():
            for s in metric.samples:
                if s.name.endswith("_total") and s.labels["outcome"] == "suppressed":
                    out[s.labels["receiver"]] = s.value
        return out


async def table_rows(engine: Any) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    async with engine.connect() as conn:
        for table in t.metadata.sorted_tables:
            order = list(table.primary_key.columns)
            out[table.name] = [tuple(r) for r in await conn.execute(sa.select(table).order_by(*order))]
    return out


def same_result(fast: ClaimResult, slow: ClaimResult) -> None:
    assert fast.outcomes == slow.outcomes
    assert fast.queued_for_digest == slow.queued_for_digest
    assert fast.deliveries == slow.deliveries


async def test_the_asyncpg_claim_writes_what_the_sqlalchemy_claim_writes(
    pg_database_url: str, second_pg_database_url: str
):
    clock = Clock()
    rnd = random.Random(20260302)
    story = Story(rnd)
    fast_engine, slow_engine = create_engine(pg_database_url), create_engine(second_pg_database_url)
    fast = Side(fast_engine, pipeline(clock))
    fast.consumer = consumer(fast_engine, fast.pipe, clock)
    slow = Side(slow_engine, pipeline(clock))
    offsets = {TopicPartition(TOPIC, 0): 0, TopicPartition(TOPIC, 1): 0}
    totals: dict[str, int] = {}
    try:
        batches = scripted(story) + [story.random_batch() for _ in range(45)]
        for step, batch in enumerate(batches):
            clock.now += timedelta(seconds=rnd.randint(0, 150))
            await _between_batches(step, rnd, story, clock, fast, slow)
            positions = {}
            for tp in rnd.sample(sorted(offsets), rnd.randint(1, 2)):
                offsets[tp] += len(batch) + 1
                positions[tp] = offsets[tp] - (5 if rnd.random() < 0.1 else 0)  # sometimes rewound
            fast_result = await fast.claim(batch, positions)
            slow_result = await slow.claim(batch, positions)
            same_result(fast_result, slow_result)
            for outcome, n in fast_result.outcomes.items():
                totals[outcome] = totals.get(outcome, 0) + n
        assert fast.consumer is not None
        await fast.consumer._close_connection()
        fast_rows, slow_rows = await table_rows(fast_engine), await table_rows(slow_engine)
    finally:
        await fast_engine.dispose()
        await slow_engine.dispose()

    assert fast_rows == slow_rows
    assert fast.suppressed() == slow.suppressed()
    assert sum(fast.suppressed().values()) > 0  # silences held some notifications back
    # the story covered what it is meant to cover
    assert {"applied", "duplicate", "stale", "unrouted"} <= set(totals)
    counts = {name: len(rows) for name, rows in fast_rows.items()}
    assert counts["alerts_alerts"] >= 15 and counts["alerts_states"] >= 20
    assert counts["alerts_deliveries"] >= 30 and counts["alerts_digest_items"] >= 3
    assert counts["alerts_silences"] >= 1
    kinds = {row[3] for row in fast_rows["alerts_deliveries"]}
    assert {"opened", "escalated", "resolved", "repeat", "digest"} <= kinds
    assert any(row[13] is not None for row in fast_rows["alerts_alerts"])  # an acknowledged alert


async def _between_batches(
    step: int, rnd: random.Random, story: Story, clock: Clock, fast: Side, slow: Side
) -> None:
    """Silences, acknowledgements, digest flushes and repeat sweeps, the same on both databases."""
    now = clock.now
    accounts = sorted({r.account_id for r in story.sent})
    if step in (3, 9) or (step > 10 and rnd.random() < 0.1):
        silence = SilenceRow(
            id=f"sil-{step}",
            account_id=rnd.choice(accounts),
            types=rnd.choice([[], ["usage_drop"], ["champion_left", "ticket_spike"]]),
            until=now + timedelta(minutes=rnd.randint(2, 20)),
            reason="maintenance window",
            created_by="ops",
            created_at=now,
            deleted_at=None,
        )
        for side in (fast, slow):
            await side.repo_call("insert_silence", silence)
    if step in (4, 12) or (step > 12 and rnd.random() < 0.1):
        risk_id = rnd.choice(sorted({r.risk_id for r in story.sent}))
        ids = []
        for side in (fast, slow):
            alert = (await side.repo_call("alerts_by_risk", [risk_id])).get(risk_id)
            ids.append(alert.id if alert is not None else None)
            if alert is not None:
                await side.repo_call("ack", alert.id, "csm@example.com", now)
        assert ids[0] == ids[1]
    for name, p in (("claim_digests", 0.3), ("claim_repeats", 0.2)):
        if step > 4 and rnd.random() < p:
            same_result(await fast.periodic(name), await slow.periodic(name))


# -- failures ------------------------------------------------------------------------------------------
def records(risks: list[RiskEvent], start: int = 0) -> list[Record]:
    return [Record(TOPIC, 0, start + i, r.account_id.encode(), r.to_json(), 0) for i, r in enumerate(risks)]


async def test_a_failure_between_reads_and_writes_leaves_nothing_and_the_retry_applies_once(
    pg_database_url: str, monkeypatch: pytest.MonkeyPatch
):
    clock = Clock()
    engine = create_engine(pg_database_url)
    pipe = pipeline(clock, RoutingTree.default(None))  # each account's CSM: Slack DM and email
    c = consumer(engine, pipe, clock)
    batch = [make_risk("acct-1", csm="U100"), make_risk("acct-2", type_="usage_drop", severity="high", csm="U200")]
    real_writes = PgClaimStore.claim_writes
    calls = 0

    async def failing_writes(self: PgClaimStore, writes: ClaimWrites) -> list[DeliveryRow]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncpg.exceptions.SerializationError("injected between the reads and the writes")
        return await real_writes(self, writes)

    monkeypatch.setattr(PgClaimStore, "claim_writes", failing_writes)
    try:
        with pytest.raises(asyncpg.exceptions.SerializationError):
            await c.claim(batch, {TopicPartition(TOPIC, 0): 2})
        assert c._conn is None  # the failed connection is not reused
        after_failure = await table_rows(engine)
        result = await c.claim(batch, {TopicPartition(TOPIC, 0): 2})
        again = await c.claim(batch, {TopicPartition(TOPIC, 0): 2})
        await c._close_connection()
        rows = await table_rows(engine)
    finally:
        await engine.dispose()
    assert all(not r for r in after_failure.values()), {k: v for k, v in after_failure.items() if v}
    assert result.outcomes == {"applied": 2}
    assert sorted(d.target_key for d in result.deliveries) == [
        "email:ada@example.com",
        "email:grace@example.com",
        "slack_dm:U100",
        "slack_dm:U200",
    ]
    assert again.outcomes == {"duplicate": 2} and again.deliveries == []
    assert len(rows["alerts_alerts"]) == 2 and len(rows["alerts_deliveries"]) == 4
    assert sorted(r[0] for r in rows["alerts_processed"]) == sorted(r.event_id for r in batch)
    assert [(r[0], r[1], r[2]) for r in rows["alerts_positions"]] == [(TOPIC, 0, 2)]


async def test_a_connection_killed_mid_claim_is_replaced_and_the_batch_applied_once(
    pg_database_url: str, monkeypatch: pytest.MonkeyPatch
):
    clock = Clock()
    engine = create_engine(pg_database_url)
    c = consumer(engine, pipeline(clock, RoutingTree.default(None)), clock)
    c.max_backoff_s = 0.1
    real_writes = PgClaimStore.claim_writes
    killed: list[int] = []

    async def killing_writes(self: PgClaimStore, writes: ClaimWrites) -> list[DeliveryRow]:
        if not killed:  # the server ends this backend after the reads, before the writes
            pid = self._apg.get_server_pid()
            admin = await asyncpg.connect(pg_database_url.replace("postgresql+asyncpg://", "postgresql://"))
            try:
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
                left = await admin.fetchval("SELECT count(*) FROM alerts_processed")
            finally:
                await admin.close()
            killed.append(left)
        return await real_writes(self, writes)

    monkeypatch.setattr(PgClaimStore, "claim_writes", killing_writes)
    batch = [make_risk("acct-1", csm="U100"), make_risk("acct-3", type_="ticket_spike", csm="U300")]
    try:
        await c._handle_with_retry(None, records([*batch, batch[0]]))  # type: ignore[arg-type]
        await c._close_connection()
        rows = await table_rows(engine)
    finally:
        await engine.dispose()
    assert killed == [0]  # the reads' processed ids were not visible outside the transaction
    submitted = c.runner.rows  # type: ignore[attr-defined]
    assert sorted(d.target_key for d in submitted) == [
        "email:ada@example.com",
        "email:alan@example.com",
        "slack_dm:U100",
        "slack_dm:U300",
    ]
    assert c.healthy
    assert len(rows["alerts_alerts"]) == 2 and len(rows["alerts_deliveries"]) == 4
    assert len(rows["alerts_processed"]) == 2
    assert [(r[0], r[1], r[2]) for r in rows["alerts_positions"]] == [(TOPIC, 0, 3)]
    assert c._positions == {TopicPartition(TOPIC, 0): 3}
