"""Slack Web API `chat.postMessage` with a bot token: direct messages to the CSM's Slack user id.

Slack answers most errors with HTTP 200 and `{"ok": false, "error": ...}`: those are permanent (bad token,
unknown user, invalid blocks...) except the few that say "try again later".
"""

from __future__ import annotations

import aiohttp
import orjson
from pydantic import SecretStr

from services.alerts.domain.content import Notification
from services.alerts.notify.channel import error_code, parse_retry_after, raise_for_status
from services.alerts.notify.http import HttpAnswer, post
from shared.errors import PermanentFailure, RetryableFailure

RETRYABLE_ERRORS = frozenset({"ratelimited", "rate_limited", "internal_error", "fatal_error",
                              "service_unavailable", "request_timeout", "temporarily_unavailable"})


class SlackApiChannel:
    kind = "slack_dm"

    def __init__(self, session: aiohttp.ClientSession, token: SecretStr | str, *,
                 base_url: str = "https://slack.com/api/", timeout_s: float = 10.0) -> None:
        self._session = session
        self._token = token if isinstance(token, SecretStr) else SecretStr(token)
        self._url = base_url.rstrip("/") + "/chat.postMessage"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(self, notification: Notification) -> None:
        target = notification.target
        what = target.key
        payload = {**notification.slack_payload(), "channel": target.channel or target.address,
                   "unfurl_links": False, "unfurl_media": False}
        headers = {"Authorization": f"Bearer {self._token.get_secret_value()}",
                   "Content-Type": "application/json; charset=utf-8"}
        answer = await post(self._session, self._url, orjson.dumps(payload), headers,
                            client_timeout=self._timeout, what=what, url_name="Slack API URL")
        raise_for_status(what, answer.status, text=answer.text(), retry_after=answer.retry_after,
                         code=_slack_error(answer))
        try:
            body = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            raise RetryableFailure(f"{what}: Slack API answered with a body that is not JSON",
                                   retry_after=None, code="bad_response") from None
        if not isinstance(body, dict):
            raise RetryableFailure(f"{what}: unexpected Slack API answer", retry_after=None,
                                   code="bad_response")
        if body.get("ok") is True:
            return
        code = error_code(str(body.get("error") or ""), answer.status)
        if code in RETRYABLE_ERRORS:
            raise RetryableFailure(f"{what}: Slack error {code}", code=code,
                                   retry_after=parse_retry_after(answer.retry_after))
        raise PermanentFailure(f"{what}: Slack error {code}", code=code)


def _slack_error(answer: HttpAnswer) -> str | None:
    """The `error` of a non-2xx JSON answer (429 `ratelimited`), when there is one."""
    if answer.ok:
        return None
    try:
        body = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return error_code(body["error"], answer.status)
    return None
