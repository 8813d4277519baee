"""The chaos cases. Each is bounded in time, prints progress to stderr, restores what it stopped and
returns its counts; a broken expectation is a finding in the result, never a fix."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.framework import Context
from chaos.harness import (
    Driver,
    DriverTally,
    Outage,
    SlackStandIn,
    Stack,
    champion_left,
    departure,
    fetch,
    first_accepted,
    fresh_stack,
    log,
    mixed_batch,
    post_setup,
    publish_risks,
    setup_accounts,
    slack_stand_in,
    topic_records,
    usage,
    wait_for_database,
)
from chaos.report import CaseResult, Sample, trend
from shared.retention import dedup_grace, format_age
from shared.settings import RETENTION_DAYS, Settings
from shared.topics import Topics

# Every outage any case started, restored by the command's last `finally` too.
OUTAGES: list[Outage] = []

NO_SLACK = "http://127.0.0.1:9/api/"  # the event-only case never notifies
INGEST_BATCH = 50
SOAK_TABLES = ("scoring_processed_events", "scoring_history", "scoring_outbox", "alerts_processed",
               "alerts_deliveries")
SOAK_SERVICES = ("ingest", "scoring", "alerts")


async def _wait(what: str, done: Callable[[], Awaitable[bool]], timeout_s: float, every_s: float = 2.0,
                progress: Callable[[], Awaitable[str]] | None = None) -> bool:
    """Poll `done` until it holds or `timeout_s` passes; whether it held."""
    deadline = time.monotonic() + timeout_s
    next_log = time.monotonic() + 10
    while True:
        if await done():
            return True
        if time.monotonic() > deadline:
            log(f"  gave up waiting for {what} after {timeout_s:.0f} s")
            return False
        if progress is not None and time.monotonic() >= next_log:
            next_log += 10
            log(f"  waiting for {what}: {await progress()}")
        await asyncio.sleep(every_s)


async def _count(url: str, table: str) -> int:
    return int((await fetch(url, f"SELECT count(*) AS n FROM {table}"))[0]["n"])


# ---------------------------------------------------------------------------------- scored events
async def _await_scoring(stack: Stack, tally: DriverTally, timeout_s: float,
                         ids: ProcessedIds | None = None) -> set[str]:
    """Wait until scoring has recorded every accepted event (or stopped progressing); the ids it recorded
    (with `ids`: as read while they were recorded, the ones retention pruned since included)."""
    url = stack.config.database_url
    expected = len(tally.accepted_ids)
    last = {"n": -1, "at": time.monotonic()}

    async def caught_up() -> bool:
        n = len(await ids.read()) if ids is not None else await _count(url, "scoring_processed_events")
        if n != last["n"]:
            last.update(n=n, at=time.monotonic())
        return n >= expected or time.monotonic() - last["at"] > 60

    async def progress() -> str:
        return f"{last['n']:,} of {expected:,} accepted events recorded"

    await _wait("scoring to catch up", caught_up, timeout_s, progress=progress)
    if ids is not None:
        return set(await ids.read())
    rows = await fetch(url, "SELECT event_id FROM scoring_processed_events")
    return {r["event_id"] for r in rows}


async def _event_counts(result: CaseResult, stack: Stack, tally: DriverTally, scored: set[str]) -> None:
    """The ingest and scoring counts of a case that posts events, and the findings they show."""
    accepted = tally.accepted_ids
    applied = int(await stack.metric("scoring", "churnsignal_scoring_events_total", outcome="processed"))
    skipped = int(await stack.metric("scoring", "churnsignal_scoring_events_total", outcome="duplicate"))
    expired = int(await stack.metric("scoring", "churnsignal_scoring_events_total", outcome="expired"))
    on_topics = await topic_records(stack.config.kafka, Topics(stack.config.prefix).inputs)
    ours = scored & tally.all_ids
    missing = len(accepted - scored)
    twice = max(0, applied - len(scored))
    non_202 = {k: v for k, v in tally.answers.items() if k != "202"}
    result.counts.update({
        "events sent (unique ids)": len(tally.all_ids),
        "HTTP requests (batches of 50 events)": tally.batches,
        "answers 202 (requests)": tally.answers.get("202", 0),
        "answers 503 (requests)": tally.answers.get("503", 0),
        "… of which with Retry-After": tally.retry_after_503,
        "other answers (transport errors, timeouts, other statuses)": sum(
            v for k, v in non_202.items() if k != "503"),
        "events accepted (202, possibly after retries)": len(accepted),
        "events accepted on a retry after a 503": tally.accepted_after_503,
        "events never accepted (retries given up)": tally.abandoned,
        "records on the input topics": on_topics,
        "events scored (in scoring_processed_events)": len(ours),
        "accepted events missing from scoring_processed_events": missing,
        "events scored though never answered 202": len(ours - accepted),
        "events applied by scoring (metric, outcome=processed)": applied,
        "redelivered copies skipped by scoring's dedupe (metric, outcome=duplicate)": skipped,
        "events older than the deduplication horizon, not applied (metric, outcome=expired)": expired,
        "events applied more than once": twice,
    })
    result.summary.update(events_in=len(tally.all_ids), events_scored=len(ours), events_missing=missing,
                          events_duplicated=twice)
    if missing:
        sample = sorted(accepted - scored)[:5]
        result.findings.append(f"{missing:,} events answered 202 were never scored (e.g. {', '.join(sample)})")
    if twice:
        result.findings.append(f"scoring applied {applied:,} events for {len(scored):,} distinct ids: "
                               f"{twice:,} applied more than once")
    if tally.abandoned:
        result.findings.append(f"{tally.abandoned:,} events were never accepted although the client retried "
                               f"every 503 after its Retry-After")
    if tally.unexpected:
        result.findings.append(f"ingest answered other than 202/503: {tally.unexpected[:3]}")


def _alive(result: CaseResult, stack: Stack, *names: str) -> None:
    for name in names:
        if not stack.alive(name):
            result.findings.append(f"{name} exited (code {stack.procs[name].returncode}) and did not recover; "
                                   f"see var/chaos/{stack.config.case}-{name}.log")


async def _notification_counts(result: CaseResult, stack: Stack, slack: SlackStandIn, channels: set[str],
                               marker: str, published: int) -> None:
    received, duplicated = slack.tally(channels, marker)
    statuses = await fetch(stack.config.database_url,
                           "SELECT status, count(*) AS n FROM alerts_deliveries GROUP BY status")
    by_status = {r["status"]: int(r["n"]) for r in statuses}
    result.counts.update({
        "risk events published (acknowledged by Kafka)": published,
        "notifications expected (one Slack DM per risk)": published,
        "notifications received": received,
        "notifications missing": published - received,
        "notifications duplicated (extra copies)": duplicated,
        "alerts_deliveries by status": ", ".join(f"{k} {v}" for k, v in sorted(by_status.items())) or "none",
    })
    result.summary.update(notifications_expected=published, notifications_received=received,
                          notifications_duplicated=duplicated)
    if received < published:
        result.findings.append(f"{published - received} of {published} notifications never arrived "
                               f"(deliveries by status: {by_status})")


def _all_arrived(slack: SlackStandIn, channels: set[str], marker: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return slack.tally(channels, marker)[0] >= len(channels)
    return check


def _arrived_progress(slack: SlackStandIn, channels: set[str], marker: str) -> Callable[[], Awaitable[str]]:
    async def progress() -> str:
        received, duplicated = slack.tally(channels, marker)
        return f"{received} of {len(channels)} notifications, {duplicated} duplicates"
    return progress


# ------------------------------------------------------------------------------------- 1. the broker
BROKER_RATE = 2000
BROKER_LOAD_S = 60.0
BROKER_STOP_AT_S = 15.0
BROKER_DOWN_S = 13.0
PROBE_S = 60.0    # from the stop command to the start command; the broker also takes a while to start


async def broker_restart(ctx: Context, options: Any) -> CaseResult:
    result = CaseResult(
        "broker", "1. Broker stopped and restarted during ingest",
        f"`churnsignal serve ingest` and `serve scoring` on a topic prefix and database of their own. A client "
        f"posts {BROKER_RATE:,} events/s (batches of {INGEST_BATCH}, unique ids) for {BROKER_LOAD_S:.0f} s, "
        f"retrying a 503 after its Retry-After (a transport error or a 30 s timeout after 1 s). At "
        f"{BROKER_STOP_AT_S:.0f} s the broker is stopped (`scripts/services.sh kafka-stop`, on the private "
        f"instance) and "
        f"{BROKER_DOWN_S:.0f} s after the stop command started again (`kafka-start`). Then scoring catches up "
        "and `scoring_processed_events` (scoring's dedupe record) must hold every event answered 202, each "
        "applied once.")
    outage = Outage("kafka", options.services)
    OUTAGES.append(outage)
    try:
        with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
            async with fresh_stack(ctx, "broker", NO_SLACK, Path(tmp)) as stack:
                stack.start("ingest")
                stack.start("scoring")
                await stack.wait_ready("ingest", "scoring")
                run = stack.config.run
                driver = Driver(stack.ports["ingest"])
                driver.retry_until = time.monotonic() + BROKER_LOAD_S + 120

                async def timeline() -> None:
                    await asyncio.sleep(BROKER_STOP_AT_S)
                    log("stopping the broker")
                    await outage.stop()
                    await asyncio.sleep(max(0.0, BROKER_DOWN_S - (time.monotonic() - outage.stop_issued_at)))
                    log("starting the broker")
                    await outage.start()

                chaos = asyncio.create_task(timeline())
                try:
                    await driver.run(BROKER_LOAD_S, BROKER_RATE, INGEST_BATCH,
                                     lambda seq: mixed_batch(run, seq, INGEST_BATCH))
                    await chaos
                finally:
                    if not chaos.done():
                        chaos.cancel()
                    outage.restore()
                tally = driver.tally
                log(f"load over: {len(tally.accepted_ids):,} of {tally.events:,} events accepted; "
                    f"answers {dict(tally.answers)}")
                # Does ingest take events again? Fresh requests, one a second, until one is answered 202.
                took, probe_answers = await first_accepted(
                    stack.ports["ingest"], lambda seq: mixed_batch(f"{run}-probe", seq, INGEST_BATCH), PROBE_S)
                probe_at = time.monotonic() - outage.up_at
                if took is None:
                    result.findings.append(
                        f"ingest still answered no request with 202 {probe_at:.0f} s after the broker answered "
                        f"again (fresh requests for {PROBE_S:.0f} s: {dict(probe_answers)}); see "
                        f"var/chaos/broker-ingest.log")
                    log("ingest accepts no events: " + str(dict(probe_answers)))
                scored = await _await_scoring(stack, tally, timeout_s=240)
                await _event_counts(result, stack, tally, scored)
                window = (tally.last_503 - tally.first_503) if tally.first_503 and tally.last_503 else 0.0
                result.counts.update({
                    **outage.timings(),
                    "warnings logged by ingest / scoring": f"{stack.warnings('ingest')} / {stack.warnings('scoring')}",
                    "503s answered over (s, first to last)": round(window, 1),
                    "last 503 after the broker answered again (s)":
                        round(max(0.0, (tally.last_503 or 0.0) - outage.up_at), 1),
                    "fresh requests after the retries, until the first 202": ", ".join(
                        f"{k} × {v}" for k, v in sorted(probe_answers.items())),
                    "ingest producer errors (metric)":
                        int(await stack.metric("ingest", "churnsignal_ingest_producer_errors_total")),
                    "scoring's Kafka consumer replaced after making no progress (log lines)":
                        stack.count_lines("scoring", "made no progress"),
                })
                result.notes.append(
                    "Records on the input topics beyond the unique events are events whose request was answered "
                    "503 (the publish timed out) but whose records reached the broker once it was back; the client "
                    "sent them again, and scoring skipped the second copy by its event id.")
                if not tally.answers.get("503"):
                    result.findings.append("ingest never answered 503 while the broker was down")
                if tally.answers.get("503", 0) != tally.retry_after_503:
                    result.findings.append(f"{tally.answers['503'] - tally.retry_after_503} 503 answers "
                                           "without a Retry-After header")
                _alive(result, stack, "ingest", "scoring")
    finally:
        outage.restore()
    return result


# --------------------------------------------------------------------------------- 2. the database
PG_RATE = 1000
PG_LOAD_S = 50.0
PG_STOP_AT_S = 15.0
PG_DOWN_S = 10.0
PG_RISKS_PER_S = 4.0


async def postgres_restart(ctx: Context, options: Any) -> CaseResult:
    risks_total = int(PG_LOAD_S * PG_RISKS_PER_S)
    result = CaseResult(
        "postgres", "2. PostgreSQL restarted under load",
        f"Ingest, scoring and alerts as `churnsignal serve` processes; alerts sends to the local Slack. For "
        f"{PG_LOAD_S:.0f} s a client posts {PG_RATE:,} events/s to ingest while {risks_total} critical risk events "
        f"({PG_RISKS_PER_S:g}/s, each for its own CSM's Slack DM) are published straight to the risks topic. At "
        f"{PG_STOP_AT_S:.0f} s PostgreSQL is stopped (`scripts/services.sh pg-stop` on the private instance, "
        f"fast shutdown: every "
        f"connection is cut) and {PG_DOWN_S:.0f} s after the stop command started again (`pg-start`). Scoring and "
        "alerts must resume by themselves: every accepted event scored once, every risk notified once.")
    outage = Outage("pg", options.services)
    OUTAGES.append(outage)
    try:
        with tempfile.TemporaryDirectory(prefix="chaos-") as tmp, slack_stand_in() as slack:
            async with fresh_stack(ctx, "postgres", slack.api_url, Path(tmp)) as stack:
                for name in ("ingest", "scoring", "alerts"):
                    stack.start(name)
                await stack.wait_ready("ingest", "scoring", "alerts")
                run = stack.config.run
                made = [champion_left(run, "postgres", i) for i in range(risks_total)]
                channels = {c for c, _ in made}
                slack.fake.add_channel(*channels)
                marker = "Chaos postgres"
                driver = Driver(stack.ports["ingest"])
                driver.retry_until = time.monotonic() + PG_LOAD_S + 120

                async def timeline() -> None:
                    await asyncio.sleep(PG_STOP_AT_S)
                    log("stopping PostgreSQL")
                    await outage.stop()
                    await asyncio.sleep(max(0.0, PG_DOWN_S - (time.monotonic() - outage.stop_issued_at)))
                    log("starting PostgreSQL")
                    await outage.start()

                chaos = asyncio.create_task(timeline())
                publishing = asyncio.create_task(publish_risks(
                    ctx.kafka_bootstrap_servers, Topics(stack.config.prefix).risks, [r for _, r in made],
                    PG_RISKS_PER_S))
                try:
                    await driver.run(PG_LOAD_S, PG_RATE, INGEST_BATCH,
                                     lambda seq: mixed_batch(run, seq, INGEST_BATCH))
                    published = await publishing
                    await chaos
                finally:
                    for task in (chaos, publishing):
                        if not task.done():
                            task.cancel()
                    outage.restore()
                await wait_for_database(stack.config.database_url)
                await _wait("every notification", _all_arrived(slack, channels, marker), 180,
                            progress=_arrived_progress(slack, channels, marker))
                scored = await _await_scoring(stack, driver.tally, timeout_s=180)
                await asyncio.sleep(5.0)  # a late duplicate is counted too
                await _event_counts(result, stack, driver.tally, scored)
                await _notification_counts(result, stack, slack, channels, marker, published)
                during = sum(1 for m in slack.fake.messages()
                             if m.channel in channels and outage.stop_issued_at <= m.arrived_at <= outage.up_at)
                result.counts.update({
                    **outage.timings(),
                    "notifications that arrived while PostgreSQL was down": during,
                    "warnings logged by scoring / alerts (their retries)":
                        f"{stack.warnings('scoring')} / {stack.warnings('alerts')}",
                })
                if result.summary.get("notifications_duplicated"):
                    result.findings.append(f"{result.summary['notifications_duplicated']} notification(s) "
                                           "duplicated after a database restart (no process crashed)")
                _alive(result, stack, "ingest", "scoring", "alerts")
    finally:
        outage.restore()
    return result


# ------------------------------------------------------------------------------ 3. kill -9 of alerts
KILL_RISKS = 400
KILL_RATE = 200.0
LEASE_S = 30.0   # services/alerts/bootstrap.py DELIVERY_LEASE: a lost sender's deliveries are resent after it


async def kill_alerts(ctx: Context, _: Any) -> CaseResult:
    result = CaseResult(
        "kill", "3. kill -9 of alerts mid-burst",
        f"`churnsignal serve alerts` alone; {KILL_RISKS} critical risk events ({KILL_RATE:g}/s, each for its own "
        "CSM's Slack DM) are published straight to the risks topic. Once half the notifications have reached "
        "Slack, the alerts process gets SIGKILL and is started again. Every alert must arrive. The documented "
        "window for a duplicate (docs/architecture.md, services/alerts/service/dispatch.py) is a message Slack "
        "accepted whose outcome was not yet recorded when the process died: its delivery is still `pending`, "
        f"and is sent again once its lease ({LEASE_S:.0f} s) runs out. The case counts that window at the kill "
        "(messages Slack accepted minus deliveries recorded `sent`) and the duplicates that followed.")
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp, slack_stand_in() as slack:
        async with fresh_stack(ctx, "kill", slack.api_url, Path(tmp)) as stack:
            stack.start("alerts")
            await stack.wait_ready("alerts")
            made = [champion_left(stack.config.run, "kill", i) for i in range(KILL_RISKS)]
            channels = {c for c, _ in made}
            slack.fake.add_channel(*channels)
            marker = "Chaos kill"
            publishing = asyncio.create_task(publish_risks(
                ctx.kafka_bootstrap_servers, Topics(stack.config.prefix).risks, [r for _, r in made], KILL_RATE))

            async def half_arrived() -> bool:
                return slack.tally(channels, marker)[0] >= KILL_RISKS // 2

            try:
                if not await _wait("half the notifications", half_arrived, 120, every_s=0.02):
                    raise RuntimeError("half the notifications never arrived before the kill "
                                       f"({slack.tally(channels, marker)[0]} of {KILL_RISKS})")
                stack.kill("alerts", signal.SIGKILL)
                killed_at = time.monotonic()
                log(f"alerts killed with SIGKILL after {slack.tally(channels, marker)[0]} notifications")
                await asyncio.sleep(0.5)  # requests the dead process had fully sent are answered meanwhile
                at_kill = slack.tally(channels, marker)[0]
                rows = await fetch(stack.config.database_url,
                                   "SELECT status, count(*) AS n FROM alerts_deliveries GROUP BY status")
                recorded = {r["status"]: int(r["n"]) for r in rows}
                published = await publishing
            finally:
                if not publishing.done():
                    publishing.cancel()
            stack.start("alerts")
            await stack.wait_ready("alerts")
            log("alerts started again")

            async def settled() -> bool:
                return (slack.tally(channels, marker)[0] >= len(channels)
                        and time.monotonic() - killed_at > LEASE_S + 15)

            await _wait(f"every notification and the lease ({LEASE_S:.0f} s) to run out", settled, 180,
                        progress=_arrived_progress(slack, channels, marker))
            await asyncio.sleep(3.0)
            await _notification_counts(result, stack, slack, channels, marker, published)
            window = max(0, at_kill - recorded.get("sent", 0))
            duplicated = result.summary.get("notifications_duplicated", 0)
            result.counts.update({
                "notifications Slack had accepted at the kill": at_kill,
                "deliveries recorded at the kill": ", ".join(f"{k} {v}" for k, v in sorted(recorded.items())),
                "accepted by Slack but not recorded `sent` at the kill (the duplicate window)": window,
            })
            if duplicated > window:
                result.findings.append(f"{duplicated} duplicates, more than the {window} messages that were in "
                                       "the documented window (accepted by Slack, not yet recorded) at the kill")
            result.notes.append(f"{duplicated} duplicate(s) measured for {window} message(s) in the window at the "
                                "kill: the window is the outcome writer's flush interval (0.1 s) plus the sends "
                                "in flight, so its size depends on the moment of the kill.")
            _alive(result, stack, "alerts")
    return result


# ------------------------------------------------------------------------------ 4. Slack answers 500
SLACK_OUTAGE_S = 60.0
SLACK_BEFORE = 5
SLACK_DURING = 60
SLACK_DURING_RATE = 2.0
SLACK_DEADLINE_S = 300.0


async def slack_outage(ctx: Context, _: Any) -> CaseResult:
    total = SLACK_BEFORE + SLACK_DURING
    result = CaseResult(
        "slack", "4. Slack answering 500 for a minute",
        f"`churnsignal serve alerts` alone, with `CHURNSIGNAL_ALERTS_DELIVERY_DEADLINE_S={SLACK_DEADLINE_S:.0f}` "
        f"(the default, 120 s, is shorter than this outage plus the backoff: a notification first tried at the "
        f"outage's start would be given up). {SLACK_BEFORE} critical risks are notified normally; then the local "
        f"Slack answers every request `500 {{\"ok\": false, \"error\": \"internal_error\"}}` for "
        f"{SLACK_OUTAGE_S:.0f} s, while {SLACK_DURING} more are published ({SLACK_DURING_RATE:g}/s); then it "
        "recovers. Everything must be delivered afterwards, once.")
    env = {"CHURNSIGNAL_ALERTS_DELIVERY_DEADLINE_S": str(SLACK_DEADLINE_S)}
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp, slack_stand_in() as slack:
        async with fresh_stack(ctx, "slack", slack.api_url, Path(tmp), env) as stack:
            stack.start("alerts")
            await stack.wait_ready("alerts")
            made = [champion_left(stack.config.run, "slack", i) for i in range(total)]
            channels = {c for c, _ in made}
            slack.fake.add_channel(*channels)
            marker = "Chaos slack"
            topic = Topics(stack.config.prefix).risks
            before = await publish_risks(ctx.kafka_bootstrap_servers, topic, [r for _, r in made[:SLACK_BEFORE]],
                                         10.0)
            first = {c for c, _ in made[:SLACK_BEFORE]}
            await _wait("the notifications before the outage", _all_arrived(slack, first, marker), 60)
            log(f"Slack answers 500 for {SLACK_OUTAGE_S:.0f} s")
            slack.fail_for(SLACK_OUTAGE_S)
            outage_end = time.monotonic() + SLACK_OUTAGE_S
            during = await publish_risks(ctx.kafka_bootstrap_servers, topic, [r for _, r in made[SLACK_BEFORE:]],
                                         SLACK_DURING_RATE)
            await asyncio.sleep(max(0.0, outage_end - time.monotonic()))
            received_in_outage = slack.tally(channels, marker)[0] - SLACK_BEFORE
            log(f"Slack recovered after answering {slack.failed} requests with 500")
            recovered = time.monotonic()
            await _wait("every notification", _all_arrived(slack, channels, marker), 180,
                        progress=_arrived_progress(slack, channels, marker))
            last_arrival = max((m.arrived_at for m in slack.fake.messages() if m.channel in channels), default=0.0)
            await asyncio.sleep(3.0)
            await _notification_counts(result, stack, slack, channels, marker, before + during)
            result.counts.update({
                "requests answered 500 during the outage": slack.failed,
                "notifications received during the outage": received_in_outage,
                "last notification after recovery (s)": round(max(0.0, last_arrival - recovered), 1),
            })
            duplicated = result.summary.get("notifications_duplicated", 0)
            if duplicated:
                result.findings.append(f"{duplicated} notification(s) duplicated by retries after 500 answers")
            _alive(result, stack, "alerts")
    return result


# -------------------------------------------------------------------------------------------- 5. soak
SOAK_RATE = 1000
# Champion departures, each a different account's, during the first two thirds of the soak only: each adds what
# is kept per account at risk (below), so the last third, with none, shows whether anything grows without them.
SOAK_DEPARTURES_PER_S = 3.0
SOAK_DEPARTING_SHARE = 2 / 3
SOAK_SAMPLE_S = 30.0
SOAK_RETENTION_INTERVAL_S = 60.0
# Ages of a few minutes (docs/retention.md), so that rows get old enough to be pruned within the soak and the
# tables level off after the first retention cycles. The deduplication horizons are 5 minutes too, so the
# allowed lateness is a minute (the horizon must cover it). alerts_deliveries keeps its least age, 8 days (the
# daily digest looks back that far); alerts_slack_requests 10 minutes (twice Slack's replay window).
SOAK_AGES: dict[str, str] = {
    "scoring_processed_events": "5m", "scoring_outbox": "5m", "scoring_history": "5m", "alerts_processed": "5m",
    "alerts_attempts": "5m", "alerts_digest_items": "5m", "alerts_slack_requests": "10m"}
SOAK_LATENESS_S = 60
# What grows with each departure whatever the ages (every departure is another account's): flat only once they stop.
SOAK_GROWS_WITH_DEPARTURES = {
    "scoring_history": "each account keeps its latest snapshot: one more kept row per account at risk",
    "alerts_deliveries": "its least age is 8 days, and the deliveries of open alerts stay (no alert is "
                         "acknowledged here)",
    "scoring RSS": "scoring keeps the decoded state of the accounts it scored last (up to 5,000), and an "
                   "account with an open risk keeps more (the risk, its reasons, its last components)",
}


def departure_in(seq: int, per_batch: float, departures: int) -> int | None:
    """The number of the departure that batch `seq` carries, if any: `per_batch` (under 1) a batch on average,
    spread evenly, until `departures` have gone."""
    before = int(seq * per_batch)
    if int((seq + 1) * per_batch) > before and before < departures:
        return before
    return None


def soak_settings() -> Settings:
    """The soak's retention settings, checked as the services will check them."""
    return Settings(retention_interval_s=SOAK_RETENTION_INTERVAL_S, scoring_allowed_lateness_s=SOAK_LATENESS_S,
                    retention_days=dict(SOAK_AGES))


