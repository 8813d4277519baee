"""A local Slack for tests: incoming webhooks and Web API `chat.postMessage`, on a real loopback socket.

Behaves like Slack where our sender cares:

- `POST /services/<id>`: `ok` (200); `no_service` (404) for an unknown webhook, `channel_not_found` (404)
  for a webhook whose channel is gone, `invalid_payload` / `no_text` / `invalid_blocks` / `msg_too_long`
  (400) for bad payloads.
- `POST /api/chat.postMessage`: bearer token checked (`not_authed` / `invalid_auth`), unknown channel or
  user -> `channel_not_found`, the same payload checks, answered as HTTP 200 `{"ok": false, "error": ...}`.
- Block Kit limits are enforced (<= 50 blocks, section text <= 3000, fields <= 10 x 2000, header <= 150
  plain text, top-level text <= 40,000, ...).
- At most one message per second per channel (webhook or API channel): otherwise 429 with
  `Retry-After: 1` (`ratelimited` on the Web API).
- `POST /actions/<team>/<id>/<token>`: a click's `response_url` (`fake.response_url()` mints one): JSON
  `{"replace_original"?, "response_type"?, "text", "blocks"?}` is recorded (`responses()`) and answered
  `{"ok": true}`; an unknown URL answers 404 `expired_url`, bad JSON 400 `invalid_payload`. Scriptable
  like a channel, under the key `response_url`.
- Scriptable failures per channel: `fake.script("#alerts", [(429, {"Retry-After": "2"}), (500, {})])` answers
  the next requests for that channel with those responses, in order, before behaving normally again.

Every accepted message is recorded with its arrival time (`messages()`), every request with its answer
(`requests()`), so tests can count deliveries (duplicates fail) and measure the gaps between attempts.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.support.http_server import BackgroundServer

MAX_BLOCKS = 50
SECTION_TEXT_MAX = 3000
FIELD_TEXT_MAX = 2000
MAX_FIELDS = 10
HEADER_TEXT_MAX = 150
CONTEXT_ELEMENTS_MAX = 10
ACTIONS_ELEMENTS_MAX = 25
BUTTON_TEXT_MAX = 75
BUTTON_VALUE_MAX = 2000
ACTION_ID_MAX = 255
URL_MAX = 3000
TEXT_MAX = 40000
BLOCK_TYPES = {"section", "header", "context", "actions", "divider", "image", "rich_text", "input", "file",
               "video", "markdown"}

# What Slack would turn into a mention, a broadcast or a link.
SPECIAL_TOKEN = re.compile(r"<[!@#][^>]*>|<(?:https?|mailto):[^>]*>")

Scripted = tuple[int, dict[str, str]] | tuple[int, dict[str, str], Any]


@dataclass(frozen=True)
class SlackMessage:
    """One message Slack accepted."""

    channel: str
    via: str                    # "webhook" | "api"
    payload: dict[str, Any]
    arrived_at: float           # time.monotonic()
    received_at: datetime

    @property
    def text(self) -> str:
        return str(self.payload.get("text") or "")

    @property
    def blocks(self) -> list[dict[str, Any]]:
        blocks = self.payload.get("blocks") or []
        return blocks if isinstance(blocks, list) else []

    def all_text(self) -> list[str]:
        """Every text string of the message (top-level text and every text inside blocks)."""
        return message_texts(self.text, self.blocks)

    def special_tokens(self) -> list[str]:
        """Mentions (`<!channel>`, `<@U1>`), channel links and `<http://...|...>` links Slack would render."""
        return [m.group(0) for text in self.all_text() for m in SPECIAL_TOKEN.finditer(text)]


@dataclass(frozen=True)
class SlackRequest:
    """One request and how the fake answered it."""

    channel: str | None
    via: str
    status: int
    error: str | None
    arrived_at: float
    scripted: bool = False


@dataclass(frozen=True)
class SlackResponse:
    """One message posted to a click's response_url."""

    url: str
    payload: dict[str, Any]

    @property
    def text(self) -> str:
        return str(self.payload.get("text") or "")


@dataclass
class _Webhook:
    channel: str
    error: str | None = None     # e.g. "channel_not_found": the channel was archived/deleted


@dataclass
class _State:
    webhooks: dict[str, _Webhook] = field(default_factory=dict)
    channels: set[str] = field(default_factory=set)
    scripts: dict[str, deque[Scripted]] = field(default_factory=dict)
    last_accepted: dict[str, float] = field(default_factory=dict)
    messages: list[SlackMessage] = field(default_factory=list)
    requests: list[SlackRequest] = field(default_factory=list)
    response_urls: set[str] = field(default_factory=set)
    responses: list[SlackResponse] = field(default_factory=list)


