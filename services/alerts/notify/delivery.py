"""Delivery: rate limit -> send -> classify -> back off -> retry, within a deadline (Alertmanager's
`notify.RetryStage`), reporting every attempt.

- Retryable failures are retried with exponential backoff and full jitter (`random() * min(cap, base*2^n)`),
  never sooner than the channel's `Retry-After`; a `Retry-After` also holds back every other message to the
  same target (per `Target.rate_key`), because the receiver asked that target's sender to wait.
- Slack targets get at most one message per second per webhook / DM user (`rate_interval_s`), across every
  alerts instance when a shared `SlotStore` is given (PostgreSQL): the in-process limiter paces this
  instance's sends to a target one at a time, the store hands out the target's slots to all instances. If
  the store is unreachable, a send is paced by this instance alone (a warning a minute, a metric); it is
  never held back or failed for that.
- Permanent failures end after that one attempt: "dead_letter". A deadline that cannot fit the next
  attempt ends with "failed". Either way the caller records it; nothing retries forever.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from services.alerts.domain.content import Notification
from services.alerts.notify.channel import Channel
from shared.backoff import Backoff
from shared.errors import ChurnsignalError, PermanentFailure, RetryableFailure
from shared.metrics import AlertsMetrics, CommonMetrics

log = logging.getLogger("churnsignal.alerts.delivery")

AttemptOutcome = Literal["sent", "retry", "dead_letter", "failed"]
FinalOutcome = Literal["sent", "dead_letter", "failed"]
OnAttempt = Callable[[Notification, int, str, ChurnsignalError | None, float], Awaitable[None] | None]
SLACK_KINDS = frozenset({"slack_webhook", "slack_dm"})


@dataclass(frozen=True)
class DeliveryResult:
    outcome: FinalOutcome
    attempts: int
    error: ChurnsignalError | None = None
    duration_s: float = 0.0

    @property
    def code(self) -> str | None:
        if self.error is None:
            return None
        code = self.error.details.get("code")
        return str(code) if code is not None else type(self.error).__name__


class SlotStoreUnavailable(RetryableFailure):
    """The shared slot store could not answer (database down, connection lost, too slow)."""


class SlotStore(Protocol):
    """Send slots per rate key, shared by every alerts instance, on one clock (the store's)."""

    async def reserve(self, key: str, interval_s: float) -> float:
        """Takes the key's next free slot: returns in how many seconds from now it starts (<= 0: now) and
        moves the key's next free slot to that slot + `interval_s`. Raises SlotStoreUnavailable."""
        ...

    async def defer(self, key: str, seconds: float) -> None:
        """Moves the key's next free slot to at least now + `seconds` (a Retry-After). Raises
        SlotStoreUnavailable."""
        ...


class RateLimiter:
    """One slot per `interval` per key; `defer(key, seconds)` pushes a key's next slot (Retry-After).

    Sends to one key take the key's lock in turn, so this instance asks the shared `slots` store (if any)
    once per send. The store decides when the slot starts; after a store failure the local schedule alone
    spaces the sends, and the store is left alone for `slot_retry_s`.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, max_keys: int = 10_000,
                 slots: SlotStore | None = None, slot_timeout_s: float = 1.0, slot_retry_s: float = 5.0,
                 metrics: AlertsMetrics | None = None) -> None:
        self._clock = clock
        self._sleep = sleep
        self._next: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._max_keys = max_keys
        self._slots = slots
        self._slot_timeout = slot_timeout_s
        self._slot_retry = slot_retry_s
        self._metrics = metrics
        self._slots_down_until = float("-inf")
        self._warned_at = float("-inf")

    def next_slot(self, key: str) -> float:
        return self._next.get(key, float("-inf"))

    def defer(self, key: str, seconds: float) -> None:
        self._next[key] = max(self.next_slot(key), self._clock() + seconds)

    async def defer_shared(self, key: str, seconds: float) -> None:
        """`defer` here and, when there is a shared store, for every instance (best effort)."""
        self.defer(key, seconds)
        if self._slots is None or not self._slots_usable():
            return
        try:
            async with asyncio.timeout(self._slot_timeout):
                await self._slots.defer(key, seconds)
        except (SlotStoreUnavailable, TimeoutError) as exc:
            self._slots_failed(exc)

    async def acquire(self, key: str, interval: float, deadline: float) -> bool:
        """Waits for the key's next slot and takes it; False (slot not taken) if it is past `deadline`.
        With a shared store and `interval` > 0, the slot is the store's; a store slot that starts after
        `deadline` is given up (and wasted)."""
        self._prune()
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with asyncio.timeout(max(deadline - self._clock(), 0.0)), lock:
                wait = self.next_slot(key) - self._clock()
                if self._clock() + max(wait, 0.0) > deadline:
                    return False
                if wait > 0:
                    await self._sleep(wait)
                if interval > 0 and self._slots is not None:
                    shared = await self._reserve_shared(self._slots, key, interval)
                    if shared > 0:
                        if self._clock() + shared > deadline:
                            return False
                        await self._sleep(shared)
                self._next[key] = max(self.next_slot(key), self._clock() + interval)
                return True
        except TimeoutError:
            return False

    async def _reserve_shared(self, slots: SlotStore, key: str, interval: float) -> float:
        """Seconds until the store's slot for `key`; 0 (the local slot alone) when the store fails."""
        if not self._slots_usable():
            self._count_fallback()
            return 0.0
        try:
            async with asyncio.timeout(self._slot_timeout):
                return await slots.reserve(key, interval)
        except (SlotStoreUnavailable, TimeoutError) as exc:
            self._slots_failed(exc)
            self._count_fallback()
            return 0.0

    def _slots_usable(self) -> bool:
        return self._clock() >= self._slots_down_until

    def _slots_failed(self, exc: Exception) -> None:
        now = self._clock()
        self._slots_down_until = now + self._slot_retry
        if now - self._warned_at >= 60.0:
            self._warned_at = now
            reason = exc.message if isinstance(exc, SlotStoreUnavailable) else "timed out"
            log.warning("shared rate slots unavailable (%s): Slack sends are spaced by this instance only "
                        "for the next %.0fs", reason, self._slot_retry)

    def _count_fallback(self) -> None:
        if self._metrics is not None:
            self._metrics.rate_slot_fallbacks.inc()

    def _prune(self) -> None:
        if len(self._next) < self._max_keys:
            return
        now = self._clock()
        for key in [k for k, at in self._next.items() if at < now]:
            lock = self._locks.get(key)
            if lock is None or not lock.locked():
                self._next.pop(key, None)
                self._locks.pop(key, None)


class Deliverer:
    def __init__(self, channels: Mapping[str, Channel], *, default_channel: Channel | None = None,
                 on_attempt: OnAttempt | None = None, deadline_s: float = 120.0, base_backoff_s: float = 0.5,
                 max_backoff_s: float = 30.0, attempt_timeout_s: float = 20.0, rate_interval_s: float = 1.0,
                 rate_limited_kinds: Collection[str] = SLACK_KINDS, metrics: AlertsMetrics | None = None,
                 common_metrics: CommonMetrics | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: Callable[[], float] = random.random, rate_slots: SlotStore | None = None) -> None:
        """`channels` by target kind; `default_channel` serves every other kind (the console outbox in
        embedded mode). Metrics are recorded only when given (the caller may record from `on_attempt`).
        `rate_slots` shares the rate-limited kinds' slots and Retry-Afters with the other instances."""
        self._channels = dict(channels)
        self._default = default_channel
        self._on_attempt = on_attempt
        self.deadline_s = deadline_s
        self._base = base_backoff_s
        self._cap = max_backoff_s
        self._attempt_timeout = attempt_timeout_s
        self._rate_interval = rate_interval_s
        self._rate_limited = frozenset(rate_limited_kinds)
        self._metrics = metrics
        self._common = common_metrics
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self.limiter = RateLimiter(clock=clock, sleep=sleep, slots=rate_slots, metrics=metrics)

    def channel_for(self, notification: Notification) -> Channel | None:
        return self._channels.get(notification.target.kind, self._default)

    async def deliver(self, notification: Notification, *, deadline_s: float | None = None) -> FinalOutcome:
        """Sends with retries; returns "sent" | "dead_letter" | "failed"."""
        return (await self.deliver_detailed(notification, deadline_s=deadline_s)).outcome

    async def deliver_detailed(self, notification: Notification, *,
                               deadline_s: float | None = None) -> DeliveryResult:
        target = notification.target
        start = self._clock()
        deadline = start + (self.deadline_s if deadline_s is None else deadline_s)
        channel = self.channel_for(notification)
        if channel is None:
            error = PermanentFailure(f"{target.key}: no channel configured for {target.kind}",
                                     code="no_channel")
            return await self._finish(notification, "dead_letter", 0, error, start)
        interval = self._rate_interval if channel.kind in self._rate_limited else 0.0
        # min(cap, base * 2^(attempt - 1)) for the n-th retry, times rng() (full jitter)
        backoffs = Backoff(min(self._base, self._cap), cap=self._cap, jitter=1.0, rng=self._rng)
        attempt = 0
        while True:
            if not await self.limiter.acquire(target.rate_key, interval, deadline):
                late = RetryableFailure(f"{target.key}: deadline reached before the next allowed send",
                                        code="deadline", retry_after=None)
                return await self._finish(notification, "failed", attempt, late, start)
            attempt += 1
            began = self._clock()
            error: ChurnsignalError | None = None
            try:
                budget = max(min(self._attempt_timeout, deadline - began), 0.001)
                async with asyncio.timeout(budget):
                    await channel.send(notification)
            except TimeoutError:
                error = RetryableFailure(f"{target.key}: attempt timed out", code="timeout", retry_after=None)
            except ChurnsignalError as exc:
                error = exc
            except Exception as exc:  # noqa: BLE001 - a channel bug must end in a dead letter, not a stall
                # Only the class name: the message of an arbitrary exception may contain a URL.
                log.error("unexpected %s while sending to %s", type(exc).__name__, target.key)
                error = PermanentFailure(f"{target.key}: unexpected {type(exc).__name__}", code="unexpected")
            duration = self._clock() - began
            if self._metrics is not None:
                self._metrics.delivery_latency.labels(target.kind).observe(duration)
            if error is None:
                await self._report(notification, attempt, "sent", None, duration)
                return await self._finish(notification, "sent", attempt, None, start)
            if not error.retryable:
                await self._report(notification, attempt, "dead_letter", error, duration)
                return await self._finish(notification, "dead_letter", attempt, error, start)
            retry_after = error.details.get("retry_after")
            if isinstance(retry_after, int | float) and retry_after > 0:
                if interval > 0:
                    await self.limiter.defer_shared(target.rate_key, float(retry_after))
                else:
                    self.limiter.defer(target.rate_key, float(retry_after))
            else:
                retry_after = 0.0
            backoff = backoffs.next()
            slot_wait = self.limiter.next_slot(target.rate_key) - self._clock()
            delay = max(backoff, float(retry_after), slot_wait)
            if self._clock() + delay >= deadline:
                await self._report(notification, attempt, "failed", error, duration)
                return await self._finish(notification, "failed", attempt, error, start)
            await self._report(notification, attempt, "retry", error, duration)
            log.warning("retrying %s in %.2fs after attempt %d: %s", target.key, delay, attempt,
                        error.message)
            if self._metrics is not None:
                self._metrics.retries.labels(target.kind).inc()
            await self._sleep(delay)

    async def _report(self, notification: Notification, attempt: int, outcome: AttemptOutcome,
                      error: ChurnsignalError | None, duration: float) -> None:
        if self._on_attempt is None:
            return
        result = self._on_attempt(notification, attempt, outcome, error, duration)
        if inspect.isawaitable(result):
            await result

    async def _finish(self, notification: Notification, outcome: FinalOutcome, attempts: int,
                      error: ChurnsignalError | None, start: float) -> DeliveryResult:
        result = DeliveryResult(outcome=outcome, attempts=attempts, error=error,
                                duration_s=self._clock() - start)
        kind = notification.target.kind
        if outcome != "sent":
            log.warning("delivery %s to %s after %d attempt(s): %s", outcome, notification.target.key,
                        attempts, error.message if error is not None else "")
        if self._metrics is not None:
            self._metrics.notifications.labels(kind, outcome).inc()
            if outcome == "sent" and notification.source_received_at is not None:
                lag = (datetime.now(UTC) - notification.source_received_at).total_seconds()
                self._metrics.signal_latency.labels(kind).observe(max(lag, 0.0))
        if self._common is not None and outcome == "dead_letter":
            self._common.dead_letters.labels(self._common.service, (result.code or "unknown")[:64]).inc()
        return result
