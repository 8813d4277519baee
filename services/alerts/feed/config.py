"""The health feed's subscribers (`CHURNSIGNAL_FEED_WEBHOOKS`), read and checked once at start.

The setting is one secret string (shared/settings.py): it is parsed here, so that every error names the
entry and the problem and never echoes a URL or a secret (a settings validation error would show its input).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from shared.health_feed import FAMILIES, MESSAGE_TYPES
from shared.standard_webhooks import decode_secret

VARIABLE = "CHURNSIGNAL_FEED_WEBHOOKS"
KEYS = ("url", "secret", "name", "types")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class FeedEndpoint:
    """One subscriber: where to POST, the keys that sign (the newest first) and the types it asked for."""

    name: str
    url: str = field(repr=False)
    keys: tuple[bytes, ...] = field(repr=False)
    types: frozenset[str] = frozenset()      # exact types; empty with no families: every type
    families: tuple[str, ...] = ()           # type prefixes, e.g. "risk."

    def wants(self, message_type: str) -> bool:
        if not self.types and not self.families:
            return True
        return message_type in self.types or message_type.startswith(self.families)


def default_name(url: str) -> str:
    """A subscriber's name when none is configured: stable for its URL, and telling nothing of it."""
    return "webhook-" + hashlib.sha256(url.encode()).hexdigest()[:8]


def feed_endpoints(setting: SecretStr | str | None) -> list[FeedEndpoint]:
    """The subscribers of the setting's JSON list (none when unset or empty), or ValueError listing every
    problem, one per line, each naming its entry."""
    text = setting.get_secret_value() if isinstance(setting, SecretStr) else setting
    if text is None or not text.strip():
        return []
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{VARIABLE}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{VARIABLE}: a JSON list of objects with url and secret")
    problems: list[str] = []
    endpoints: list[FeedEndpoint] = []
    first_with: dict[str, int] = {}
    for i, entry in enumerate(entries):
        where = f"{VARIABLE}[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: not an object with url and secret")
            continue
        found = len(problems)
        endpoint = _endpoint(where, entry, problems)
        if endpoint is None:
            continue
        if endpoint.name in first_with:
            problems.append(f"{where}.name: {endpoint.name!r} is already the name of entry {first_with[endpoint.name]}")
        first_with.setdefault(endpoint.name, i)
        if len(problems) == found:
            endpoints.append(endpoint)
    if problems:
        raise ValueError("\n".join(problems))
    return endpoints


def _endpoint(where: str, entry: dict[str, Any], problems: list[str]) -> FeedEndpoint | None:
    """One entry as an endpoint, its problems appended to `problems` (None when it cannot be built)."""
    found = len(problems)
    for key in sorted(set(entry) - set(KEYS)):
        problems.append(f"{where}: unknown key {key!r} (the keys are {', '.join(KEYS)})")
    url = entry.get("url")
    if not isinstance(url, str):
        problems.append(f"{where}.url: {'missing' if url is None else 'not a string'}")
        url = ""
    else:
        url = url.strip()
        parts = None if any(c.isspace() for c in url) else urlsplit(url)
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(f"{where}.url: not an absolute http:// or https:// URL with a host")
    keys: list[bytes] = []
    secret = entry.get("secret")
    secrets = secret.split() if isinstance(secret, str) else []
    if not isinstance(secret, str):
        problems.append(f"{where}.secret: {'missing' if secret is None else 'not a string'}")
    elif not secrets:
        problems.append(f"{where}.secret: empty; give whsec_ followed by base64 of 24 to 64 random bytes")
    for n, one in enumerate(secrets):
        try:
            keys.append(decode_secret(one))
        except ValueError as exc:
            which = "" if len(secrets) == 1 else f" (secret {n + 1} of {len(secrets)})"
            problems.append(f"{where}.secret{which}: {exc}")
    name = entry.get("name")
    if name is None:
        name = default_name(url)
    elif not isinstance(name, str) or not _NAME.match(name):
        problems.append(f"{where}.name: 1 to 64 letters, digits, '-' or '_'")
    types = entry.get("types", [])
    exact: set[str] = set()
    families: list[str] = []
    if not isinstance(types, list):
        problems.append(f"{where}.types: a list of message types")
        types = []
    for t in types:
        if t in MESSAGE_TYPES:
            exact.add(t)
        elif t in FAMILIES:
            families.append(t[:-1])
        else:
            known = ", ".join((*MESSAGE_TYPES, *FAMILIES))
            shown = repr(t) if isinstance(t, str) and len(t) <= 40 else "a value"
            problems.append(f"{where}.types: unknown type {shown} (known: {known})")
    if len(problems) > found or not isinstance(name, str):
        return None
    return FeedEndpoint(name, url, tuple(keys), frozenset(exact), tuple(families))