def validate_message(payload: Any) -> str | None:
    """The Slack error a payload earns, or None when Slack would accept it."""
    if not isinstance(payload, dict):
        return "invalid_payload"
    text = payload.get("text")
    blocks = payload.get("blocks")
    if text is not None and not isinstance(text, str):
        return "invalid_payload"
    if not text and not blocks:
        return "no_text"
    if text and len(text) > TEXT_MAX:
        return "msg_too_long"
    if blocks is not None:
        return validate_blocks(blocks)
    return None


def validate_blocks(blocks: Any) -> str | None:
    if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
        return "invalid_blocks"
    ids: set[str] = set()
    for block in blocks:
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            return "invalid_blocks"
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or len(block_id) > 255 or block_id in ids:
                return "invalid_blocks"
            ids.add(block_id)
        kind = block["type"]
        if kind == "header":
            if not _text_ok(block.get("text"), HEADER_TEXT_MAX, plain_only=True):
                return "invalid_blocks"
        elif kind == "section":
            text, fields = block.get("text"), block.get("fields")
            if text is None and fields is None:
                return "invalid_blocks"
            if text is not None and not _text_ok(text, SECTION_TEXT_MAX):
                return "invalid_blocks"
            if fields is not None:
                if not isinstance(fields, list) or not fields or len(fields) > MAX_FIELDS:
                    return "invalid_blocks"
                if not all(_text_ok(f, FIELD_TEXT_MAX) for f in fields):
                    return "invalid_blocks"
            accessory = block.get("accessory")
            if accessory is not None and not _element_ok(accessory):
                return "invalid_blocks"
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not elements or len(elements) > CONTEXT_ELEMENTS_MAX:
                return "invalid_blocks"
            if not all(_text_ok(e, SECTION_TEXT_MAX) or (isinstance(e, dict) and e.get("type") == "image")
                       for e in elements):
                return "invalid_blocks"
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not elements or len(elements) > ACTIONS_ELEMENTS_MAX:
                return "invalid_blocks"
            if not all(_element_ok(e) for e in elements):
                return "invalid_blocks"
            action_ids = [e["action_id"] for e in elements if "action_id" in e]
            if len(action_ids) != len(set(action_ids)):
                return "invalid_blocks"
    return None


def _text_ok(obj: Any, limit: int, *, plain_only: bool = False) -> bool:
    if not isinstance(obj, dict):
        return False
    kinds = {"plain_text"} if plain_only else {"plain_text", "mrkdwn"}
    text = obj.get("text")
    return obj.get("type") in kinds and isinstance(text, str) and 0 < len(text) <= limit


def _element_ok(element: Any) -> bool:
    if not isinstance(element, dict):
        return False
    if element.get("type") != "button":
        return element.get("type") in {"image", "overflow", "static_select", "datepicker"}
    if not _text_ok(element.get("text"), BUTTON_TEXT_MAX, plain_only=True):
        return False
    value, action_id, style = element.get("value"), element.get("action_id"), element.get("style")
    if value is not None and not (isinstance(value, str) and len(value) <= BUTTON_VALUE_MAX):
        return False
    if action_id is not None and not (isinstance(action_id, str) and 0 < len(action_id) <= ACTION_ID_MAX):
        return False
    if style is not None and style not in ("primary", "danger"):
        return False
    url = element.get("url")
    return url is None or (isinstance(url, str) and 0 < len(url) <= URL_MAX)


