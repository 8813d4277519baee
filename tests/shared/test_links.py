"""Signed, expiring links to the web pages (shared/links.py) and the key that signs them."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from shared.db import create_engine
from shared.link_key import LinkKey, configured_link_key, link_key
from shared.links import (
    LinkError,
    LinkSecretMissing,
    account_page_url,
    portfolio_url,
    sign_account_link,
    sign_portfolio_link,
    verify,
)
from shared.settings import Settings

SECRET = b"k" * 32
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def _parts(token: str) -> tuple[dict, str]:
    payload, signature = token.split(".")
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))), signature


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_account_link_round_trip() -> None:
    token = sign_account_link(SECRET, "acme/eu 1", "U01MAYA", now=NOW)
    claims = verify(SECRET, token, now=NOW + timedelta(days=6, hours=23))
    assert claims.scope == "account" and claims.account_id == "acme/eu 1" and claims.receiver == "U01MAYA"
    assert claims.expires_at == NOW + timedelta(days=7)
    assert claims.opens_account("acme/eu 1") and not claims.opens_account("acme")
    assert not claims.opens_portfolio("U01MAYA")
    body, _ = _parts(token)
    assert body == {"scope": "account", "a": "acme/eu 1", "r": "U01MAYA",
                    "exp": int((NOW + timedelta(days=7)).timestamp())}
    assert "=" not in token and all(ch.isalnum() or ch in "-_." for ch in token)


def test_portfolio_link_round_trip() -> None:
    token = sign_portfolio_link(SECRET, "maya@example.com", now=NOW, ttl=timedelta(hours=1))
    claims = verify(SECRET, token, now=NOW)
    assert claims.scope == "portfolio" and claims.csm == "maya@example.com"
    assert claims.opens_portfolio("maya@example.com") and not claims.opens_portfolio("jonas@example.com")
    assert not claims.opens_account("maya@example.com")


def test_wrong_scope_opens_nothing_else() -> None:
    account = verify(SECRET, sign_account_link(SECRET, "acme", "r", now=NOW), now=NOW)
    portfolio = verify(SECRET, sign_portfolio_link(SECRET, "acme", now=NOW), now=NOW)
    assert not account.opens_portfolio("acme")
    assert not portfolio.opens_account("acme")


def test_forged_signature() -> None:
    token = sign_account_link(SECRET, "acme", "r", now=NOW)
    with pytest.raises(LinkError) as info:
        verify(b"another secret of enough length!", token, now=NOW)
    assert info.value.reason == "forged"
    payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(LinkError) as info:
        verify(SECRET, f"{payload}.{flipped}", now=NOW)
    assert info.value.reason == "forged"


def test_tampered_payload() -> None:
    token = sign_account_link(SECRET, "acme", "r", now=NOW)
    body, signature = _parts(token)
    for change in ({"a": "globex"}, {"exp": body["exp"] + 86_400 * 365}, {"scope": "portfolio", "csm": "x"}):
        payload = _b64(json.dumps({**body, **change}, separators=(",", ":")).encode())
        with pytest.raises(LinkError) as info:
            verify(SECRET, f"{payload}.{signature}", now=NOW)
        assert info.value.reason == "forged"


def test_expired() -> None:
    token = sign_account_link(SECRET, "acme", "r", now=NOW, ttl=timedelta(minutes=5))
    verify(SECRET, token, now=NOW + timedelta(minutes=4, seconds=59))
    with pytest.raises(LinkError, match="expired") as info:
        verify(SECRET, token, now=NOW + timedelta(minutes=5))
    assert info.value.reason == "expired"


@pytest.mark.parametrize("token", [None, "", "no-dot", "a.b.c", "!!!.abc", "abc.!!!", "abc.", ".abc",
                                   "é.abc", "x" * 5000 + ".y"])
def test_malformed(token: str | None) -> None:
    with pytest.raises(LinkError) as info:
        verify(SECRET, token, now=NOW)
    assert info.value.reason == "malformed"


def test_signed_but_not_a_link_payload_is_malformed() -> None:
    import hashlib
    import hmac

    for body in (b"[1, 2]", b"not json", json.dumps({"scope": "admin", "r": "x", "exp": 2**40}).encode(),
                 json.dumps({"scope": "account", "r": "x", "exp": "tomorrow", "a": "acme"}).encode()):
        payload = _b64(body)
        signature = _b64(hmac.new(SECRET, payload.encode(), hashlib.sha256).digest())
        with pytest.raises(LinkError) as info:
            verify(SECRET, f"{payload}.{signature}", now=NOW)
        assert info.value.reason == "malformed"


def test_signing_needs_an_aware_time_and_a_positive_ttl() -> None:
    with pytest.raises(ValueError):
        sign_account_link(SECRET, "acme", "r", now=NOW.replace(tzinfo=None))
    with pytest.raises(ValueError):
        sign_account_link(SECRET, "acme", "r", now=NOW, ttl=timedelta(0))


def test_urls() -> None:
    assert account_page_url("https://cs.example.com/", "acme/eu 1", "p.s") == \
        "https://cs.example.com/ui/accounts/acme%2Feu%201?t=p.s"
    assert portfolio_url("https://cs.example.com", "maya@example.com", "p.s") == \
        "https://cs.example.com/ui/portfolio?csm=maya%40example.com&t=p.s"


# -- the key ---------------------------------------------------------------------------------------------

def test_configured_key_is_used() -> None:
    settings = Settings(kafka_bootstrap_servers="kafka:9092", link_secret=SecretStr("s" * 40))
    assert configured_link_key(settings) == b"s" * 40


def test_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURNSIGNAL_LINK_SECRET", "e" * 32)
    monkeypatch.setenv("CHURNSIGNAL_LINK_TTL_DAYS", "2.5")
    settings = Settings(kafka_bootstrap_servers="kafka:9092")
    assert configured_link_key(settings) == b"e" * 32 and settings.link_ttl_days == 2.5
    assert "eeee" not in repr(settings)


def test_too_short_a_key_fails_naming_the_variable() -> None:
    with pytest.raises(LinkSecretMissing, match="CHURNSIGNAL_LINK_SECRET"):
        configured_link_key(Settings(kafka_bootstrap_servers="kafka:9092", link_secret=SecretStr("short")))
    assert configured_link_key(Settings(kafka_bootstrap_servers="kafka:9092")) is None


async def test_without_a_configured_key_one_is_kept_in_the_database(database_url: str) -> None:
    """Made by whoever asks first, then the same for every process on that database, across restarts."""
    settings = Settings(kafka_bootstrap_servers="kafka:9092")
    engines = [create_engine(database_url, pool_size=2) for _ in range(3)]
    try:
        keys = await asyncio.gather(*(link_key(settings, e) for e in engines))
        assert len(keys[0]) == 32 and keys[0] == keys[1] == keys[2]
        holder = LinkKey(settings)
        with pytest.raises(RuntimeError):
            holder()
        assert await holder.load(engines[0]) == keys[0] and holder() == keys[0]
        configured = LinkKey(Settings(kafka_bootstrap_servers="kafka:9092", link_secret=SecretStr("c" * 20)))
        assert configured() == b"c" * 20     # known at once, nothing read
    finally:
        for e in engines:
            await e.dispose()
    again = create_engine(database_url, pool_size=1)
    try:
        assert await link_key(settings, again) == keys[0]
    finally:
        await again.dispose()