def soak_env() -> dict[str, str]:
    return {"CHURNSIGNAL_RETENTION_INTERVAL_S": f"{SOAK_RETENTION_INTERVAL_S:g}",
            "CHURNSIGNAL_SCORING_ALLOWED_LATENESS_S": str(SOAK_LATENESS_S),
            "CHURNSIGNAL_RETENTION_DAYS": json.dumps(SOAK_AGES)}


def soak_ages_note(settings: Settings) -> str:
    ages = ", ".join(f"{table} {format_age(settings.retention_age(table) / timedelta(days=1))}"
                     for table in sorted(RETENTION_DAYS))
    horizon = settings.retention_age("scoring_processed_events")
    kept = horizon + dedup_grace(horizon) + timedelta(seconds=SOAK_LATENESS_S)
    return (f"Retention: `CHURNSIGNAL_RETENTION_DAYS='{json.dumps(SOAK_AGES)}'`, "
            f"`CHURNSIGNAL_RETENTION_INTERVAL_S={SOAK_RETENTION_INTERVAL_S:g}` and "
            f"`CHURNSIGNAL_SCORING_ALLOWED_LATENESS_S={SOAK_LATENESS_S}` (a horizon of minutes needs a lateness as "
            f"short). Ages in force: {ages}. Processed ids are kept the horizon plus a grace "
            f"({format_age(dedup_grace(horizon) / timedelta(days=1))}) behind the partitions' clocks, which trail "
            f"the newest event by the lateness: an id goes about {kept.total_seconds() / 60:.0f} minutes after it "
            "was recorded. A series *levels off* when its last third of the samples grew at most half as much "
            "as its first third, or by under 2% of its last value.")


