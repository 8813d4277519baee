"""What a notification says, per channel.

Every user-supplied string (account name, summary, evidence, reasons, ids) is escaped for its medium: Slack
mrkdwn escapes `&`, `<` and `>` (so `<!channel>`, `<@U…>` and `<http://evil|click>` arrive as text), HTML is
escaped, and mail headers never contain CR/LF. Slack messages stay inside Block Kit limits, truncating with
"…" on character boundaries (never through an escape sequence).
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from services.alerts.domain.action_links import ActionLinks
from services.alerts.domain.actions import SNOOZE_DAYS, slack_actions
from services.alerts.domain.targets import Target
from shared.evidence import evidence_sentences
from shared.links import (
    DEFAULT_TTL,
    account_page_url,
    portfolio_url,
    sign_account_link,
    sign_portfolio_link,
)
from shared.risks import SEVERITY_RANK, RiskEvent

# Block Kit limits (https://api.slack.com/reference/block-kit/blocks)
SLACK_MAX_BLOCKS = 50
SLACK_SECTION_TEXT_MAX = 3000
SLACK_FIELD_TEXT_MAX = 2000
SLACK_MAX_FIELDS = 10
SLACK_HEADER_TEXT_MAX = 150
SLACK_CONTEXT_TEXT_MAX = 3000
SLACK_BUTTON_TEXT_MAX = 75
SLACK_URL_MAX = 3000
SLACK_TEXT_MAX = 40000
FALLBACK_TEXT_MAX = 4000        # Slack truncates longer top-level text in notifications anyway
EMAIL_SUBJECT_MAX = 200
ELLIPSIS = "…"

TOP_EVIDENCE = 5
TOP_REASONS = 3
DIGEST_MAX_ITEMS = 45           # + header, intro, overflow note, context <= 50 blocks

TYPE_LABELS = {
    "champion_left": "Champion left",
    "champion_inactive": "Champion inactive",
    "usage_drop": "Usage drop",
    "ticket_spike": "Ticket spike",
    "sentiment_drop": "Sentiment drop",
    "renewal_risk": "Renewal risk",
    "health_drop": "Health drop",
}
SEVERITY_EMOJI = {"critical": ":red_circle:", "high": ":large_orange_circle:",
                  "medium": ":large_yellow_circle:", "low": ":white_circle:"}
KIND_PREFIX = {"opened": "", "escalated": "Escalated: ", "repeat": "Reminder: ", "resolved": "Resolved: ",
               "updated": "Updated: ", "digest": ""}

_HEADER_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+")


@dataclass(frozen=True, eq=True)
class Notification:
    """One rendered message for one target; `dedup_key` is unique per (transition, target, kind)."""

    dedup_key: str
    target: Target
    kind: str                                   # opened | escalated | repeat | resolved | updated | digest
    risk_ids: tuple[str, ...]
    event_ids: tuple[str, ...]
    account_ids: tuple[str, ...]
    severity: str
    summary: str                                # one line, for logs and the console outbox
    text: str                                   # Slack top-level (fallback) text, escaped
    slack_blocks: list[dict[str, Any]] = field(hash=False)
    email_subject: str = ""
    email_text: str = ""
    email_html: str = ""
    webhook_body: dict[str, Any] = field(default_factory=dict, hash=False)
    link: str = ""
    source_received_at: datetime | None = None

    @property
    def risk_id(self) -> str | None:
        return self.risk_ids[0] if len(self.risk_ids) == 1 else None

    def slack_payload(self) -> dict[str, Any]:
        return {"text": self.text, "blocks": self.slack_blocks}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored with a claimed delivery so a restart can resume it)."""
        return {
            "dedup_key": self.dedup_key, "target": self.target.to_dict(), "kind": self.kind,
            "risk_ids": list(self.risk_ids), "event_ids": list(self.event_ids),
            "account_ids": list(self.account_ids), "severity": self.severity, "summary": self.summary,
            "text": self.text, "slack_blocks": self.slack_blocks, "email_subject": self.email_subject,
            "email_text": self.email_text, "email_html": self.email_html, "webhook_body": self.webhook_body,
            "link": self.link,
            "source_received_at": self.source_received_at.isoformat() if self.source_received_at else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Notification:
        received = data.get("source_received_at")
        return cls(
            dedup_key=data["dedup_key"], target=Target.from_dict(data["target"]), kind=data["kind"],
            risk_ids=tuple(data.get("risk_ids", ())), event_ids=tuple(data.get("event_ids", ())),
            account_ids=tuple(data.get("account_ids", ())), severity=data.get("severity", ""),
            summary=data.get("summary", ""), text=data.get("text", ""),
            slack_blocks=list(data.get("slack_blocks", [])), email_subject=data.get("email_subject", ""),
            email_text=data.get("email_text", ""), email_html=data.get("email_html", ""),
            webhook_body=dict(data.get("webhook_body", {})), link=data.get("link", ""),
            source_received_at=datetime.fromisoformat(received) if received else None,
        )


# --- escaping and limits ---------------------------------------------------------------------------------

# Unicode category Cc is exactly C0 (U+0000-U+001F), DEL and C1 (U+007F-U+009F).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _clean(text: str) -> str:
    """Drop control characters other than newline and tab (they have no business in a message)."""
    return _CONTROL.sub("", text)


def escape_mrkdwn(text: str) -> str:
    return _clean(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + ELLIPSIS


def mrkdwn(text: str, limit: int) -> str:
    """`text` escaped for Slack, cut on a character boundary so that the result fits in `limit`."""
    escaped = escape_mrkdwn(text)
    if len(escaped) <= limit:
        return escaped
    out: list[str] = []
    used = 0
    for ch in _clean(text):
        piece = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}.get(ch, ch)
        if used + len(piece) > limit - 1:
            break
        out.append(piece)
        used += len(piece)
    return "".join(out) + ELLIPSIS


def header_safe(text: str, limit: int = EMAIL_SUBJECT_MAX) -> str:
    """One line for a mail header: every line break (and other control character) becomes a space."""
    single = _HEADER_BREAKS.sub(" ", text)
    single = _ANY_CONTROL.sub(" ", single)
    return truncate(re.sub(r"\s{2,}", " ", single).strip(), limit)


def one_line(text: str, limit: int = 300) -> str:
    return header_safe(text, limit)


@dataclass(frozen=True, slots=True)
class PageLinks:
    """Where a message's links lead: the account's page and the receiver's portfolio (services/ui). With
    `secret` and `now` each link carries a token signed for its receiver (shared/links.py), valid `ttl`, so
    a click opens the page without an API key; without them the pages ask for a `read` key."""

    public_url: str
    secret: bytes | None = None
    now: datetime | None = None
    ttl: timedelta = DEFAULT_TTL

    def account(self, account_id: str, receiver: str) -> str:
        if self.secret is None or self.now is None:
            return f"{self.public_url.rstrip('/')}/ui/accounts/{quote(account_id, safe='')}"
        token = sign_account_link(self.secret, account_id, receiver, now=self.now, ttl=self.ttl)
        return account_page_url(self.public_url, account_id, token)

    def portfolio(self, csm: str, receiver: str) -> str:
        if self.secret is None or self.now is None:
            return f"{self.public_url.rstrip('/')}/ui/portfolio?{urlencode({'csm': csm})}"
        token = sign_portfolio_link(self.secret, csm, now=self.now, ttl=self.ttl, receiver=receiver)
        return portfolio_url(self.public_url, csm, token)


def page_links(where: str | PageLinks) -> PageLinks:
    """The links of a message rendered for `where`: a `PageLinks`, or just the public URL (links unsigned)."""
    return where if isinstance(where, PageLinks) else PageLinks(where)


def _book_link(public_url: str | PageLinks, target: Target) -> str:
    """The receiver's book of business: the portfolio of the CSM a person target is (their e-mail or Slack
    id, as the accounts name their CSM)."""
    return page_links(public_url).portfolio(target.address, target.key)


def health_link(public_url: str | PageLinks, account_id: str, receiver: str = "") -> str:
    """The account's page, as linked from a message to `receiver`."""
    return page_links(public_url).account(account_id, receiver)


def evidence_lines(risk: RiskEvent, limit: int = TOP_EVIDENCE) -> list[str]:
    """The risk's evidence as sentences (shared/evidence.py: people by name, numbers with units), the
    first `limit` of them (scoring lists the most telling first)."""
    return [truncate(s, 300) for s in evidence_sentences(risk.type, risk.evidence, {})[:limit]]


def _account_name(risk: RiskEvent) -> str:
    return risk.account.name or risk.account_id


def _health_text(risk: RiskEvent) -> str:
    score = risk.health.score
    shown = f"{score:.0f}/100" if score is not None else "unknown"
    return f"{shown} ({risk.health.tier})"


def _money(value: float) -> str:
    return f"${value:,.0f}"


# --- one risk -------------------------------------------------------------------------------------------

def dedup_key(risk: RiskEvent, target: Target, suffix: str) -> str:
    return f"{risk.event_id}|{target.key}|{suffix}"


def render(risk: RiskEvent, target: Target, public_url: str | PageLinks, *, kind: str | None = None,
           dedup_suffix: str | None = None, alert_id: int | None = None,
           links: ActionLinks | None = None) -> Notification:
    """Render one risk event for one target. `kind` defaults from the transition (opened/updated/resolved);
    pass the policy's `Decision.kind` and `Decision.dedup_suffix` to render escalations and repeats.

    With the `alert_id` the message carries the action buttons (Acknowledge, Snooze, Open account, Open in
    CRM: `actions.slack_actions`); `links` adds the signed Acknowledge / Snooze links to the e-mail."""
    kind = kind or risk.transition
    link = health_link(public_url, risk.account_id, target.key)
    name = _account_name(risk)
    type_label = TYPE_LABELS.get(risk.type, risk.type)
    prefix = KIND_PREFIX.get(kind, "")
    severity = risk.severity
    reasons = [truncate(r, 300) for r in risk.health.reasons[:TOP_REASONS]]
    evidence = evidence_lines(risk)
    # Signal-to-notification latency is about the event that caused this notification: a reminder's
    # cause is the clock, not the (long past) event that opened the risk.
    received = risk.trigger.received_at if risk.trigger is not None and kind != "repeat" else None

    # Slack
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "emoji": True, "text": mrkdwn(
            f"{prefix}{severity.capitalize()} · {type_label} · {name}", SLACK_HEADER_TEXT_MAX)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn(risk.summary or type_label,
                                                                      SLACK_SECTION_TEXT_MAX)}},
    ]
    fields = [
        ("Account", f"{name} ({risk.account_id})" if risk.account.name else risk.account_id),
        ("Severity", f"{severity}"),
        ("Risk", type_label),
        ("Health", _health_text(risk)),
    ]
    if risk.account.arr is not None:
        fields.append(("ARR", _money(risk.account.arr)))
    if risk.account.renewal_date is not None:
        fields.append(("Renewal", risk.account.renewal_date.isoformat()))
    if risk.account.segment:
        fields.append(("Segment", risk.account.segment))
    if risk.account.csm is not None and (risk.account.csm.name or risk.account.csm.email):
        fields.append(("CSM", risk.account.csm.name or risk.account.csm.email or ""))
    blocks.append({"type": "section", "fields": [
        {"type": "mrkdwn", "text": f"*{label}*\n" + mrkdwn(value, SLACK_FIELD_TEXT_MAX - len(label) - 3)}
        for label, value in fields[:SLACK_MAX_FIELDS]]})
    if evidence:
        body = "\n".join(f"• {sentence}" for sentence in evidence)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "*Evidence*\n" + mrkdwn(
            body, SLACK_SECTION_TEXT_MAX - 15)}})
    if reasons:
        title = f"*Health {_health_text(risk)}, main reasons*\n"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": title + mrkdwn(
            "\n".join(f"• {r}" for r in reasons), SLACK_SECTION_TEXT_MAX - len(title))}})
    if alert_id is not None:
        blocks.append(slack_actions(alert_id, link, _crm_url(risk)))
    elif len(link) <= SLACK_URL_MAX:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open account health"}, "url": link}]})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn(
        f"churnsignal · risk {risk.risk_id} · detected {risk.detected_at.isoformat()}",
        SLACK_CONTEXT_TEXT_MAX)}]})
    text = mrkdwn(f"{prefix}[{severity.upper()}] {type_label} on {name}: {risk.summary}", FALLBACK_TEXT_MAX)

    # Email
    subject = header_safe(f"[churnsignal] {prefix}{severity.upper()} {type_label}: {name}")
    lines = [f"{prefix}{severity.capitalize()} risk: {type_label}", "",
             f"Account: {name} ({risk.account_id})", f"Summary: {truncate(risk.summary, 2000)}",
             f"Health: {_health_text(risk)}"]
    if reasons:
        lines += ["Main reasons:"] + [f"  - {r}" for r in reasons]
    if evidence:
        lines += ["Evidence:"] + [f"  - {sentence}" for sentence in evidence]
    lines += [f"{label}: {value}" for label, value in fields[4:]]
    lines += ["", f"Account health: {link}"]
    crm = _crm_url(risk)
    if crm:
        lines.append(f"Open in CRM: {crm}")
    if links is not None:
        lines += [f"Acknowledge: {links.ack}", f"Snooze {SNOOZE_DAYS} days: {links.snooze}"]
    lines += ["", f"Risk {risk.risk_id} (event {risk.event_id}), detected {risk.detected_at.isoformat()}"]
    email_text = _clean("\n".join(lines)) + "\n"
    e = html.escape
    html_parts = [
        "<!DOCTYPE html><html><body style=\"font-family:sans-serif\">",
        f"<h2>{e(prefix)}{e(severity.capitalize())} risk: {e(type_label)} &mdash; {e(name)}</h2>",
        f"<p>{e(truncate(_clean(risk.summary), 2000))}</p>",
        "<table>" + "".join(f"<tr><th align=\"left\">{e(label)}</th><td>{e(_clean(value))}</td></tr>"
                            for label, value in fields) + "</table>",
    ]
    if reasons:
        html_parts.append("<h3>Main reasons</h3><ul>" + "".join(f"<li>{e(_clean(r))}</li>" for r in reasons)
                          + "</ul>")
    if evidence:
        html_parts.append("<h3>Evidence</h3><ul>" + "".join(
            f"<li>{e(_clean(sentence))}</li>" for sentence in evidence) + "</ul>")
    html_parts.append(f"<p><a href=\"{e(link, quote=True)}\">Open account health</a></p>")
    if crm:
        html_parts.append(f"<p><a href=\"{e(crm, quote=True)}\">Open in CRM</a></p>")
    if links is not None:
        html_parts.append(f"<p><a href=\"{e(links.ack, quote=True)}\">Acknowledge</a> &middot; "
                          f"<a href=\"{e(links.snooze, quote=True)}\">Snooze {SNOOZE_DAYS} days</a></p>")
    html_parts.append(f"<p style=\"color:#888\">Risk {e(risk.risk_id)} (event {e(risk.event_id)}), "
                      f"detected {e(risk.detected_at.isoformat())}</p></body></html>")

    key = dedup_key(risk, target, dedup_suffix or kind)
    webhook_body = {"kind": kind, "dedup_key": key, "receiver": target.receiver, "link": link,
                    "risk": risk.model_dump(mode="json")}
    return Notification(
        dedup_key=key, target=target, kind=kind, risk_ids=(risk.risk_id,), event_ids=(risk.event_id,),
        account_ids=(risk.account_id,), severity=severity,
        summary=one_line(f"{prefix}{severity} {risk.type} on {name}: {risk.summary}"),
        text=text, slack_blocks=blocks, email_subject=subject, email_text=email_text,
        email_html="".join(html_parts), webhook_body=webhook_body, link=link, source_received_at=received,
    )


