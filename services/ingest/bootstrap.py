"""Composition root of ingest: settings, bus, publisher, topics, metrics and the HTTP app."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import uuid
from collections.abc import AsyncIterator

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.ingest.api import PATH, EventsEndpoint, IngestApp
from services.ingest.intake import Intake
from services.ingest.openapi import install_openapi
from services.ingest.provisioning import TopicProvisioner
from services.ingest.segment.config import SegmentMapping
from services.ingest.segment.directory import UserAccounts
from services.ingest.segment.http import SegmentEndpoints
from services.ingest.sources.http import install_sources
from shared.bus import Bus, build_bus
from shared.http import KeyRing, install_common
from shared.metrics import CommonMetrics, IngestMetrics, SegmentMetrics, new_registry
from shared.settings import Settings
from shared.topics import Topics


def create_app(settings: Settings, *, bus: Bus | None = None,
               registry: CollectorRegistry | None = None) -> FastAPI:
    """The ingest app. With `bus` None it builds (and owns) the bus from the settings."""
    own_bus = bus is None
    the_bus: Bus = build_bus(settings) if bus is None else bus
    registry = new_registry() if registry is None else registry
    metrics = IngestMetrics(registry)
    common = CommonMetrics(registry, "ingest")
    topics = Topics(settings.topic_prefix)
    publisher = the_bus.publisher()
    provisioner = TopicProvisioner(the_bus, topics.all, settings.topic_partitions,
                                   attempt_timeout_s=settings.ingest_publish_timeout_s, configs=topics.configs)
    intake = Intake(publisher, topics, metrics, retry_after_s=settings.ingest_retry_after_s,
                    accepting=lambda: provisioner.ready)
    # Segment's users and their accounts: every process reads the whole topic (a group of its own).
    segment_metrics = SegmentMetrics(registry)
    segment_users = UserAccounts(the_bus, publisher, topics.segment_users,
                                 group_id=f"churnsignal-ingest-segment-users-{uuid.uuid4().hex[:12]}",
                                 on_size=segment_metrics.users.set)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Both return even while Kafka is down; the publisher reconnects and the topics are retried in
        # the background, and requests meanwhile get 503 + Retry-After.
        await publisher.start()
        provisioning: asyncio.Task[None] | None = None
        if not await provisioner.attempt():
            provisioning = asyncio.create_task(provisioner.run(), name="ingest-topics")

        async def follow_segment_users() -> None:
            if provisioning is not None:
                await provisioning  # the topic exists (compacted) before anything reads it
            await segment_users.run()

        following = asyncio.create_task(follow_segment_users(), name="ingest-segment-users")
        if own_bus:
            # Ingest runs as its own process (`churnsignal serve ingest`): move everything built at
            # start-up out of the collector's reach, so that full collections only walk request
            # objects (a third of the CPU per event otherwise, measured under load).
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            segment_users.stop()
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
            if provisioning is not None:
                provisioning.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await provisioning
            await publisher.stop()
            if own_bus:
                await the_bus.close()

    keyring = KeyRing(settings.api_keys)
    endpoint = EventsEndpoint(intake, keyring, metrics,
                              max_body_bytes=settings.ingest_max_body_bytes,
                              max_events=settings.ingest_max_events,
                              cloudevents_type_prefix=settings.cloudevents_type_prefix)
    # Observability is Prometheus (/metrics); FastAPI's OpenTelemetry hooks stay off, as they cost a
    # provider lookup on every request.
    segment = SegmentEndpoints(intake, keyring, segment_users, SegmentMapping.load(settings.segment_mapping_file),
                               metrics, segment_metrics, max_body_bytes=settings.ingest_max_body_bytes,
                               max_events=settings.ingest_max_events, retry_after_s=settings.ingest_retry_after_s,
                               secret=settings.source_secrets.get("segment"))
    app = IngestApp(endpoint=endpoint, posts=segment.routes(), title="churnsignal ingest", version="0.1.0",
                    lifespan=lifespan,
                    description="HTTP → Kafka for usage, ticket, sentiment, account and contact events.",
                    telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.segment_users = segment_users  # what tests and operators look at (`ready`, `account_of`)

    async def readiness() -> dict[str, bool]:
        checks = {"kafka": await publisher.ready(), "topics": provisioner.ready}
        common.ready.set(1 if all(checks.values()) else 0)
        return checks

    install_common(app, registry=registry, readiness=readiness)
    install_openapi(app, path=PATH, max_events=settings.ingest_max_events)
    # Vendor webhooks (Zendesk, Intercom, HubSpot, Typeform, Delighted): explicit routes, same intake.
    install_sources(app, intake, settings, registry)
    return app


def app_from_environment() -> FastAPI:
    """The app from `CHURNSIGNAL_*` variables, for ASGI servers that import a factory, e.g. several
    worker processes on one host: `uvicorn --factory services.ingest.bootstrap:app_from_environment
    --workers 2` (`churnsignal serve ingest` runs one)."""
    return create_app(Settings())
