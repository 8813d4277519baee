"""The event-time clock of one partition.

The watermark is the largest `occurred_at` seen minus the allowed lateness, and never moves back: once it
passes a moment, every event from before that moment is assumed to have arrived. Per-account timers
(`schedule`) fire when the watermark reaches them, which is how an account that went silent is evaluated
while other accounts' events move the clock forward.

The consumer feeds a partition's events to its clock only in the merge order of its input topics, taking
an event only once every input topic has delivered everything before it (the rule, and its one setting,
are stated in `services/scoring/entrypoints/feed.py`): so the watermark never passes a moment while a
lagging topic still holds events from before it, however the topics arrived.
"""

from __future__ import annotations

import heapq
from datetime import datetime, timedelta


class PartitionClock:
    def __init__(self, allowed_lateness: timedelta, watermark: datetime | None = None) -> None:
        if allowed_lateness < timedelta(0):
            raise ValueError("allowed_lateness must be >= 0")
        self.allowed_lateness = allowed_lateness
        self.watermark: datetime | None = watermark
        self._due: dict[str, datetime] = {}
        # Lazy deletion: an entry is live only while it matches `_due[account]`.
        self._heap: list[tuple[datetime, str]] = []

    def observe(self, occurred_at: datetime) -> None:
        candidate = occurred_at - self.allowed_lateness
        if self.watermark is None or candidate > self.watermark:
            self.watermark = candidate

    def schedule(self, account_id: str, due: datetime | None) -> None:
        """Set (or, with None, clear) the account's timer, replacing any earlier one."""
        if due is None:
            self._due.pop(account_id, None)
            return
        if self._due.get(account_id) == due:
            return
        self._due[account_id] = due
        heapq.heappush(self._heap, (due, account_id))
        if len(self._heap) > 4 * len(self._due) + 64:
            self._compact()

    def due_at(self, account_id: str) -> datetime | None:
        return self._due.get(account_id)

    def pop_due(self, limit: int | None = None) -> list[tuple[datetime, str]]:
        """Remove and return the timers with due <= watermark, sorted by (due, account_id); at most
        `limit` of them (the rest stay due, see `overdue`).

        Evaluating them usually schedules new timers; call again until it returns nothing.
        """
        heap = self._heap
        watermark = self.watermark
        if not heap or watermark is None or heap[0][0] > watermark:
            return []   # (the common case: called after every event)
        out: list[tuple[datetime, str]] = []
        left = -1 if limit is None else limit
        while heap and heap[0][0] <= watermark and left != 0:
            due, account_id = heapq.heappop(heap)
            if self._due.get(account_id) == due:
                del self._due[account_id]
                out.append((due, account_id))
                left -= 1
        return out

    def has_due(self) -> bool:
        """Whether a timer is due (<= watermark): a sweep left for later by `pop_due(limit)`."""
        heap = self._heap
        watermark = self.watermark
        while heap and watermark is not None and heap[0][0] <= watermark:
            due, account_id = heap[0]
            if self._due.get(account_id) == due:
                return True
            heapq.heappop(heap)   # (a stale entry)
        return False

    def pop_overdue(self, account_id: str) -> datetime | None:
        """The account's timer when it is due (<= watermark), removed; None otherwise. An event of an
        account whose timer a bounded sweep has not reached yet fires that timer first, so the account
        sees its timers and events in the same order as without the bound."""
        due = self._due.get(account_id)
        if due is None or self.watermark is None or due > self.watermark:
            return None
        del self._due[account_id]   # (its heap entry goes stale)
        return due

    def __len__(self) -> int:
        return len(self._due)

    def _compact(self) -> None:
        self._heap = [(due, account_id) for account_id, due in self._due.items()]
        heapq.heapify(self._heap)