def _crm_url(risk: RiskEvent) -> str | None:
    """The account's CRM page, when scoring knows one (an http(s) URL, checked at ingest)."""
    url = risk.account.crm_url
    return url if url is not None and url.lower().startswith(("https://", "http://")) else None


# --- digests --------------------------------------------------------------------------------------------

def digest_key(target: Target, event_ids: Iterable[str]) -> str:
    """Deterministic for the same set of events, so a regrouping after a restart claims the same key."""
    digest = hashlib.sha256("\n".join(sorted(event_ids)).encode()).hexdigest()[:24]
    return f"digest|{target.key}|{digest}"


def render_digest(risks: Sequence[RiskEvent], target: Target, public_url: str | PageLinks) -> Notification:
    """One message listing several risks (of several accounts) for one target."""
    if not risks:
        raise ValueError("a digest needs at least one risk")
    event_ids = tuple(r.event_id for r in risks)
    key = digest_key(target, event_ids)
    n = len(risks)
    low = "low-severity " if all(r.severity == "low" for r in risks) else ""
    title = f"{n} {low}risk{'s' if n != 1 else ''} to review"
    shown = risks[:DIGEST_MAX_ITEMS]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "emoji": True, "text": title}},
    ]
    text_lines = [title, ""]
    html_items = []
    for risk in shown:
        name = _account_name(risk)
        label = TYPE_LABELS.get(risk.type, risk.type)
        link = health_link(public_url, risk.account_id, target.key)
        line = f"{label} · {name} · health {_health_text(risk)}\n{truncate(risk.summary, 500)}"
        section: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn(
            line, SLACK_SECTION_TEXT_MAX)}}
        if len(link) <= SLACK_URL_MAX:
            section["accessory"] = {"type": "button", "text": {"type": "plain_text", "text": "Health"},
                                    "url": link}
        blocks.append(section)
        text_lines += [f"- {label} on {name} ({risk.account_id}), health {_health_text(risk)}",
                       f"  {truncate(risk.summary, 500)}", f"  {link}"]
        html_items.append(
            f"<li><b>{html.escape(label)}</b> on {html.escape(_clean(name))}, health "
            f"{html.escape(_health_text(risk))}<br>{html.escape(_clean(truncate(risk.summary, 500)))}<br>"
            f"<a href=\"{html.escape(link, quote=True)}\">Open account health</a></li>")
    if n > len(shown):
        more = f"…and {n - len(shown)} more"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": more}})
        text_lines.append(more)
        html_items.append(f"<li>{html.escape(more)}</li>")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "churnsignal digest"}]})
    accounts = tuple(dict.fromkeys(r.account_id for r in risks))
    received = [r.trigger.received_at for r in risks if r.trigger is not None and r.trigger.received_at]
    first_names = ", ".join(_account_name(r) for r in shown[:3])
    return Notification(
        dedup_key=key, target=target, kind="digest", risk_ids=tuple(r.risk_id for r in risks),
        event_ids=event_ids, account_ids=accounts, severity=max((r.severity for r in risks),
                                                                key=lambda s: SEVERITY_RANK.get(s, 0)),
        summary=one_line(f"digest of {n} risk(s): {first_names}"),
        text=mrkdwn(f"{title}: {first_names}", FALLBACK_TEXT_MAX), slack_blocks=blocks,
        email_subject=header_safe(f"[churnsignal] {title}"),
        email_text=_clean("\n".join(text_lines)) + "\n",
        email_html=("<!DOCTYPE html><html><body style=\"font-family:sans-serif\">"
                    f"<h2>{html.escape(title)}</h2><ul>{''.join(html_items)}</ul></body></html>"),
        webhook_body={"kind": "digest", "dedup_key": key, "receiver": target.receiver,
                      "risks": [r.model_dump(mode="json") for r in risks]},
        link=_book_link(public_url, target),
        source_received_at=min(received) if received else None,
    )



