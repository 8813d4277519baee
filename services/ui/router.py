"""The CSM-facing web pages: an account's page and a CSM's portfolio, server-rendered HTML.

Access: `?t=<token>` of a signed link (shared/links.py) for that very page (an account link opens that
account, a portfolio link that CSM's portfolio and the accounts in it), or an API key with the `read` scope
(`X-API-Key: <key>` or `Authorization: Bearer <key>`). Every answer is HTML, errors included: a missing,
forged or expired link is a 401 page, an unknown account a 404 page. The pages carry no script; the token
stays out of referrers, caches and search engines (see `_HEADERS`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from services.ui.queries import AccountView, PortfolioRow, UiReadModel, sort_portfolio
from shared.errors import Forbidden, Unauthorized
from shared.evidence import evidence_sentences
from shared.http import KeyRing
from shared.links import Claims, LinkError, sign_account_link, verify
from shared.risks import SEVERITY_RANK

TEMPLATES = Path(__file__).with_name("templates")
SORTS = ("risk", "name", "score", "renewal", "arr")
TIERS = ("green", "yellow", "red", "unknown")
MAX_RENEWAL_DAYS = 3650
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
}


@dataclass(frozen=True, slots=True)
class Access:
    """Who opened the page: a signed link's claims, or an API key's name."""
    claims: Claims | None = None
    token: str | None = None
    key_name: str | None = None


class _Page(Exception):
    """An HTML error page to answer with."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(money=_money, when=_when, day=_day, label=_label, points=_points, signed=_signed,
                       delta_reason=_delta_reason)
    return env


def _utcnow() -> datetime:
    return datetime.now(UTC)


