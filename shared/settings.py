"""Configuration: one pydantic-settings class, `CHURNSIGNAL_*` variables, built once and passed in."""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
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

    # Scoring
    scoring_group_id: str = "churnsignal-scoring"
    scoring_batch_max_records: int = 5000
    scoring_allowed_lateness_s: int = 3600
    # How long an input topic whose end offset cannot be read may hold its partition's clock back.
    scoring_idle_timeout_s: float = 30.0
    scoring_config_file: str | None = None

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

    @property
    def embedded(self) -> bool:
        return not self.kafka_bootstrap_servers.strip()
