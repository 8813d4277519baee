"""Topic names (docs/events.md). Input topics are co-partitioned: same partition count, keyed by account_id."""

from __future__ import annotations

from dataclasses import dataclass

from shared.events import EventType

# The health topic keeps the newest message of each account for ever (compaction by key), and every message
# for at least a week (`min.compaction.lag.ms`), so a reader lagging less than that misses no change.
HEALTH_TOPIC_CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": str(7 * 24 * 3600 * 1000)}
# Segment users' accounts: only the newest record of each user matters (compaction by key, for ever).
SEGMENT_USERS_TOPIC_CONFIG = {"cleanup.policy": "compact"}


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str = "churnsignal."

    @property
    def usage(self) -> str:
        return f"{self.prefix}usage"

    @property
    def tickets(self) -> str:
        return f"{self.prefix}tickets"

    @property
    def sentiment(self) -> str:
        return f"{self.prefix}sentiment"

    @property
    def accounts(self) -> str:
        return f"{self.prefix}accounts"

    @property
    def risks(self) -> str:
        return f"{self.prefix}risks"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}deadletter"

    @property
    def health(self) -> str:
        """Every health change and risk transition, keyed by account_id, compacted (docs/events.md)."""
        return f"{self.prefix}health"

    @property
    def segment_users(self) -> str:
        """The account each Segment user joined (`group` calls), keyed by the user, compacted; written and
        read by ingest (services/ingest/segment/directory.py)."""
        return f"{self.prefix}segment-users"

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.usage, self.tickets, self.sentiment, self.accounts)

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.inputs, self.risks, self.deadletter, self.health, self.segment_users)

    @property
    def configs(self) -> dict[str, dict[str, str]]:
        """Topic configs beyond the broker's defaults, by topic (given to `Bus.ensure_topics`)."""
        return {self.health: HEALTH_TOPIC_CONFIG, self.segment_users: SEGMENT_USERS_TOPIC_CONFIG}

    def for_event(self, event_type: EventType | str) -> str:
        return {
            EventType.USAGE: self.usage,
            EventType.TICKET: self.tickets,
            EventType.SENTIMENT: self.sentiment,
            EventType.ACCOUNT: self.accounts,
            EventType.CONTACT: self.accounts,
        }[EventType(event_type)]