# --- several risks of one account -------------------------------------------------------------------------

def worst_first(risks: Iterable[RiskEvent]) -> list[RiskEvent]:
    """Highest severity first; then by type and risk id (a stable order)."""
    return sorted(risks, key=lambda r: (-SEVERITY_RANK.get(r.severity, 0), r.type, r.risk_id))


def group_key(target: Target, event_ids: Iterable[str]) -> str:
    """Deterministic for the same set of events, like `digest_key`."""
    digest = hashlib.sha256("\n".join(sorted(event_ids)).encode()).hexdigest()[:24]
    return f"group|{target.key}|{digest}"


def render_group(risks: Sequence[RiskEvent], target: Target, public_url: str | PageLinks, *,
                 alert_ids: Mapping[str, int] | None = None,
                 action_links: Callable[[int], ActionLinks | None] | None = None) -> Notification:
    """One message for one target listing several risks of ONE account, worst severity first. Each risk
    whose alert id is known (`alert_ids`, by risk id) gets its own Acknowledge / Snooze buttons, and in
    e-mails its own signed action links (`action_links(alert id)`)."""
    alert_ids = alert_ids or {}
    if not risks:
        raise ValueError("a group needs at least one risk")
    ordered = worst_first(risks)
    first = ordered[0]
    name = _account_name(first)
    link = health_link(public_url, first.account_id, target.key)
    n = len(ordered)
    severity = first.severity
    event_ids = tuple(r.event_id for r in ordered)
    key = group_key(target, event_ids)
    title = f"{severity.capitalize()} · {n} risks · {name}"
    shown = ordered[:DIGEST_MAX_ITEMS - 2]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "emoji": True, "text": mrkdwn(title,
                                                                                      SLACK_HEADER_TEXT_MAX)}},
    ]
    fields = [("Account", f"{name} ({first.account_id})" if first.account.name else first.account_id),
              ("Health", _health_text(first))]
    if first.account.arr is not None:
        fields.append(("ARR", _money(first.account.arr)))
    if first.account.renewal_date is not None:
        fields.append(("Renewal", first.account.renewal_date.isoformat()))
    blocks.append({"type": "section", "fields": [
        {"type": "mrkdwn", "text": f"*{label}*\n" + mrkdwn(value, SLACK_FIELD_TEXT_MAX - len(label) - 3)}
        for label, value in fields]})
    text_lines = [f"{n} risks on {name} ({first.account_id}), worst first:", ""]
    html_items: list[str] = []
    for risk in shown:
        label = TYPE_LABELS.get(risk.type, risk.type)
        emoji = SEVERITY_EMOJI.get(risk.severity, "")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"{emoji} *" + mrkdwn(
            f"{risk.severity.capitalize()} · {label}", 200) + "*\n" + mrkdwn(
            truncate(risk.summary or label, 500), SLACK_SECTION_TEXT_MAX - 220)}})
        text_lines += [f"- [{risk.severity.upper()}] {label}: {truncate(risk.summary, 500)}"]
        actions_html = ""
        alert_id = alert_ids.get(risk.risk_id)
        if alert_id is not None:
            blocks.append(slack_actions(alert_id, None, block_id=f"churnsignal_actions_{alert_id}"))
            links = action_links(alert_id) if action_links is not None else None
            if links is not None:
                text_lines += [f"  Acknowledge: {links.ack}", f"  Snooze {SNOOZE_DAYS} days: {links.snooze}"]
                actions_html = (f"<br><a href=\"{html.escape(links.ack, quote=True)}\">Acknowledge</a> &middot; "
                                f"<a href=\"{html.escape(links.snooze, quote=True)}\">Snooze {SNOOZE_DAYS} days</a>")
        html_items.append(f"<li><b>{html.escape(risk.severity.capitalize())} &middot; {html.escape(label)}</b>"
                          f"<br>{html.escape(_clean(truncate(risk.summary, 500)))}{actions_html}</li>")
    if n > len(shown):
        more = f"…and {n - len(shown)} more"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": more}})
        text_lines.append(more)
        html_items.append(f"<li>{html.escape(more)}</li>")
    if len(link) <= SLACK_URL_MAX:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open account health"}, "url": link}]})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn(
        "churnsignal · risks " + ", ".join(r.risk_id for r in shown), SLACK_CONTEXT_TEXT_MAX)}]})
    text_lines += ["", f"Account health: {link}"]
    received = [r.trigger.received_at for r in ordered if r.trigger is not None and r.trigger.received_at]
    summary = "; ".join(f"{r.severity} {r.type}" for r in shown[:5])
    return Notification(
        dedup_key=key, target=target, kind="grouped", risk_ids=tuple(r.risk_id for r in ordered),
        event_ids=event_ids, account_ids=(first.account_id,), severity=severity,
        summary=one_line(f"{n} risks on {name}: {summary}"),
        text=mrkdwn(f"[{severity.upper()}] {n} risks on {name}: " + "; ".join(
            f"{TYPE_LABELS.get(r.type, r.type)} ({r.severity})" for r in shown[:10]), FALLBACK_TEXT_MAX),
        slack_blocks=blocks,
        email_subject=header_safe(f"[churnsignal] {severity.upper()} {n} risks: {name}"),
        email_text=_clean("\n".join(text_lines)) + "\n",
        email_html=("<!DOCTYPE html><html><body style=\"font-family:sans-serif\">"
                    f"<h2>{html.escape(n.__str__())} risks on {html.escape(_clean(name))}</h2><ol>"
                    f"{''.join(html_items)}</ol><p><a href=\"{html.escape(link, quote=True)}\">Open account "
                    "health</a></p></body></html>"),
        webhook_body={"kind": "grouped", "dedup_key": key, "receiver": target.receiver, "link": link,
                      "risks": [r.model_dump(mode="json") for r in ordered]},
        link=link, source_received_at=min(received) if received else None,
    )