class ProcessedIds:
    """Scoring's dedupe record read as it grows (the ids since the last read, with a minute of overlap) and
    kept here: the ids retention prunes during the soak still count as scored."""

    OVERLAP = timedelta(minutes=1)

    def __init__(self, url: str) -> None:
        self.url = url
        self.ids: set[str] = set()
        self._since = datetime(1970, 1, 1, tzinfo=UTC)

    async def read(self) -> set[str]:
        rows = await fetch(self.url, "SELECT event_id, processed_at FROM scoring_processed_events "
                                     "WHERE processed_at >= $1", self._since)
        if rows:
            self.ids.update(r["event_id"] for r in rows)
            self._since = max(r["processed_at"] for r in rows) - self.OVERLAP
        return self.ids


async def _sample(stack: Stack, started: float) -> Sample:
    rows: dict[str, int] = {}
    sizes: dict[str, int] = {}
    url = stack.config.database_url
    for table in SOAK_TABLES:
        found = await fetch(url, "SELECT to_regclass($1) IS NOT NULL AS here", table)
        if not found[0]["here"]:
            continue
        rows[table] = await _count(url, table)
        sizes[table] = int((await fetch(url, "SELECT pg_total_relation_size($1) AS n", table))[0]["n"])
    return Sample(at_s=time.monotonic() - started, rss={n: stack.rss(n) for n in SOAK_SERVICES}, rows=rows,
                  sizes=sizes)


