"""Builders of raw input events (the JSON senders post) for the scoring service tests."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.bus.port import partition_for

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
_ids = itertools.count(1)


def event(kind: str, account_id: str, at: datetime, data: dict[str, Any], event_id: str | None = None
          ) -> dict[str, Any]:
    return {"id": event_id or f"e{next(_ids)}", "type": kind, "account_id": account_id,
            "occurred_at": at.isoformat(), "data": data}


def usage(account_id: str, at: datetime, feature: str = "login", **data: Any) -> dict[str, Any]:
    return event("usage", account_id, at, {"feature": feature, **data})


def ticket(account_id: str, at: datetime, ticket_id: str, status: str = "opened",
           **data: Any) -> dict[str, Any]:
    return event("ticket", account_id, at, {"ticket_id": ticket_id, "status": status, **data})


def account(account_id: str, at: datetime, **data: Any) -> dict[str, Any]:
    return event("account", account_id, at, data)


def days(n: float) -> timedelta:
    return timedelta(days=n)


def accounts_on_partition(partition: int, n: int, prefix: str = "acct", partitions: int = 6) -> list[str]:
    """n account ids whose records land on the given partition number."""
    out: list[str] = []
    for i in itertools.count():
        candidate = f"{prefix}-{i}"
        if partition_for(candidate.encode(), partitions) == partition:
            out.append(candidate)
            if len(out) == n:
                return out
    raise AssertionError("unreachable")
