"""Sending generated events to an ingest endpoint: batches, bounded concurrency, retries, clear errors.

Batches are JSON arrays. Several requests may be in flight, but only when their events lie close in
event time (`max_skew`), so the stream reaches the broker in nearly the order it was generated: the
scoring clock is driven by event time and must not see a day of history arrive after the next one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from services.simulate.model import SimEvent
from shared.backoff import Backoff

RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_RETRY_AFTER_S = 30.0


class IngestRejected(Exception):
    """Ingest refused a batch for a reason that retrying will not fix (4xx)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class IngestUnavailable(Exception):
    """Ingest kept failing (5xx, connection errors) until the retry deadline ran out."""


@dataclass
class SendStats:
    events_sent: int = 0
    requests: int = 0
    retries: int = 0
    last_event_at: datetime | None = None    # event time of the newest event accepted so far
    started: float = field(default_factory=time.monotonic)

    def rate(self, now: float | None = None) -> float:
        elapsed = (now if now is not None else time.monotonic()) - self.started
        return self.events_sent / elapsed if elapsed > 0 else 0.0


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), capped; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, min(seconds, MAX_RETRY_AFTER_S))


def describe_rejection(status: int, body: Any, batch: Sequence[SimEvent]) -> str:
    """One clear message for a 4xx answer (never includes the API key)."""
    error = body.get("error") if isinstance(body, dict) else None
    detail = f": {error}" if error else ""
    if status == 401:
        return (f"ingest refused the API key (401{detail}); pass --api-key or set "
                "CHURNSIGNAL_SIMULATE_API_KEY to a key with the 'ingest' scope")
    if status == 403:
        return f"the API key may not send these events (403{detail}); it needs the 'ingest' scope"
    if status == 413:
        return f"ingest found the batch too large (413{detail}); use a smaller --batch-size"
    if status == 422 and isinstance(body, dict) and isinstance(body.get("errors"), list):
        errors = body["errors"]
        shown = []
        for err in errors[:3]:
            index = err.get("index")
            event_id = batch[index].body.get("id") if isinstance(index, int) and index < len(batch) else "?"
            loc = ".".join(str(p) for p in err.get("loc", []))
            shown.append(f"event {event_id} {loc}: {err.get('msg')}")
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return f"ingest rejected {len(errors)} error(s) in a batch (422): " + "; ".join(shown) + more
    text = orjson.dumps(body).decode()[:300] if body is not None else ""
    return f"ingest answered {status}{detail or (': ' + text if text else '')}"


class IngestSender:
    """Posts batches to `POST {url}/v1/events`; the HTTP client is injected (and closed by its owner)."""

    def __init__(self, client: httpx.AsyncClient, url: str, api_key: str, *, concurrency: int = 4,
                 max_skew: timedelta = timedelta(minutes=20), retry_deadline_s: float = 120.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 on_retry: Callable[[str, float], None] | None = None) -> None:
        self._client = client
        self._endpoint = url.rstrip("/") + "/v1/events"
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._concurrency = max(1, concurrency)
        self._max_skew = max_skew
        self._deadline_s = retry_deadline_s
        self._sleep = sleep
        self._on_retry = on_retry
        self._inflight: dict[asyncio.Task[None], datetime] = {}
        self._failure: BaseException | None = None
        self.stats = SendStats()

    async def submit(self, batch: Sequence[SimEvent]) -> None:
        """Start sending a batch (ordered by event time) once there is room; raises an earlier failure."""
        if not batch:
            return
        while self._inflight and (len(self._inflight) >= self._concurrency
                                  or batch[-1].at - min(self._inflight.values()) > self._max_skew):
            await self._wait_one()
        self._raise_failure()
        task = asyncio.create_task(self._send(list(batch)))
        self._inflight[task] = batch[0].at

    async def drain(self) -> None:
        """Wait for every batch in flight; raises the first failure."""
        while self._inflight:
            await self._wait_one()
        self._raise_failure()

    async def cancel(self) -> None:
        for task in self._inflight:
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        self._inflight.clear()

    async def _wait_one(self) -> None:
        done, _ = await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            del self._inflight[task]
            if not task.cancelled() and task.exception() is not None and self._failure is None:
                self._failure = task.exception()
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def _send(self, batch: list[SimEvent]) -> None:
        payload = orjson.dumps([e.body for e in batch])
        started = time.monotonic()
        attempt = 0
        backoff = Backoff(0.5, cap=10.0, jitter=1.0)  # uniform(0, min(10, 0.25 * 2^attempt))
        while True:
            attempt += 1
            wait: float | None
            try:
                self.stats.requests += 1
                response = await self._client.post(self._endpoint, content=payload, headers=self._headers)
            except httpx.TransportError as exc:
                problem, wait = f"{type(exc).__name__}: {exc}", None
            else:
                if response.status_code in (200, 202):
                    self._accepted(batch, response)
                    return
                if response.status_code not in RETRY_STATUSES:
                    raise IngestRejected(response.status_code,
                                         describe_rejection(response.status_code, _json(response), batch))
                problem = f"HTTP {response.status_code}"
                wait = retry_after_seconds(response.headers.get("retry-after"))
            if wait is None:
                wait = backoff.next()  # full jitter
            else:
                backoff.skip()  # the exponent follows the attempt count either way
            if time.monotonic() - started + wait > self._deadline_s:
                raise IngestUnavailable(f"ingest at {self._endpoint} still failing after {attempt} attempts "
                                        f"({problem})")
            self.stats.retries += 1
            if self._on_retry is not None:
                self._on_retry(problem, wait)
            await self._sleep(wait)

    def _accepted(self, batch: list[SimEvent], response: httpx.Response) -> None:
        body = _json(response)
        accepted = body.get("accepted") if isinstance(body, dict) else None
        self.stats.events_sent += accepted if isinstance(accepted, int) else len(batch)
        last = batch[-1].at
        if self.stats.last_event_at is None or last > self.stats.last_event_at:
            self.stats.last_event_at = last


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
