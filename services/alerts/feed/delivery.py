"""One attempt at one subscriber: the message signed as Standard Webhooks, POSTed, its answer classified.

2xx is delivered. 408, 425, 429, 5xx, timeouts and connection errors are retryable (`Retry-After` kept); any
other answer (3xx: redirects are not followed; 4xx, 410 Gone included) is permanent: the message goes to the
dead letters. The classification is the alerts channels' (notify/channel.py); failures name the subscriber,
never its URL.
"""

from __future__ import annotations

import aiohttp

from services.alerts.feed.config import FeedEndpoint
from services.alerts.notify.channel import raise_for_status
from services.alerts.notify.http import post
from shared import standard_webhooks

USER_AGENT = "churnsignal-feed"


async def deliver(session: aiohttp.ClientSession, endpoint: FeedEndpoint, msg_id: str, body: bytes, *,
                  timestamp: int, client_timeout: aiohttp.ClientTimeout) -> None:
    """POST one message; returns when the subscriber answered 2xx, else RetryableFailure / PermanentFailure."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               **standard_webhooks.headers(endpoint.keys, msg_id, timestamp, body)}
    what = f"feed subscriber {endpoint.name}"
    answer = await post(session, endpoint.url, body, headers, client_timeout=client_timeout, what=what,
                        url_name="url")
    raise_for_status(what, answer.status, text=answer.text(), retry_after=answer.retry_after)
