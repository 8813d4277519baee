"""Configuration: one pydantic-settings class, `CHURNSIGNAL_*` variables, built once and passed in."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Scope = str  # "ingest", "ingest:<type>", "read", "admin"


class ApiKey(BaseModel):
    name: str
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    scopes: list[Scope]

    @field_validator("sha256")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.lower()


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# URL schemes read as the driver the project uses: `postgres://` (Heroku, many hosting providers) and plain
# `postgresql://` / `sqlite://` would otherwise fail with SQLAlchemy's NoSuchModuleError (psycopg2, pysqlite).
_DATABASE_SCHEMES = {"postgres://": "postgresql+asyncpg://", "postgresql://": "postgresql+asyncpg://",
                     "sqlite://": "sqlite+aiosqlite://"}


# Retention (docs/retention.md): the age in days after which each table's rows are pruned, and the least
# age each accepts (a minute unless named here). `scoring_processed_events` and `alerts_processed` hold the
# deduplication records: their age is each service's deduplication horizon (an older event arriving again is
# not applied, but counted).
RETENTION_DAYS: dict[str, float] = {
    "scoring_processed_events": 35, "scoring_outbox": 7, "scoring_history": 400,
    "alerts_processed": 35, "alerts_deliveries": 90, "alerts_attempts": 90, "alerts_digest_items": 90,
    "alerts_slack_requests": 1,
}
# The daily digest looks back 8 days for the last one it sent (services/alerts/domain/daily.py); a Slack click's
# signature is kept twice Slack's 5-minute replay window (services/alerts/entrypoints/actions_api.py).
RETENTION_MIN_DAYS: dict[str, float] = {"alerts_deliveries": 8, "alerts_slack_requests": 10 / 1440}


def normalize_database_url(url: str) -> str:
    """`postgres://…` and `postgresql://…` as `postgresql+asyncpg://…`, `sqlite://…` as `sqlite+aiosqlite://…`."""
    for scheme, replacement in _DATABASE_SCHEMES.items():
        if url.startswith(scheme):
            return replacement + url[len(scheme):]
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHURNSIGNAL_", extra="ignore")

    # Infrastructure. An empty bootstrap list means the in-process bus (embedded mode).
    kafka_bootstrap_servers: str = ""
    topic_prefix: str = "churnsignal."
    topic_partitions: int = 6
    database_url: str = "sqlite+aiosqlite:///var/churnsignal.db"

    api_keys: list[ApiKey] = Field(default_factory=list)

    # Ingest
    ingest_max_body_bytes: int = 1024 * 1024
    ingest_max_events: int = 1000
    ingest_publish_timeout_s: float = 10.0
    ingest_retry_after_s: int = 5
    # CloudEvents on `POST /v1/events`: stripped from the front of a CloudEvent's `type` (e.g. "com.example."
    # makes "com.example.usage" the `usage` event); when set, a type without it is a 422.
    cloudevents_type_prefix: str = ""
    # Per-source shared secrets of `/v1/sources/{source}` (docs/integrations.md), one entry per source, e.g.
    # `{"zendesk": "...", "typeform": "..."}`; a source without one answers 503.
    source_secrets: dict[str, SecretStr] = Field(default_factory=dict)
    # How Segment messages become events (services/ingest/segment/mapping.yaml has the defaults and every key):
    # a YAML file overriding those defaults; unset, the defaults.
    segment_mapping_file: str | None = None
    # The public base URL vendors call ingest at (e.g. `https://ingest.example.com`), when ingest sits behind
    # a proxy that changes scheme, host or path: HubSpot signs the full URI it called. Unset: the request's own.
    ingest_public_url: str | None = None
    # Per-source options of `/v1/sources/*` (how the account is found, score fields...): a YAML file
    # (services/ingest/sources/options.py); unset, every source uses its defaults.
    sources_file: str | None = None

    # Scoring
    scoring_group_id: str = "churnsignal-scoring"
    scoring_batch_max_records: int = 5000
    scoring_allowed_lateness_s: int = 3600
    # How long an input topic whose end offset cannot be read may hold its partition's clock back.
    scoring_idle_timeout_s: float = 30.0
    scoring_config_file: str | None = None
    # Timer evaluations per batch: when a midnight makes every account's daily tick due at once, the
    # sweep goes in batches of this many, between live events (memory and latency stay bounded).
    scoring_sweep_chunk: int = Field(default=500, ge=1)

    # Retention (docs/retention.md): every service prunes its old rows this often, in short batches, and
    # each table's age, as a JSON object of days or of ages with a unit (e.g. `{"scoring_history": 730}`,
    # `{"scoring_outbox": "6h"}`; unnamed tables keep `RETENTION_DAYS`), kept in days. Kept after the
    # lateness, which the deduplication horizon must cover.
    retention_interval_s: float = Field(default=600.0, gt=0)
    retention_days: dict[str, float] = Field(default_factory=dict, validate_default=True)

    # Alerts
    alerts_group_id: str = "churnsignal-alerts"
    routing_file: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_bot_token: SecretStr | None = None
    slack_webhook_url: SecretStr | None = None
    fallback_email: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_from: str = "churnsignal@localhost"
    webhook_secret: SecretStr | None = None
    # Slack app's signing secret: checks `POST /v1/slack/interactions` (button clicks); unset, that endpoint
    # answers 503.
    slack_signing_secret: SecretStr | None = None
    public_url: str = "http://localhost:8082"
    outbox_dir: str = "var/outbox"
    alerts_batch_max_records: int = 250
    alerts_delivery_deadline_s: float = 120.0     # retries of one notification stop after this long
    alerts_repeat_check_s: float = 5.0            # how often open, unacknowledged alerts are re-checked
    alerts_digest_check_s: float = 0.5            # how often waiting digest items are looked at
    # The health feed out as Standard Webhooks: a JSON list of `{"url", "secret", "name", "types"}` (unset or
    # empty: off), read and checked by the alerts service at start (services/alerts/feed/config.py). One secret
    # string here, so that no settings error ever shows its URLs or secrets. Each subscriber reads the health
    # topic in its own consumer group, `<feed_group_id>.<name>`.
    feed_webhooks: SecretStr | None = None
    feed_group_id: str = "churnsignal-feed"
    feed_retry_deadline_s: float = Field(default=3 * 24 * 3600.0, gt=0)   # then a message is dead-lettered

    # The key signing links to the web pages and e-mail actions (shared/link_key.py: when unset, a random
    # key kept in the database, shared by every replica) and how long a link stays valid.
    link_secret: SecretStr | None = None
    link_ttl_days: float = Field(default=7, gt=0)

    # HTTP
    host: str = "127.0.0.1"
    ingest_port: int = 8080
    scoring_port: int = 8081
    alerts_port: int = 8082
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("database_url")
    @classmethod
    def _driver(cls, v: str) -> str:
        return normalize_database_url(v.strip())

    @field_validator("retention_days", mode="before")
    @classmethod
    def _ages(cls, v: object) -> object:
        from shared.retention import ages_in_days

        return ages_in_days(v)   # (`10m`, `6h`, `35d` or a number of days, as days)

    @field_validator("retention_days")
    @classmethod
    def _retention(cls, v: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        from shared.retention import MAX_AGE_DAYS, MIN_AGE_DAYS, format_age

        unknown = sorted(set(v) - set(RETENTION_DAYS))
        if unknown:
            raise ValueError(f"unknown table {unknown[0]!r} (known: {', '.join(RETENTION_DAYS)})")
        for table, days in v.items():
            least = RETENTION_MIN_DAYS.get(table, MIN_AGE_DAYS)
            if not least <= days <= MAX_AGE_DAYS:   # (NaN and infinity included)
                raise ValueError(f"{table}: should be from {format_age(least)} to {format_age(MAX_AGE_DAYS)} "
                                 f"({format_age(days)} given)")
        lateness_s = info.data.get("scoring_allowed_lateness_s")
        horizon = v.get("scoring_processed_events", RETENTION_DAYS["scoring_processed_events"])
        if isinstance(lateness_s, int) and horizon * 86400 < lateness_s:
            raise ValueError(f"scoring_processed_events: the deduplication horizon ({format_age(horizon)}) should "
                             f"be at least CHURNSIGNAL_SCORING_ALLOWED_LATENESS_S ({lateness_s} s)")
        return v

    def retention_age(self, table: str) -> timedelta:
        """How old a row of `table` gets before it is pruned (its deduplication horizon for the dedup records)."""
        return timedelta(days=self.retention_days.get(table, RETENTION_DAYS[table]))

    @property
    def embedded(self) -> bool:
        return not self.kafka_bootstrap_servers.strip()