# --- the daily digest -------------------------------------------------------------------------------------

DAILY_SECTION_MAX = 20          # lines per section; the rest is counted


def render_daily_digest(open_risks: Sequence[RiskEvent], target: Target, public_url: str | PageLinks, *,
                        changed: Sequence[tuple[RiskEvent, str]], day: date, since: datetime | None,
                        renewal_horizon: timedelta, dedup_key: str) -> Notification:
    """A target's daily digest: open risks (worst first), red accounts, renewals within `renewal_horizon`
    of `day`, and what changed since the previous digest (`since`; None: the first digest)."""
    ordered = worst_first(open_risks)
    latest: dict[str, RiskEvent] = {}
    for risk in [*ordered, *(r for r, _ in changed)]:
        current = latest.get(risk.account_id)
        if current is None or risk.detected_at > current.detected_at:
            latest[risk.account_id] = risk
    open_accounts = {r.account_id for r in ordered}
    red = sorted((r for a, r in latest.items() if a in open_accounts and r.health.tier == "red"),
                 key=lambda r: (r.health.score if r.health.score is not None else 101, r.account_id))
    horizon = day + renewal_horizon
    renewals = sorted((r for a, r in latest.items() if a in open_accounts and r.account.renewal_date is not None
                       and day <= r.account.renewal_date <= horizon),
                      key=lambda r: (r.account.renewal_date, r.account_id))
    sections: list[tuple[str, list[str]]] = [
        (f"Open risks ({len(ordered)})", [
            f"[{r.severity.upper()}] {TYPE_LABELS.get(r.type, r.type)} · {_account_name(r)}: "
            f"{truncate(r.summary, 200)}" for r in ordered]),
        (f"Red accounts ({len(red)})", [f"{_account_name(r)} ({r.account_id}), health {_health_text(r)}"
                                        for r in red]),
        (f"Renewals within {renewal_horizon.days} days ({len(renewals)})", [
            f"{_account_name(r)} ({r.account_id}) renews {r.account.renewal_date.isoformat()}"  # type: ignore[union-attr]
            + (f", ARR {_money(r.account.arr)}" if r.account.arr is not None else "") for r in renewals]),
        (("Changed since the last digest" if since is not None else "Changed since yesterday")
         + f" ({len(changed)})", [
            f"{kind}: {TYPE_LABELS.get(r.type, r.type)} ({r.severity}) · {_account_name(r)}"
            for r, kind in changed]),
    ]
    title = f"Daily digest {day.isoformat()}: {len(ordered)} open risk{'s' if len(ordered) != 1 else ''}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "emoji": True, "text": mrkdwn(title,
                                                                                      SLACK_HEADER_TEXT_MAX)}}]
    text_lines = [title, ""]
    html_parts = ["<!DOCTYPE html><html><body style=\"font-family:sans-serif\">", f"<h2>{html.escape(title)}</h2>"]
    for heading, lines in sections:
        shown = lines[:DAILY_SECTION_MAX]
        if len(lines) > len(shown):
            shown = [*shown, f"…and {len(lines) - len(shown)} more"]
        body = "\n".join(f"• {line}" for line in shown) if shown else "none"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*{heading}*\n" + mrkdwn(
            body, SLACK_SECTION_TEXT_MAX - len(heading) - 3)}})
        text_lines += [heading] + ([f"  - {line}" for line in shown] or ["  none"]) + [""]
        html_parts.append(f"<h3>{html.escape(heading)}</h3>" + ("<ul>" + "".join(
            f"<li>{html.escape(_clean(line))}</li>" for line in shown) + "</ul>" if shown else "<p>none</p>"))
    link = _book_link(public_url, target)
    text_lines.append(f"Open risks: {link}")
    html_parts.append(f"<p><a href=\"{html.escape(link, quote=True)}\">Open risks</a></p></body></html>")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "churnsignal daily digest"}]})
    everything = [*ordered, *(r for r, _ in changed)]
    worst = max((r.severity for r in everything), key=lambda s: SEVERITY_RANK.get(s, 0), default="low")
    return Notification(
        dedup_key=dedup_key, target=target, kind="daily_digest",
        risk_ids=tuple(dict.fromkeys(r.risk_id for r in everything)),
        event_ids=tuple(dict.fromkeys(r.event_id for r in everything)),
        account_ids=tuple(dict.fromkeys(r.account_id for r in everything)), severity=worst,
        summary=one_line(f"daily digest: {len(ordered)} open, {len(red)} red, {len(renewals)} renewals, "
                         f"{len(changed)} changed"),
        text=mrkdwn(f"{title}; {len(red)} red accounts, {len(renewals)} renewals soon, {len(changed)} changes",
                    FALLBACK_TEXT_MAX),
        slack_blocks=blocks, email_subject=header_safe(f"[churnsignal] {title}"),
        email_text=_clean("\n".join(text_lines)) + "\n", email_html="".join(html_parts),
        webhook_body={"kind": "daily_digest", "dedup_key": dedup_key, "receiver": target.receiver,
                      "day": day.isoformat(), "open": [r.model_dump(mode="json") for r in ordered],
                      "changed": [{"change": kind, "risk_id": r.risk_id} for r, kind in changed]},
        link=link,
    )
