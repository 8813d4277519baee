"""Metrics: every name in one place, built on an injected registry (docs/metrics.md defines the revenue
gauges; deploy/RUNBOOK.md explains the alert rules built on the others).

Names carry the `churnsignal_` prefix and `_total` / `_seconds` suffixes; labels are low-cardinality
(never an account id). Dashboards and alert rules in deploy/ rely on these names.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
from collections.abc import Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000)


def new_registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


@functools.cache
def churnsignal_version() -> str:
    """The installed churnsignal distribution's version (pyproject.toml), `unknown` when not installed."""
    try:
        return importlib.metadata.version("churnsignal")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _label_values(metric: Gauge) -> set[tuple[str, ...]]:
    """The label values a labelled metric has children for."""
    return {tuple(s.labels[name] for name in metric._labelnames)  # noqa: SLF001
            for family in metric.collect() for s in family.samples}


class CommonMetrics:
    """Shared by all services: readiness, dead letters, the build and the process (docs/metrics.md)."""

    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        self.build_info = Gauge("churnsignal_build_info",
                                "Always 1; the labels name the running build: service, churnsignal version, "
                                "Python version", ["service", "version", "python"], registry=registry)
        self.build_info.labels(service, churnsignal_version(), platform.python_version()).set(1)
        # A registry of our own has none of the default collectors: process_* (CPU, resident memory, file
        # descriptors, start time; Linux only) and python_info.
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.ready = Gauge("churnsignal_ready", "1 when the service is ready to serve", ["service"],
                           registry=registry).labels(service)
        self.dead_letters = Counter("churnsignal_dead_letters_total",
                                    "Records or deliveries dead-lettered, by reason",
                                    ["service", "reason"], registry=registry)
        self.service = service


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter("churnsignal_ingest_events_total", "Events received, by type and outcome",
                              ["type", "outcome"], registry=registry)
        self.requests = Counter("churnsignal_ingest_requests_total", "Ingest requests by HTTP status",
                                ["status"], registry=registry)
        self.request_latency = Histogram("churnsignal_ingest_request_duration_seconds",
                                         "Ingest request latency", buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_size = Histogram("churnsignal_ingest_batch_events", "Events per ingest request",
                                    buckets=BATCH_BUCKETS, registry=registry)
        self.producer_errors = Counter("churnsignal_ingest_producer_errors_total",
                                       "Publishes the bus did not acknowledge", registry=registry)


class SegmentMetrics:
    """Segment on ingest (the Tracking API paths and `/v1/sources/segment`): the messages that map to no event,
    by Segment type (`track`, `identify`, `group`, `page`, `screen`, `alias`, `other`) and reason (`no_account`,
    `unsupported_type`, `disabled`), and the users whose account ingest knows from `group` calls."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.unmapped = Counter("churnsignal_ingest_segment_unmapped_total",
                                "Segment messages that map to no event, by Segment type and reason",
                                ["type", "reason"], registry=registry)
        self.users = Gauge("churnsignal_ingest_segment_users",
                           "Segment users whose account this ingest process knows (from group calls)",
                           registry=registry)


class SourceMetrics:
    """Vendor webhooks on ingest (`/v1/sources/<source>`): requests by status, vendor events by outcome
    (`published`: became an event; `ignored`: a kind of vendor event scoring does not use)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("churnsignal_ingest_source_requests_total",
                                "Vendor webhook requests by source and HTTP status", ["source", "status"],
                                registry=registry)
        self.events = Counter("churnsignal_ingest_source_events_total",
                              "Vendor events received on /v1/sources/*, by source and outcome (published, "
                              "ignored)", ["source", "outcome"], registry=registry)


class RetentionMetrics:
    """Retention (docs/retention.md), on scoring and alerts: rows pruned per table, and when a run last ended."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.deleted = Counter("churnsignal_retention_deleted_total",
                               "Rows deleted by retention, by table", ["table"], registry=registry)
        self.last_run = Gauge("churnsignal_retention_last_run_timestamp_seconds",
                              "Unix time at which the last retention run of this instance completed",
                              registry=registry)


class ScoringMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.retention = RetentionMetrics(registry)
        self.events = Counter("churnsignal_scoring_events_total", "Input events processed, by type and outcome",
                              ["type", "outcome"], registry=registry)
        self.batch_latency = Histogram("churnsignal_scoring_batch_duration_seconds",
                                       "Time to process and commit one consumed batch",
                                       buckets=LATENCY_BUCKETS, registry=registry)
        self.processing_latency = Histogram("churnsignal_scoring_processing_latency_seconds",
                                            "From ingest (received_at) to state committed",
                                            buckets=LATENCY_BUCKETS, registry=registry)
        self.consumer_lag = Gauge("churnsignal_consumer_lag_records", "Records not yet consumed, by topic",
                                  ["service", "topic"], registry=registry)
        self.risks = Counter("churnsignal_risks_total", "Risk transitions, by type and transition",
                             ["type", "transition"], registry=registry)
        self.open_risks = Gauge("churnsignal_open_risks", "Open risks by type", ["type"], registry=registry)
        self.watermark_age = Gauge("churnsignal_scoring_watermark_age_seconds",
                                   "Wall clock minus the event-time watermark", registry=registry)
        self.tracked_accounts = Gauge("churnsignal_scoring_tracked_accounts", "Accounts held in memory",
                                      registry=registry)
        self.idle_topics = Counter("churnsignal_scoring_idle_topics_total",
                                   "Times the merge went on without an input topic whose end offset could not "
                                   "be read for the idleness timeout", registry=registry)
        self.paused_partitions = Gauge("churnsignal_scoring_paused_partitions",
                                       "Input topic-partitions paused at the fetcher by back-pressure",
                                       registry=registry)
        # Revenue, read from the database periodically (docs/metrics.md). Every scoring instance reports
        # the same whole-database numbers: aggregate across instances with max, not sum.
        self.arr_at_risk = Gauge(
            "churnsignal_arr_at_risk",
            "ARR of the accounts that are not churned and have an open risk, each account counted once under "
            "the highest severity among its open risks", ["severity"], registry=registry)
        self.churned_arr = Gauge(
            "churnsignal_churned_arr",
            "ARR of the accounts whose lifecycle is churned, by UTC month (YYYY-MM) of lifecycle_at; the last "
            "13 months, the current one to date", ["month"], registry=registry)
        self.gross_revenue_retention = Gauge(
            "churnsignal_gross_revenue_retention",
            "Gross revenue retention of a UTC month (YYYY-MM): 1 - C / S, where S is the ARR of the accounts "
            "live at the month's start (first seen before it and not churned before it) and C the ARR of those "
            "accounts whose churn (lifecycle_at) falls in the month; current ARR of each account, downgrades "
            "not counted; the last 13 months, the current one to date; no sample when S is 0",
            ["month"], registry=registry)

    def set_revenue(self, at_risk: Mapping[str, float], churned: Mapping[str, float],
                    retention: Mapping[str, float]) -> None:
        """Set the revenue gauges to these values; months no longer given are dropped."""
        for severity, arr in at_risk.items():
            self.arr_at_risk.labels(severity).set(arr)
        for gauge, values in ((self.churned_arr, churned), (self.gross_revenue_retention, retention)):
            for month, value in values.items():
                gauge.labels(month).set(value)
            for (month,) in _label_values(gauge) - {(m,) for m in values}:
                gauge.remove(month)


class AlertsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.retention = RetentionMetrics(registry)
        self.notifications = Counter("churnsignal_notifications_total",
                                     "Notifications by receiver type and outcome (sent, failed, dead_letter, "
                                     "suppressed)", ["receiver", "outcome"], registry=registry)
        self.retries = Counter("churnsignal_notification_retries_total", "Delivery retries by receiver type",
                               ["receiver"], registry=registry)
        self.delivery_latency = Histogram("churnsignal_notification_delivery_duration_seconds",
                                          "One delivery attempt", ["receiver"], buckets=LATENCY_BUCKETS,
                                          registry=registry)
        self.signal_latency = Histogram("churnsignal_signal_to_notification_seconds",
                                        "From the source event's ingest time to the notification handed to "
                                        "the receiver", ["receiver"], buckets=LATENCY_BUCKETS, registry=registry)
        self.consumer_lag = Gauge("churnsignal_consumer_lag_records", "Records not yet consumed, by topic",
                                  ["service", "topic"], registry=registry)
        self.risk_events = Counter("churnsignal_alerts_risk_events_total",
                                   "Risk events consumed by outcome", ["outcome"], registry=registry)
        self.rate_slot_fallbacks = Counter("churnsignal_alerts_rate_slot_fallbacks_total",
                                           "Rate-limited sends spaced by this instance alone because the "
                                           "shared rate-slot table was unreachable", registry=registry)


class FeedMetrics:
    """The health feed's Standard Webhooks (alerts service), by subscriber (its configured name)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter("churnsignal_feed_deliveries_total",
                                  "Health feed messages by subscriber and outcome (delivered, dead_letter, "
                                  "filtered: a type the subscriber did not ask for)", ["subscriber", "outcome"],
                                  registry=registry)
        self.retries = Counter("churnsignal_feed_retries_total",
                               "Health feed delivery attempts that failed and are retried, by subscriber",
                               ["subscriber"], registry=registry)
        self.attempt_latency = Histogram("churnsignal_feed_delivery_duration_seconds",
                                         "One health feed delivery attempt, by subscriber", ["subscriber"],
                                         buckets=LATENCY_BUCKETS, registry=registry)
        self.lag = Gauge("churnsignal_feed_lag_records",
                         "Health topic records a subscriber has not had yet (not delivered, dead-lettered or "
                         "filtered and committed)", ["subscriber"], registry=registry)
