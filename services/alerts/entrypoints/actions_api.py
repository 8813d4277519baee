"""Acting on an alert from its message (docs/api.md): Slack button clicks (`POST /v1/slack/interactions`,
signed by Slack) and the e-mail's signed links (`GET|POST /v1/alerts/{alert_id}/actions/{ack|snooze}`).

Both act through `services/alerts/service/actions.py` (acknowledge through the API's own path, snooze by
a silence of the alert's account and risk type). Neither uses an API key: Slack's signature, or the
link's token, is the credential.
"""

from __future__ import annotations

import html
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, BackgroundTasks, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from services.alerts.adapters.repository import AlertsRepository
from services.alerts.domain import action_links, actions, slack_signature
from services.alerts.domain.content import TYPE_LABELS
from services.alerts.notify.slack_response import SlackResponder
from services.alerts.service.actions import act
from services.alerts.service.records import AlertRow

log = logging.getLogger(__name__)

MAX_INTERACTION_BYTES = 1 << 20
MAX_FORM_BYTES = 8192


Action = Annotated[Literal["ack", "snooze"], Path(description="ack or snooze")]


@dataclass
class ActionKeys:
    """The keys the endpoints check with, set once the app starts (None: that kind of action is off)."""

    slack_signing: bytes | None = None
    link: bytes | None = None


def build_actions_router(engine: AsyncEngine, clock: Callable[[], datetime], keys: ActionKeys,
                         responder: SlackResponder) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["actions"])

    # -- Slack ---------------------------------------------------------------------------------
    @router.post("/slack/interactions")
    async def slack_interactions(request: Request, background: BackgroundTasks) -> JSONResponse:
        secret = keys.slack_signing
        if not secret:
            return JSONResponse({"error": "Slack interactions are not configured: set "
                                          "CHURNSIGNAL_SLACK_SIGNING_SECRET to the Slack app's signing secret"},
                                status_code=503)
        raw = await request.body()
        if len(raw) > MAX_INTERACTION_BYTES:
            return JSONResponse({"error": "request body too large"}, status_code=413)
        signature = request.headers.get("x-slack-signature")
        try:
            slack_signature.verify(secret, request.headers.get("x-slack-request-timestamp"), signature, raw,
                                   now=time.time())
        except slack_signature.SignatureError as exc:
            log.warning("Slack interaction refused: %s", exc.reason)
            return JSONResponse({"error": str(exc)}, status_code=401)
        assert signature is not None
        try:
            payload = json.loads(parse_qs(raw.decode("utf-8"), strict_parsing=True)["payload"][0])
            click = actions.parse_click(payload)
        except (ValueError, KeyError, IndexError, UnicodeDecodeError) as exc:
            click, payload = None, None
            problem = str(exc) if isinstance(exc, actions.BadPayload) else "not a Slack interaction payload"
        else:
            problem = None
        now = clock()
        async with engine.begin() as conn:
            repo = AlertsRepository(conn)
            fresh = await repo.remember_signature(
                signature, now, forget_before=now - timedelta(seconds=2 * slack_signature.MAX_AGE_S))
            if not fresh:
                log.warning("Slack interaction refused: replayed")
                return JSONResponse({"error": "this request was already received (replay)"}, status_code=401)
            if click is None:
                if problem is None:  # a URL button (Slack reports those clicks too) or another interaction
                    return JSONResponse({})
                return JSONResponse(actions.ephemeral(f"churnsignal could not act on this: {problem}"))
            alert = await repo.alert(click.alert_id)
            done = None if alert is None else await act(
                repo, alert, click.action, actions.slack_actor(click.user_id), f"<@{click.user_id}>", now)
        if done is None:
            message = actions.ephemeral(f"churnsignal knows no alert {click.alert_id}: it may have been "
                                        "removed. Nothing was changed.")
        else:
            original = payload.get("message") if isinstance(payload, dict) else None
            message = actions.acted_message(original, done.note, done.alert.summary)
        if click.response_url is not None:
            background.add_task(responder.respond, click.response_url, message)
        return JSONResponse(message if done is None else {})

    # -- e-mail links ------------------------------------------------------------------------------
    @router.get("/alerts/{alert_id}/actions/{action}", response_class=HTMLResponse)
    async def confirm_action(alert_id: int, action: Action,
                             t: Annotated[str, Query(max_length=action_links.MAX_TOKEN_CHARS)] = "",
                             ) -> HTMLResponse:
        """The confirmation page: acting takes a POST, so a mail scanner opening the link changes nothing."""
        checked = await _checked(alert_id, action, t)
        if isinstance(checked, HTMLResponse):
            return checked
        alert, _ = checked
        verb = "Acknowledge" if action == "ack" else f"Snooze for {actions.SNOOZE_DAYS} days"
        e = html.escape
        account = alert.last_event.get("account") or {}
        what = f"{TYPE_LABELS.get(alert.type, alert.type)} on {account.get('name') or alert.account_id}"
        body = (f"<h1>{e(verb)}?</h1><p>{e(what)}</p><p>{e(alert.summary)}</p>"
                f"<form method=\"post\" action=\"/v1/alerts/{alert.id}/actions/{action}\">"
                f"<input type=\"hidden\" name=\"t\" value=\"{e(t, quote=True)}\">"
                f"<button type=\"submit\">{e(verb)}</button></form>")
        return _page(verb, body)

    @router.post("/alerts/{alert_id}/actions/{action}", response_class=HTMLResponse)
    async def do_action(alert_id: int, action: Action, request: Request) -> HTMLResponse:
        raw = await request.body()
        if len(raw) > MAX_FORM_BYTES:
            return _page("Not done", "<p>The request is too large.</p>", 413)
        try:
            form = parse_qs(raw.decode("utf-8"))
        except UnicodeDecodeError:
            form = {}
        token = (form.get("t") or [""])[0]
        checked = await _checked(alert_id, action, token)
        if isinstance(checked, HTMLResponse):
            return checked
        _, claims = checked
        now = clock()
        async with engine.begin() as conn:
            repo = AlertsRepository(conn)
            alert = await repo.alert(alert_id)
            if alert is None:
                return _page("Not found", f"<p>There is no alert {alert_id}.</p>", 404)
            done = await act(repo, alert, action, f"email:{claims.receiver}", claims.receiver, now)
        return _page("Done", f"<h1>Done</h1><p>{html.escape(done.plain)}.</p>")

    async def _checked(alert_id: int, action: str, token: str,
                       ) -> HTMLResponse | tuple[AlertRow, action_links.ActionClaims]:
        secret = keys.link
        if not secret:
            # (the key is loaded at start-up: only a request racing the start meets this)
            return _page("Unavailable", "<p>The service is still starting; try the link again in a moment.</p>",
                         503)
        try:
            claims = action_links.verify_action(secret, token, alert_id=alert_id, action=action, now=clock())
        except action_links.ActionLinkError as exc:
            text = ("This link has expired: act from a newer message or in Slack." if exc.reason == "expired"
                    else "This link is not valid.")
            return _page("Link not valid", f"<p>{html.escape(text)}</p>", 403)
        async with engine.connect() as conn:
            alert = await AlertsRepository(conn).alert(alert_id)
        if alert is None:
            return _page("Not found", f"<p>There is no alert {alert_id}.</p>", 404)
        return alert, claims

    return router


_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",       # the token is in the URL
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    doc = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex\">"
           f"<title>{html.escape(title)} · churnsignal</title></head>"
           f"<body style=\"font-family:sans-serif;max-width:40em;margin:2em auto\">{body}</body></html>")
    return HTMLResponse(doc, status_code=status, headers=_HEADERS)
