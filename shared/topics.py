"""Topic names (docs/events.md). Input topics are co-partitioned: same partition count, keyed by account_id."""

from __future__ import annotations

from dataclasses import dataclass

from shared.events import EventType


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
    def inputs(self) -> tuple[str, ...]:
        return (self.usage, self.tickets, self.sentiment, self.accounts)

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.inputs, self.risks, self.deadletter)

    def for_event(self, event_type: EventType | str) -> str:
        return {
            EventType.USAGE: self.usage,
            EventType.TICKET: self.tickets,
            EventType.SENTIMENT: self.sentiment,
            EventType.ACCOUNT: self.accounts,
            EventType.CONTACT: self.accounts,
        }[EventType(event_type)]