async def _post_and_apply(stack: Stack, events: list[dict[str, Any]], applied_before: int) -> int:
    """Post setup events and wait until scoring applied them; scoring's applied count after."""
    await post_setup(stack.ports["ingest"], events)
    target = applied_before + len(events)

    async def applied() -> bool:
        return await stack.metric("scoring", "churnsignal_scoring_events_total", outcome="processed") >= target

    if not await _wait("scoring to apply the setup", applied, 300):
        raise RuntimeError("scoring did not apply the setup events within 300 s")
    return target


async def soak(ctx: Context, options: Any) -> CaseResult:
    minutes = float(options.soak_minutes)
    seconds = minutes * 60
    departures = int(seconds * SOAK_DEPARTING_SHARE * SOAK_DEPARTURES_PER_S)
    accounts = departures + 10
    settings = soak_settings()
    result = CaseResult(
        "soak", f"5. Soak: {minutes:g} minutes at {SOAK_RATE:,} events/s",
        f"Ingest, scoring and alerts as `churnsignal serve` processes, with retention ages of a few minutes. "
        f"Setup: {accounts:,} accounts, each with a CSM (a Slack DM of its own) and a champion. Then for "
        f"{minutes:g} minutes {SOAK_RATE:,} events/s go to ingest (batches of {INGEST_BATCH}: usage over those "
        f"accounts, and during the first {SOAK_DEPARTING_SHARE * minutes:g} minutes {SOAK_DEPARTURES_PER_S:g} "
        f"champion departures a second, each another account's and each one `champion_left` alert; none after, "
        f"so that the last third shows whether anything grows without new accounts at risk). "
        f"Every {SOAK_SAMPLE_S:.0f} s: the RSS of each service process (psutil, with its children) and the rows "
        f"and size (`pg_total_relation_size`) of {', '.join(SOAK_TABLES)}; scoring's processed ids are read as "
        "they are recorded, so the ones pruned meanwhile still count as scored.")
    result.notes.append(soak_ages_note(settings))
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp, slack_stand_in() as slack:
        async with fresh_stack(ctx, "soak", slack.api_url, Path(tmp), soak_env()) as stack:
            for name in SOAK_SERVICES:
                stack.start(name)
            await stack.wait_ready(*SOAK_SERVICES)
            run = stack.config.run

            def channel(i: int) -> str:
                return f"USOAK{i:06d}"

            slack.fake.add_channel(*(channel(i) for i in range(accounts)))
            setup = setup_accounts(run, accounts, channel)
            # The accounts and champions (a month old) first, then each account's first use (now): with a
            # horizon of minutes, an old event after a partition's clock reached now would be refused as expired.
            old = [e for e in setup if e["type"] != "usage"]
            applied = await _post_and_apply(stack, old, 0)
            await _post_and_apply(stack, [e for e in setup if e["type"] == "usage"], applied)
            log(f"setup: {len(setup):,} events applied")
            driver = Driver(stack.ports["ingest"])
            driver.tally.all_ids.update(e["id"] for e in setup)
            driver.tally.accepted_ids.update(e["id"] for e in setup)
            driver.tally.events = len(setup)
            per_batch = SOAK_DEPARTURES_PER_S * INGEST_BATCH / SOAK_RATE   # departures per batch (under 1)
            ids = ProcessedIds(stack.config.database_url)
            await ids.read()

            def soak_batch(seq: int) -> list[dict[str, Any]]:
                now = datetime.now(UTC)
                out = [usage(run, seq, j, f"s-{run}-{(seq * 7 + j) % accounts:05d}", now)
                       for j in range(INGEST_BATCH - 1)]
                k = departure_in(seq, per_batch, departures)
                if k is not None:
                    out.append(departure(run, k))
                else:
                    out.append(usage(run, seq, INGEST_BATCH - 1, f"s-{run}-{seq % accounts:05d}", now))
                return out

            started = time.monotonic()
            stop = asyncio.Event()

            async def sampler() -> None:
                while not stop.is_set():
                    try:
                        await ids.read()
                        s = await _sample(stack, started)
                        result.samples.append(s)
                        log(f"  sample at {s.at_s:.0f}s: RSS "
                            + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in s.rss.items())
                            + "; rows " + ", ".join(f"{k} {v:,}" for k, v in s.rows.items()))
                    except Exception as exc:  # noqa: BLE001 - a missed sample is reported, the soak goes on
                        log(f"  sample failed: {exc}")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), SOAK_SAMPLE_S)

            sampling = asyncio.create_task(sampler())
            try:
                driver.retry_until = time.monotonic() + seconds + 60
                await driver.run(seconds, SOAK_RATE, INGEST_BATCH, soak_batch)
            finally:
                stop.set()
                await sampling
            sent_departures = {f"{run}-left-{i}" for i in range(departures)}
            accepted_departures = len(sent_departures & driver.tally.accepted_ids)
            expected = {channel(i) for i in range(departures) if f"{run}-left-{i}" in driver.tally.accepted_ids}
            marker = "Champion left"
            await _wait("every champion_left notification", _all_arrived(slack, expected, marker), 180,
                        progress=_arrived_progress(slack, expected, marker))
            scored = await _await_scoring(stack, driver.tally, timeout_s=300, ids=ids)
            await asyncio.sleep(3.0)
            scored = await ids.read()
            result.samples.append(await _sample(stack, started))
            await _event_counts(result, stack, driver.tally, scored)
            received, duplicated = slack.tally(expected, marker)
            result.counts.update({
                "champion departures accepted": accepted_departures,
                "notifications expected (one champion_left DM per departure)": len(expected),
                "notifications received": received,
                "notifications duplicated (extra copies)": duplicated,
                "rows deleted by retention, scoring / alerts (metric)":
                    f"{int(await stack.metric('scoring', 'churnsignal_retention_deleted_total')):,} / "
                    f"{int(await stack.metric('alerts', 'churnsignal_retention_deleted_total')):,}",
            })
            result.summary.update(notifications_expected=len(expected), notifications_received=received,
                                  notifications_duplicated=duplicated)
            if received < len(expected):
                result.findings.append(f"{len(expected) - received} of {len(expected)} champion_left "
                                       "notifications never arrived")
            if duplicated:
                result.findings.append(f"{duplicated} notification(s) duplicated with no failure injected")
            _levels(result, settings, seconds)
            _alive(result, stack, *SOAK_SERVICES)
    return result


