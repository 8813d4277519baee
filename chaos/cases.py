"""The chaos cases. Each is bounded in time, prints progress to stderr, restores what it stopped and
returns its counts; a broken expectation is a finding in the result, never a fix."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
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
from chaos.report import CaseResult, Sample
from shared import settings as settings_module
from shared.settings import Settings
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
async def _await_scoring(stack: Stack, tally: DriverTally, timeout_s: float) -> set[str]:
    """Wait until scoring has recorded every accepted event (or stopped progressing); the ids it recorded."""
    url = stack.config.database_url
    expected = len(tally.accepted_ids)
    last = {"n": -1, "at": time.monotonic()}

    async def caught_up() -> bool:
        n = await _count(url, "scoring_processed_events")
        if n != last["n"]:
            last.update(n=n, at=time.monotonic())
        return n >= expected or time.monotonic() - last["at"] > 60

    async def progress() -> str:
        return f"{last['n']:,} of {expected:,} accepted events recorded"

    await _wait("scoring to catch up", caught_up, timeout_s, progress=progress)
    rows = await fetch(url, "SELECT event_id FROM scoring_processed_events")
    return {r["event_id"] for r in rows}


async def _event_counts(result: CaseResult, stack: Stack, tally: DriverTally, scored: set[str]) -> None:
    """The ingest and scoring counts of a case that posts events, and the findings they show."""
    accepted = tally.accepted_ids
    applied = int(await stack.metric("scoring", "churnsignal_scoring_events_total", outcome="processed"))
    skipped = int(await stack.metric("scoring", "churnsignal_scoring_events_total", outcome="duplicate"))
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
                                   f"see var/chaos-{stack.config.case}-{name}.log")


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


async def broker_restart(ctx: Context, _: Any) -> CaseResult:
    result = CaseResult(
        "broker", "1. Broker stopped and restarted during ingest",
        f"`churnsignal serve ingest` and `serve scoring` on a topic prefix and database of their own. A client "
        f"posts {BROKER_RATE:,} events/s (batches of {INGEST_BATCH}, unique ids) for {BROKER_LOAD_S:.0f} s, "
        f"retrying a 503 after its Retry-After (a transport error or a 30 s timeout after 1 s). At "
        f"{BROKER_STOP_AT_S:.0f} s the broker is stopped (`scripts/services.sh kafka-stop`) and "
        f"{BROKER_DOWN_S:.0f} s after the stop command started again (`kafka-start`). Then scoring catches up "
        "and `scoring_processed_events` (scoring's dedupe record) must hold every event answered 202, each "
        "applied once.")
    outage = Outage("kafka", ctx.kafka_bootstrap_servers)
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
                        f"var/chaos-broker-ingest.log")
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


async def postgres_restart(ctx: Context, _: Any) -> CaseResult:
    risks_total = int(PG_LOAD_S * PG_RISKS_PER_S)
    result = CaseResult(
        "postgres", "2. PostgreSQL restarted under load",
        f"Ingest, scoring and alerts as `churnsignal serve` processes; alerts sends to the local Slack. For "
        f"{PG_LOAD_S:.0f} s a client posts {PG_RATE:,} events/s to ingest while {risks_total} critical risk events "
        f"({PG_RISKS_PER_S:g}/s, each for its own CSM's Slack DM) are published straight to the risks topic. At "
        f"{PG_STOP_AT_S:.0f} s PostgreSQL is stopped (`scripts/services.sh pg-stop`, fast shutdown: every "
        f"connection is cut) and {PG_DOWN_S:.0f} s after the stop command started again (`pg-start`). Scoring and "
        "alerts must resume by themselves: every accepted event scored once, every risk notified once.")
    outage = Outage("pg", ctx.test_database_url)
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
SOAK_DEPARTURES_PER_S = 2.0
SOAK_SAMPLE_S = 30.0
SOAK_RETENTION_INTERVAL_S = 60.0
RETENTION_AGES: dict[str, float] = getattr(settings_module, "RETENTION_DAYS", {})


def retention_settings() -> list[str]:
    return sorted(name for name in Settings.model_fields if "retention" in name)


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


async def soak(ctx: Context, options: Any) -> CaseResult:
    minutes = float(options.soak_minutes)
    seconds = minutes * 60
    departures = int(seconds * SOAK_DEPARTURES_PER_S)
    accounts = departures + 10
    retention = retention_settings()
    result = CaseResult(
        "soak", f"5. Soak: {minutes:g} minutes at {SOAK_RATE:,} events/s",
        f"Ingest, scoring and alerts as `churnsignal serve` processes. Setup: {accounts:,} accounts, each with a CSM "
        f"(a Slack DM of its own) and a champion. Then for {minutes:g} minutes {SOAK_RATE:,} events/s go to ingest "
        f"(batches of {INGEST_BATCH}: usage over those accounts, and {SOAK_DEPARTURES_PER_S:g} champion departures "
        "a second, each one `champion_left` alert). Every "
        f"{SOAK_SAMPLE_S:.0f} s: the RSS of each service process (psutil, with its children) and the rows and "
        f"size (`pg_total_relation_size`) of {', '.join(SOAK_TABLES)}. A series *levels off* when its last third "
        "of the samples grew at most half as much as its first third.")
    env: dict[str, str] = {}
    if "retention_interval_s" in retention:
        env["CHURNSIGNAL_RETENTION_INTERVAL_S"] = str(SOAK_RETENTION_INTERVAL_S)
        ages = ", ".join(f"{table} {days:g}" for table, days in sorted(RETENTION_AGES.items()))
        result.notes.append(
            f"Retention on: `CHURNSIGNAL_RETENTION_INTERVAL_S={SOAK_RETENTION_INTERVAL_S:g}` (every service prunes "
            f"every {SOAK_RETENTION_INTERVAL_S:g} s instead of every 10 minutes, so the pruning runs during the soak) "
            f"and the default ages in days ({ages}). The shortest age a table accepts is a day, longer than the "
            "soak: no row gets old enough to be pruned here, so the tables are expected to keep growing; the "
            "soak shows the pruning's cost, not the plateau it brings after the first days.")
    elif retention:
        result.notes.append(f"Retention settings present, run with their defaults: {', '.join(retention)}.")
    else:
        result.notes.append("No `CHURNSIGNAL_RETENTION_*` settings exist in shared/settings.py at this commit: "
                            "the soak runs without table retention, so the scoring and alerts tables are expected "
                            "to grow with the events and alerts (alerts prunes `alerts_processed` after 30 days "
                            "only).")
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp, slack_stand_in() as slack:
        async with fresh_stack(ctx, "soak", slack.api_url, Path(tmp), env) as stack:
            for name in SOAK_SERVICES:
                stack.start(name)
            await stack.wait_ready(*SOAK_SERVICES)
            run = stack.config.run

            def channel(i: int) -> str:
                return f"USOAK{i:06d}"

            slack.fake.add_channel(*(channel(i) for i in range(accounts)))
            setup = setup_accounts(run, accounts, channel)
            await post_setup(stack.ports["ingest"], setup)
            log(f"setup: {len(setup):,} events posted; waiting for scoring")

            async def setup_scored() -> bool:
                return await stack.metric("scoring", "churnsignal_scoring_events_total",
                                          outcome="processed") >= len(setup)

            if not await _wait("scoring to apply the setup", setup_scored, 300):
                raise RuntimeError("scoring did not apply the setup events within 300 s")
            driver = Driver(stack.ports["ingest"])
            driver.tally.all_ids.update(e["id"] for e in setup)
            driver.tally.accepted_ids.update(e["id"] for e in setup)
            driver.tally.events = len(setup)
            every = int(SOAK_RATE / INGEST_BATCH / SOAK_DEPARTURES_PER_S)  # a departure in every n-th batch

            def soak_batch(seq: int) -> list[dict[str, Any]]:
                now = datetime.now(UTC)
                out = [usage(run, seq, j, f"s-{run}-{(seq * 7 + j) % accounts:05d}", now)
                       for j in range(INGEST_BATCH - 1)]
                if seq % every == 0 and seq // every < departures:
                    out.append(departure(run, seq // every))
                else:
                    out.append(usage(run, seq, INGEST_BATCH - 1, f"s-{run}-{seq % accounts:05d}", now))
                return out

            started = time.monotonic()
            stop = asyncio.Event()

            async def sampler() -> None:
                while not stop.is_set():
                    try:
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
            scored = await _await_scoring(stack, driver.tally, timeout_s=300)
            await asyncio.sleep(3.0)
            result.samples.append(await _sample(stack, started))
            await _event_counts(result, stack, driver.tally, scored)
            received, duplicated = slack.tally(expected, marker)
            result.counts.update({
                "champion departures accepted": accepted_departures,
                "notifications expected (one champion_left DM per departure)": len(expected),
                "notifications received": received,
                "notifications duplicated (extra copies)": duplicated,
            })
            result.summary.update(notifications_expected=len(expected), notifications_received=received,
                                  notifications_duplicated=duplicated)
            if received < len(expected):
                result.findings.append(f"{len(expected) - received} of {len(expected)} champion_left "
                                       "notifications never arrived")
            if duplicated:
                result.findings.append(f"{duplicated} notification(s) duplicated with no failure injected")
            _alive(result, stack, *SOAK_SERVICES)
    return result


CASES: dict[str, Callable[[Context, Any], Awaitable[CaseResult]]] = {
    "broker": broker_restart,
    "postgres": postgres_restart,
    "kill": kill_alerts,
    "slack": slack_outage,
    "soak": soak,
}