def ui_router(read_model: UiReadModel | Callable[[], UiReadModel], *, link_secret: bytes | Callable[[], bytes],
              keyring: KeyRing, public_url: str, clock: Callable[[], datetime] = _utcnow) -> APIRouter:
    """`GET /ui/accounts/{account_id}` and `GET /ui/portfolio`. `read_model` may be a callable resolved per
    request (a read model built in the app's lifespan), and so may `link_secret` (shared/link_key.py:
    `LinkKey`, loaded from the database at start-up). `public_url` is where the pages are reached from
    outside (the canonical address of each page); `clock` is the wall clock links expire by."""
    if not link_secret:
        raise ValueError("ui_router needs a link secret (shared/link_key.py)")
    secret: Callable[[], bytes] = link_secret if callable(link_secret) else (lambda: link_secret)
    env = _environment()
    base = public_url.rstrip("/")
    router = APIRouter(prefix="/ui", include_in_schema=False)

    def model() -> UiReadModel:
        return read_model if isinstance(read_model, UiReadModel) else read_model()

    def render(template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    def error_page(page: _Page) -> HTMLResponse:
        response = render("error.html", page.status, title=page.title, message=page.message)
        if page.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="churnsignal"'
        return response

    def access(request: Request, opens: Callable[[Claims], bool]) -> Access:
        token = request.query_params.get("t")
        if token:
            try:
                claims = verify(secret(), token, now=clock())
            except LinkError as exc:
                if exc.reason == "expired":
                    raise _Page(401, "This link has expired",
                                "Links to these pages are valid for a limited time. Open the latest alert "
                                "or ask for a new link.") from exc
                raise _Page(401, "This link is not valid",
                            "The link is incomplete or has been changed. Open it again from the original "
                            "message.") from exc
            if not opens(claims):
                raise _Page(401, "This link is not valid", "This link opens another page.")
            return Access(claims=claims, token=token)
        header = request.headers.get("authorization")
        api_key = request.headers.get("x-api-key")
        if api_key:
            header = f"Bearer {api_key.strip()}"
        if not header:
            raise _Page(401, "This link is not valid",
                        "This page opens from a link in an alert or a digest, or with an API key.")
        try:
            key = keyring.require(header, "read")
        except Unauthorized as exc:
            raise _Page(401, "This link is not valid", "The API key is not valid.") from exc
        except Forbidden as exc:
            raise _Page(403, "Not allowed", "This API key may not read account data.") from exc
        return Access(key_name=key.name)

    @router.get("/accounts/{account_id}", response_class=HTMLResponse)
    async def account_page(account_id: str, request: Request) -> HTMLResponse:
        try:
            who = access(request, lambda c: c.opens_account(account_id))
            view = await model().account(account_id)
            if view is None:
                raise _Page(404, "Unknown account", f"There is no account “{account_id}”.")
        except _Page as page:
            return error_page(page)
        return render("account.html", **_account_context(view, who, base, clock()))

    @router.get("/portfolio", response_class=HTMLResponse)
    async def portfolio_page(request: Request) -> HTMLResponse:
        params = request.query_params
        try:
            token_csm = _token_csm(params.get("t"), secret(), clock())
            csm = (params.get("csm") or "").strip() or token_csm
            if not csm:
                access(request, lambda _: False)   # 401 unless an API key opens it: then say what is missing
                raise _Page(400, "Which portfolio?", "Give the CSM's e-mail, Slack id or name as ?csm=.")
            who = access(request, lambda c: c.opens_portfolio(csm))
            sort = params.get("sort") or "risk"
            if sort not in SORTS:
                raise _Page(400, "Unknown order", f"Sort by one of: {', '.join(SORTS)}.")
            direction = params.get("dir")
            if direction not in (None, "", "asc", "desc"):
                raise _Page(400, "Unknown order", "dir is asc or desc.")
            tier = params.get("tier") or None
            if tier is not None and tier not in TIERS:
                raise _Page(400, "Unknown tier", f"Tier is one of: {', '.join(TIERS)}.")
            segment = (params.get("segment") or "").strip() or None
            renewal_within = _days_param(params.get("renewal_within"))
            now = clock()
            rows = await model().portfolio(csm, tier=tier, segment=segment, renewal_within=renewal_within,
                                           today=now.date())
        except _Page as page:
            return error_page(page)
        descending = None if not direction else direction == "desc"
        rows = sort_portfolio(rows, sort, descending=descending)
        filters = {"tier": tier, "segment": segment,
                   "renewal_within": None if renewal_within is None else str(renewal_within)}
        return render("portfolio.html", **_portfolio_context(rows, csm, who, sort, descending, filters, base,
                                                             secret(), now))

    return router


def _token_csm(token: str | None, secret: bytes, now: datetime) -> str | None:
    """The CSM a valid portfolio token names (for a portfolio link without ?csm=)."""
    if not token:
        return None
    try:
        claims = verify(secret, token, now=now)
    except LinkError:
        return None   # reported by the access check
    return claims.csm


def _days_param(raw: str | None) -> int | None:
    if raw is None or not raw.strip():
        return None
    try:
        days = int(raw)
    except ValueError as exc:
        raise _Page(400, "Invalid filter", "Renewal within is a whole number of days.") from exc
    if not 0 <= days <= MAX_RENEWAL_DAYS:
        raise _Page(400, "Invalid filter", f"Renewal within is 0 to {MAX_RENEWAL_DAYS} days.")
    return days


# -- page contexts -----------------------------------------------------------------------------------------

def _account_context(view: AccountView, who: Access, base: str, now: datetime) -> dict[str, Any]:
    renewal = view.brief.get("renewal_date")
    renewal_in = None
    if renewal:
        renewal_in = (date.fromisoformat(renewal) - now.date()).days
    open_risks = sorted(view.open_risks, key=lambda r: (-SEVERITY_RANK.get(r["severity"], 0), r["type"]))
    return {
        "view": view, "who": who, "title": view.name,
        "canonical": f"{base}/ui/accounts/{quote(view.account_id, safe='')}",
        "csm": view.brief.get("csm") or {}, "renewal_in": renewal_in,
        "sparkline": sparkline([(p.at, p.score) for p in view.history]),
        # Components this configuration does not weigh at all are left out.
        "components": sorted((c for c in view.health.get("components", [])
                              if c["weight"] or c.get("configured_weight")),
                             key=lambda c: (c["score"] is None, -(c["weight"] * (100 - (c["score"] or 0))))),
        "open_risks": [{**r, "sentences": evidence_sentences(r["type"], r["evidence"], view.names)}
                       for r in open_risks],
        "recent_risks": [{**r, "sentences": evidence_sentences(r["type"], r["evidence"], view.names)}
                         for r in view.recent_risks],
    }


def _portfolio_context(rows: list[PortfolioRow], csm: str, who: Access, sort: str, descending: bool | None,
                       filters: dict[str, str | None], base: str, secret: bytes,
                       now: datetime) -> dict[str, Any]:
    token = None
    account_token: Callable[[str], str | None] = lambda _: None  # noqa: E731
    if who.claims is not None:
        claims = who.claims
        token = who.token
        remaining = claims.expires_at - now

        def account_token(account_id: str) -> str | None:
            if remaining <= timedelta(0):
                return None
            return sign_account_link(secret, account_id, claims.receiver, now=now, ttl=remaining)

    def href(**changes: str | None) -> str:
        query = {"csm": csm, **filters, "sort": sort, "dir": None if descending is None else
                 ("desc" if descending else "asc"), **changes}
        if token:
            query["t"] = token
        return "/ui/portfolio?" + urlencode({k: v for k, v in query.items() if v})

    def sort_href(column: str) -> str:
        if column == sort:   # the same header again flips the order
            current = descending if descending is not None else column == "arr"
            return href(sort=column, dir="asc" if current else "desc")
        return href(sort=column, dir=None)

    def account_href(account_id: str) -> str:
        path = f"/ui/accounts/{quote(account_id, safe='')}"
        signed = account_token(account_id)
        return f"{path}?{urlencode({'t': signed})}" if signed else path

    default_desc = sort == "arr"
    shown_desc = default_desc if descending is None else descending
    columns = [("name", "Account"), ("risk", "Open risk"), ("score", "Score"), ("renewal", "Renewal"),
               ("arr", "ARR")]
    total_arr = sum(r.arr for r in rows if r.arr is not None)
    return {
        "title": f"Portfolio of {csm}", "csm": csm, "rows": rows, "who": who, "sort": sort,
        "sort_label": dict(columns)[sort],
        "aria_sort": "descending" if shown_desc else "ascending", "columns": columns, "filters": filters,
        "tiers": TIERS, "token": token, "sort_href": sort_href, "account_href": account_href,
        "total_arr": total_arr, "canonical": f"{base}/ui/portfolio?{urlencode({'csm': csm})}",
        "today": now.date(),
    }


# -- sparkline ---------------------------------------------------------------------------------------------

def sparkline(points: list[tuple[datetime, float]], *, width: int = 240, height: int = 48,
              pad: int = 3) -> dict[str, Any] | None:
    """The polyline of a score history on a 0-100 scale (x by time), for an inline SVG; None when fewer
    than two points."""
    if len(points) < 2:
        return None
    t0, t1 = points[0][0].timestamp(), points[-1][0].timestamp()
    span = (t1 - t0) or 1.0
    coords = []
    for at, score in points:
        x = pad + (at.timestamp() - t0) / span * (width - 2 * pad)
        y = pad + (100.0 - max(0.0, min(100.0, score))) / 100.0 * (height - 2 * pad)
        coords.append(f"{x:.1f},{y:.1f}")
    first, last = points[0][1], points[-1][1]
    lo, hi = min(s for _, s in points), max(s for _, s in points)
    days = max(1, round(span / 86400))
    label = (f"Score history over {days} day{'s' if days != 1 else ''}: from {first:.0f} to {last:.0f} "
             f"(lowest {lo:.0f}, highest {hi:.0f})")
    end_x, end_y = coords[-1].split(",")
    return {"width": width, "height": height, "points": " ".join(coords), "label": label,
            "end_x": end_x, "end_y": end_y,
            "green_y": f"{pad + (100 - 70) / 100 * (height - 2 * pad):.1f}",
            "red_y": f"{pad + (100 - 40) / 100 * (height - 2 * pad):.1f}"}


# -- filters -----------------------------------------------------------------------------------------------

def _money(value: Any) -> str:
    if value is None:
        return "—"
    value = float(value)
    if value >= 1_000_000:
        return f"${value / 1_000_000:,.2f}M"
    if value >= 10_000:
        return f"${value / 1000:,.0f}k"
    return f"${value:,.0f}"


def _when(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


def _day(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)[:10]


def _label(value: Any) -> str:
    text = str(value or "").replace("_", " ")
    return text[:1].upper() + text[1:]


def _points(value: Any) -> str:
    return "—" if value is None else f"{float(value):.0f}"


_DELTA_PREFIX = re.compile(r"^[+\u2212-]?\d+(?:\.\d+)?:\s*")


def _delta_reason(value: Any) -> str:
    """A delta's reason without its leading points ("−12: ticket spike" → "ticket spike"): the page
    shows the change beside it."""
    return _DELTA_PREFIX.sub("", str(value or ""))


def _signed(value: Any) -> str:
    return "—" if value is None else f"{float(value):+.1f}".replace("-", "\u2212")
