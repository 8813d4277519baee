"""The HTTP client the Slack and webhook channels share (aiohttp), and the one way they POST.

`post()` returns the answer as plain pieces (`HttpAnswer`: status, `Retry-After`, body) read inside the
request, so the connection goes back to the pool, and turns client errors into our failure family by class
name only (`from None`): aiohttp exceptions carry the URL, which for a Slack incoming webhook is the secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from services.alerts.notify.channel import transport_failure
from shared.errors import PermanentFailure

# Sends in flight are bounded per channel kind (bootstrap.MAX_SENDS_IN_FLIGHT); the pool only needs that many.
POOL_LIMIT = 128
# What we keep of a body: a 2xx Slack API answer is parsed as JSON; an error body only yields a short code,
# so a huge one (a proxy's HTML page, a hostile receiver) is cut off and its connection dropped, not reused.
MAX_BODY_BYTES = 1 << 20
MAX_ERROR_BODY_BYTES = 64 * 1024
_ERROR_TEXT_BYTES = 256


def new_session(*, pool_limit: int = POOL_LIMIT, timeout_s: float = 10.0) -> aiohttp.ClientSession:
    """One session for every HTTP channel; create it in the lifespan (it needs the running loop), close it
    on shutdown. TLS is verified with the default context; proxies in the environment and cookies set by a
    receiver are ignored, so a delivery never depends on the process environment or an earlier answer."""
    connector = aiohttp.TCPConnector(limit=pool_limit, limit_per_host=0)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    retry_after: str | None
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self) -> str:
        """The start of the body as text: enough for an error word such as `channel_not_found`."""
        return self.body[:_ERROR_TEXT_BYTES].decode("utf-8", errors="replace")


async def post(session: aiohttp.ClientSession, url: str, body: bytes, headers: Mapping[str, str], *,
               client_timeout: aiohttp.ClientTimeout, what: str, url_name: str) -> HttpAnswer:
    """POST `body`; redirects are not followed (a receiver that moved is a permanent 3xx, and the signed body
    or bearer token never travels to another host). `what` is the target key, `url_name` says which URL."""
    try:
        async with session.post(url, data=body, headers=headers, timeout=client_timeout,
                                allow_redirects=False) as response:
            limit = MAX_BODY_BYTES if 200 <= response.status < 300 else MAX_ERROR_BODY_BYTES
            content = await read_capped(response, limit)
            return HttpAnswer(response.status, response.headers.get("Retry-After"), content)
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError):
        raise PermanentFailure(f"{what}: {url_name} is not a valid http(s) URL", code="invalid_url") from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:  # TimeoutError: the request's own timeout
        raise transport_failure(exc, what) from None


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most `limit` bytes of the (decoded) body."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await response.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
