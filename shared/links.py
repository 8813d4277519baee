"""Signed, expiring links to the web pages (an account's page, a CSM's portfolio).

A token is `<payload>.<signature>`: the payload is the urlsafe base64 (unpadded) of compact JSON
`{"scope": "account", "a": <account id>, "r": <receiver>, "exp": <epoch seconds>}` (a portfolio link has
`"csm"` instead of `"a"`), the signature the urlsafe base64 of HMAC-SHA256 over the payload's bytes as they
appear in the token. Anyone holding the link may open that one page until it expires; nothing else.

Pure standard library. The key comes from `shared/link_key.py`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote, urlencode

if TYPE_CHECKING:
    pass

Scope = Literal["account", "portfolio"]
DEFAULT_TTL = timedelta(days=7)
SECRET_BYTES = 32
MAX_TOKEN_CHARS = 2048


class LinkError(ValueError):
    """A token that does not open anything; `reason` is "malformed", "forged" or "expired"."""

    def __init__(self, reason: Literal["malformed", "forged", "expired"], message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Claims:
    scope: Scope
    receiver: str
    expires_at: datetime
    account_id: str | None = None    # scope "account"
    csm: str | None = None           # scope "portfolio"

    def opens_account(self, account_id: str) -> bool:
        return self.scope == "account" and self.account_id == account_id

    def opens_portfolio(self, csm: str) -> bool:
        return self.scope == "portfolio" and self.csm == csm


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    if not text or any(ch not in _B64_ALPHABET for ch in text):
        raise ValueError("not urlsafe base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _mac(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest())


def _expiry(now: datetime, ttl: timedelta) -> int:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if ttl <= timedelta(0):
        raise ValueError("ttl must be positive")
    return int((now + ttl).timestamp())


def sign_payload(secret: bytes, body: dict[str, object]) -> str:
    """A token carrying `body` (with its own "scope" and "exp"), in the form above. Other signed links
    (e-mail actions, `services/alerts/domain/action_links.py`) use it with scopes of their own."""
    if not secret:
        raise ValueError("empty link secret")
    payload = _b64(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    return f"{payload}.{_mac(secret, payload)}"


def expiry(now: datetime, ttl: timedelta) -> int:
    """The "exp" of a token made at `now`, valid `ttl` (epoch seconds)."""
    return _expiry(now, ttl)


def verified_payload(secret: bytes, token: str | None) -> object:
    """The JSON payload of a token whose signature matches; `LinkError` ("malformed" or "forged")
    otherwise. The signature is checked, in constant time, before anything in the payload is trusted;
    the caller checks the scope, its claims and the expiry (`expires_at`)."""
    if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        raise LinkError("malformed", "the link's token is missing or not in the expected form")
    payload, signature = token.split(".")
    try:
        _unb64(payload)
        _unb64(signature)
    except (ValueError, binascii.Error) as exc:
        raise LinkError("malformed", "the link's token is not valid base64") from exc
    if not secret or not hmac.compare_digest(_mac(secret, payload), signature):
        raise LinkError("forged", "the link's signature does not match")
    try:
        return json.loads(_unb64(payload))
    except (ValueError, UnicodeDecodeError) as exc:
        raise LinkError("malformed", "the link's payload is not JSON") from exc


def expires_at(exp: int) -> datetime:
    """A payload's "exp" as a time; `LinkError` ("malformed") when out of range."""
    try:
        return datetime.fromtimestamp(exp, UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise LinkError("malformed", "the link's expiry is out of range") from exc


def sign_account_link(secret: bytes, account_id: str, receiver: str, *, now: datetime,
                      ttl: timedelta = DEFAULT_TTL) -> str:
    """A token opening the page of `account_id`, given to `receiver` (whoever the link is sent to)."""
    return sign_payload(secret, {"scope": "account", "a": account_id, "r": receiver, "exp": _expiry(now, ttl)})


def sign_portfolio_link(secret: bytes, csm: str, *, now: datetime, ttl: timedelta = DEFAULT_TTL,
                        receiver: str | None = None) -> str:
    """A token opening the portfolio of `csm` (their e-mail, Slack id or name as the accounts tell it)."""
    return sign_payload(secret, {"scope": "portfolio", "csm": csm, "r": csm if receiver is None else receiver,
                          "exp": _expiry(now, ttl)})


def verify(secret: bytes, token: str | None, *, now: datetime) -> Claims:
    """The claims of a valid token; `LinkError` when it is malformed, forged (signature or payload changed,
    or signed with another key) or expired. The signature is checked before anything in the payload is
    trusted, and compared in constant time."""
    claims = _claims(verified_payload(secret, token))
    if now >= claims.expires_at:
        raise LinkError("expired", f"the link expired at {claims.expires_at.isoformat()}")
    return claims


def _claims(body: object) -> Claims:
    if not isinstance(body, dict):
        raise LinkError("malformed", "the link's payload is not an object")
    scope, receiver, exp = body.get("scope"), body.get("r"), body.get("exp")
    if not isinstance(receiver, str) or not isinstance(exp, int) or isinstance(exp, bool):
        raise LinkError("malformed", "the link's payload lacks its receiver or expiry")
    until = expires_at(exp)
    if scope == "account" and isinstance(body.get("a"), str):
        return Claims("account", receiver, until, account_id=body["a"])
    if scope == "portfolio" and isinstance(body.get("csm"), str):
        return Claims("portfolio", receiver, until, csm=body["csm"])
    raise LinkError("malformed", "the link's payload has no known scope")


def account_page_url(public_url: str, account_id: str, token: str) -> str:
    """`{public_url}/ui/accounts/{account id, percent-encoded}?t={token}`."""
    return f"{public_url.rstrip('/')}/ui/accounts/{quote(account_id, safe='')}?{urlencode({'t': token})}"


def portfolio_url(public_url: str, csm: str, token: str) -> str:
    """`{public_url}/ui/portfolio?csm={csm}&t={token}`."""
    return f"{public_url.rstrip('/')}/ui/portfolio?{urlencode({'csm': csm, 't': token})}"


class LinkSecretMissing(RuntimeError):
    """CHURNSIGNAL_LINK_SECRET is set but unusable (too short)."""