class FakeSlack:
    def __init__(self, *, token: str = "xoxb-test-token", rate_interval_s: float = 1.0,
                 rate_tolerance_s: float = 0.1) -> None:
        self.token = token
        self.rate_interval_s = rate_interval_s
        self.rate_tolerance_s = rate_tolerance_s
        self._lock = threading.Lock()
        self._state = _State()
        self._ids = itertools.count(1)
        self._server = BackgroundServer(Starlette(routes=[
            Route("/services/{hook_path:path}", self._webhook, methods=["POST"]),
            Route("/api/chat.postMessage", self._post_message, methods=["POST"]),
            Route("/actions/{action_path:path}", self._response_url, methods=["POST"]),
        ]))

    # lifecycle

    def start(self) -> FakeSlack:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return self._server.base_url

    @property
    def api_url(self) -> str:
        """For `CHURNSIGNAL_SLACK_API_URL`."""
        return f"{self.base_url}/api/"

    # set-up

    def add_webhook(self, channel: str | None = None, *, error: str | None = None) -> str:
        """A new incoming webhook posting to `channel`; returns its URL (a secret, like Slack's)."""
        n = next(self._ids)
        channel = channel or f"#hook-{n}"
        path = f"T0000/B{n:06d}/{secrets.token_hex(12)}"
        with self._lock:
            self._state.webhooks[path] = _Webhook(channel=channel, error=error)
        return f"{self.base_url}/services/{path}"

    def break_webhook(self, channel: str, error: str = "channel_not_found") -> None:
        """Make every webhook of `channel` answer 404 `error` from now on."""
        with self._lock:
            for hook in self._state.webhooks.values():
                if hook.channel == channel:
                    hook.error = error

    def response_url(self) -> str:
        """A new response_url, as Slack puts in an interaction payload (its path is a secret)."""
        n = next(self._ids)
        path = f"T0000/{n:010d}/{secrets.token_hex(12)}"
        with self._lock:
            self._state.response_urls.add(path)
        return f"{self.base_url}/actions/{path}"

    def responses(self) -> list[SlackResponse]:
        """Messages posted to response_urls, in arrival order."""
        with self._lock:
            return list(self._state.responses)

    def add_channel(self, *channels: str) -> None:
        """Channel or user ids that `chat.postMessage` accepts (e.g. CSM Slack user ids)."""
        with self._lock:
            self._state.channels.update(channels)

    def script(self, channel: str, responses: list[Scripted]) -> None:
        """Answer the next requests for `channel` with `(status, headers[, body])`, in order."""
        with self._lock:
            self._state.scripts.setdefault(channel, deque()).extend(responses)

    def reset(self) -> None:
        """Forget everything (webhooks, channels, scripts, records): a clean Slack on the same port."""
        with self._lock:
            self._state = _State()

    # observations

    def messages(self, channel: str | None = None) -> list[SlackMessage]:
        with self._lock:
            return [m for m in self._state.messages if channel is None or m.channel == channel]

    def requests(self, channel: str | None = None) -> list[SlackRequest]:
        with self._lock:
            return [r for r in self._state.requests if channel is None or r.channel == channel]

    async def wait_for(self, count: int, channel: str | None = None, *, timeout_s: float = 10.0,
                       ) -> list[SlackMessage]:
        """Waits until at least `count` messages were accepted (for `channel`); returns them all."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.messages(channel)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {count} Slack message(s) for {channel or 'any channel'}, "
                                   f"got {len(found)}")
            await asyncio.sleep(0.02)

    # HTTP handlers (run on the server thread)

    async def _webhook(self, request: Request) -> Response:
        arrived = time.monotonic()
        path = request.path_params["hook_path"]
        raw = await request.body()
        with self._lock:
            hook = self._state.webhooks.get(path)
            channel = hook.channel if hook is not None else None
            if hook is None:
                return self._answer_text(None, "webhook", arrived, 404, "no_service")
            scripted = self._next_scripted(channel)
            if scripted is not None:
                return self._answer_scripted(channel, "webhook", arrived, scripted, api=False)
            if hook.error is not None:
                return self._answer_text(channel, "webhook", arrived, 404, hook.error)
            try:
                payload = json.loads(raw)
            except ValueError:
                return self._answer_text(channel, "webhook", arrived, 400, "invalid_payload")
            error = validate_message(payload)
            if error is not None:
                return self._answer_text(channel, "webhook", arrived, 400, error)
            if self._rate_limited(channel, arrived):
                self._record(channel, "webhook", arrived, 429, "rate_limited")
                return PlainTextResponse("rate_limited", status_code=429, headers={"Retry-After": "1"})
            self._accept(channel, "webhook", payload, arrived)
            return PlainTextResponse("ok")

    async def _response_url(self, request: Request) -> Response:
        arrived = time.monotonic()
        path = request.path_params["action_path"]
        raw = await request.body()
        with self._lock:
            if path not in self._state.response_urls:
                return self._answer_text(None, "response_url", arrived, 404, "expired_url")
            scripted = self._next_scripted("response_url")
            if scripted is not None:
                return self._answer_scripted("response_url", "response_url", arrived, scripted, api=True)
            try:
                payload = json.loads(raw)
            except ValueError:
                return self._answer_text("response_url", "response_url", arrived, 400, "invalid_payload")
            error = validate_message(payload)
            if error is not None:
                return self._answer_text("response_url", "response_url", arrived, 400, error)
            self._state.responses.append(SlackResponse(url=f"{self.base_url}/actions/{path}", payload=payload))
            self._record("response_url", "response_url", arrived, 200, None)
            return JSONResponse({"ok": True})

    async def _post_message(self, request: Request) -> Response:
        arrived = time.monotonic()
        raw = await request.body()
        content_type = request.headers.get("content-type", "")
        try:
            if content_type.startswith("application/json"):
                payload = json.loads(raw)
            else:
                form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                if isinstance(form.get("blocks"), str):
                    form["blocks"] = json.loads(form["blocks"])
                payload = form
        except (ValueError, UnicodeDecodeError):
            payload = None
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else (
            payload.get("token") if isinstance(payload, dict) else None)
        channel = payload.get("channel") if isinstance(payload, dict) else None
        channel = channel if isinstance(channel, str) else None
        with self._lock:
            if not token:
                return self._answer_api(channel, arrived, "not_authed")
            if token != self.token:
                return self._answer_api(channel, arrived, "invalid_auth")
            if channel is not None:
                scripted = self._next_scripted(channel)
                if scripted is not None:
                    return self._answer_scripted(channel, "api", arrived, scripted, api=True)
            if not isinstance(payload, dict):
                return self._answer_api(channel, arrived, "invalid_arguments")
            if channel is None or channel not in self._state.channels:
                return self._answer_api(channel, arrived, "channel_not_found")
            error = validate_message(payload)
            if error is not None:
                return self._answer_api(channel, arrived, error)
            if self._rate_limited(channel, arrived):
                self._record(channel, "api", arrived, 429, "ratelimited")
                return JSONResponse({"ok": False, "error": "ratelimited"}, status_code=429,
                                    headers={"Retry-After": "1"})
            self._accept(channel, "api", payload, arrived)
            ts = f"{time.time():.6f}"
            return JSONResponse({"ok": True, "channel": f"D{abs(hash(channel)) % 10**8:08d}", "ts": ts,
                                 "message": {"text": payload.get("text"), "ts": ts}})

    # helpers (called with the lock held)

    def _next_scripted(self, channel: str) -> Scripted | None:
        queue = self._state.scripts.get(channel)
        return queue.popleft() if queue else None

    def _rate_limited(self, channel: str, arrived: float) -> bool:
        last = self._state.last_accepted.get(channel)
        return last is not None and arrived - last < self.rate_interval_s - self.rate_tolerance_s

    def _accept(self, channel: str, via: str, payload: dict[str, Any], arrived: float) -> None:
        self._state.last_accepted[channel] = arrived
        self._state.messages.append(SlackMessage(channel=channel, via=via, payload=payload,
                                                 arrived_at=arrived, received_at=datetime.now(UTC)))
        self._record(channel, via, arrived, 200, None)

    def _record(self, channel: str | None, via: str, arrived: float, status: int, error: str | None,
                scripted: bool = False) -> None:
        self._state.requests.append(SlackRequest(channel=channel, via=via, status=status, error=error,
                                                 arrived_at=arrived, scripted=scripted))

    def _answer_text(self, channel: str | None, via: str, arrived: float, status: int,
                     error: str) -> Response:
        self._record(channel, via, arrived, status, error)
        return PlainTextResponse(error, status_code=status)

    def _answer_api(self, channel: str | None, arrived: float, error: str) -> Response:
        self._record(channel, "api", arrived, 200, error)
        return JSONResponse({"ok": False, "error": error})

    def _answer_scripted(self, channel: str, via: str, arrived: float, scripted: Scripted, *,
                         api: bool) -> Response:
        status, headers = scripted[0], dict(scripted[1])
        body: Any = scripted[2] if len(scripted) > 2 else None  # type: ignore[misc]
        if body is None:
            if status == 429:
                body = {"ok": False, "error": "ratelimited"} if api else "rate_limited"
            elif status >= 500:
                body = {"ok": False, "error": "internal_error"} if api else "internal_error"
            else:
                ok = status == 200
                body = ({"ok": True} if api else "ok") if ok else "invalid_request"
        error = None
        if isinstance(body, dict) and body.get("ok") is False:
            error = str(body.get("error"))
        elif isinstance(body, str) and status != 200:
            error = body
        self._record(channel, via, arrived, status, error, scripted=True)
        if isinstance(body, dict):
            return JSONResponse(body, status_code=status, headers=headers)
        return PlainTextResponse(str(body), status_code=status, headers=headers)


def message_texts(text: str, blocks: Any) -> list[str]:
    """A message's top-level text and every text string inside its blocks, in order."""
    out = [text]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "text" and isinstance(value, str):
                    out.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(blocks)
    return out
