"""HMAC helpers the vendors' signature schemes are built from, and the freshness rule of signed timestamps.

Digests are compared with `hmac.compare_digest`, on bytes (a header may hold any text). Errors are 401s
that say what is wrong without echoing the signature or ever the secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime, timedelta

from shared.errors import Unauthorized

MAX_AGE = timedelta(minutes=5)  # a signed timestamp older (or further ahead) than this is refused


def hmac_sha256_base64(secret: str, message: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def hmac_sha1_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha1).hexdigest()


def same(expected: str, given: str) -> bool:
    """Constant-time equality of two header values."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogateescape"))


def required_header(headers: Mapping[str, str], name: str, source: str) -> str:
    """A header the vendor always sends with its signature (names are lower-case in `headers`)."""
    value = headers.get(name.lower())
    if not value or not value.strip():
        raise Unauthorized(f"missing {name} header: {source} signs every webhook with it")
    return value.strip()


def check_fresh(signed_at: datetime, now: datetime, header: str) -> None:
    """401 when the signed timestamp is more than `MAX_AGE` away from now (a replayed or delayed request)."""
    age = now - signed_at
    if age > MAX_AGE:
        raise Unauthorized(f"{header} is {int(age.total_seconds())} s old, more than the "
                           f"{int(MAX_AGE.total_seconds())} s accepted: the request is stale or replayed")
    if -age > MAX_AGE:
        raise Unauthorized(f"{header} is {int(-age.total_seconds())} s in the future, more than the "
                           f"{int(MAX_AGE.total_seconds())} s accepted: check the clocks")