def _pruned_after(settings: Settings, table: str) -> timedelta:
    """How old a row of `table` gets in the soak before a retention run deletes it (at the latest)."""
    age = settings.retention_age(table)
    if table == "scoring_processed_events":    # kept behind the partitions' clocks, which trail by the lateness
        age += dedup_grace(age) + timedelta(seconds=settings.scoring_allowed_lateness_s)
    elif table == "alerts_processed":
        age += dedup_grace(age)
    return age + timedelta(seconds=settings.retention_interval_s)


def _levels(result: CaseResult, settings: Settings, seconds: float) -> None:
    """Which series levelled off, said in the report. The last third of the soak has no departures: a process
    or a table still growing there is a finding, unless the table's rows are pruned too late for this soak
    (after its first two thirds)."""
    samples = result.samples
    if len(samples) < 6:
        result.notes.append("Too few samples to tell whether the series level off (a soak of 3 minutes or more "
                            "takes six).")
        return
    # (what the series is of: a service or a table, its name in the report, its values)
    series = [(name, f"{name} RSS", [float(s.rss.get(name, 0)) for s in samples]) for name in SOAK_SERVICES]
    series += [(table, f"{table} rows", [float(s.rows.get(table, 0)) for s in samples]) for table in SOAK_TABLES]
    series += [(table, f"{table} size", [float(s.sizes.get(table, 0)) for s in samples]) for table in SOAK_TABLES]
    levelled: list[str] = []
    growing: list[tuple[str, str]] = []
    for of, label, values in series:
        if trend(values).startswith("levels off"):
            levelled.append(label)
        else:
            growing.append((of, label))
    result.notes.append("Levelled off: " + (", ".join(levelled) or "none") + ". Still growing at the end: "
                        + (", ".join(label for _, label in growing) or "none") + ".")
    for name, why in SOAK_GROWS_WITH_DEPARTURES.items():
        result.notes.append(f"{name} grows with the departures: {why}.")
    pruned_after = {table: _pruned_after(settings, table).total_seconds() for table in SOAK_TABLES
                    if table not in SOAK_GROWS_WITH_DEPARTURES}
    late = {table for table, after in pruned_after.items() if after > seconds * 2 / 3}

    def listed(tables: list[str]) -> str:
        return ", ".join(f"{table} ({pruned_after[table] / 60:.0f} min)" for table in tables)

    if late:
        result.notes.append(f"Too short a soak for these tables to level off: their rows go only once this old "
                            f"(age, grace and lateness, plus a retention interval), later than two thirds of "
                            f"the soak: {listed([t for t in pruned_after if t in late])}.")
    if len(late) < len(pruned_after):
        result.notes.append(f"Expected to level off (rows pruned once this old): "
                            f"{listed([t for t in pruned_after if t not in late])}.")
    unexpected = [label for of, label in growing if of not in late]
    if unexpected:
        result.findings.append(f"still growing in the last third of the soak, with no departures and the "
                               f"first retention cycles done: {', '.join(unexpected)}")


CASES: dict[str, Callable[[Context, Any], Awaitable[CaseResult]]] = {
    "broker": broker_restart,
    "postgres": postgres_restart,
    "kill": kill_alerts,
    "slack": slack_outage,
    "soak": soak,
}
