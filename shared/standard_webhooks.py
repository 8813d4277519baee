"""Standard Webhooks signatures (https://www.standardwebhooks.com/, spec 1.0.0, symmetric scheme).

A message is sent with three headers: `webhook-id` (the message's id, the same on every retry),
`webhook-timestamp` (unix seconds of the attempt) and `webhook-signature`: `v1,` + base64 of
HMAC-SHA256(key, "{id}.{timestamp}.{body}"), several of them space-separated while a secret is rotated (one
per key; a receiver accepts the message when any one matches). A secret is written `whsec_` + base64 of the
key's bytes (24 to 64 of them).

Errors here never carry a secret or a signature, only what is wrong with them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence

SECRET_PREFIX = "whsec_"
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64
TOLERANCE_S = 300          # how far the timestamp may be from the receiver's clock (the reference libraries')

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


class InvalidSignature(Exception):
    """A message whose headers are missing, malformed, too old or too new, or whose signature matches no key."""


def decode_secret(secret: str) -> bytes:
    """The key of a `whsec_<base64>` secret (unpadded base64 accepted). ValueError names what is wrong."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a secret starts with {SECRET_PREFIX!r} followed by base64")
    text = secret[len(SECRET_PREFIX):]
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the part after {SECRET_PREFIX!r} is not base64") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"a secret's key is {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes; this one has {len(key)}")
    return key


def encode_secret(key: bytes) -> str:
    """The `whsec_` form of a key (to hand to a receiver)."""
    return SECRET_PREFIX + base64.b64encode(key).decode()


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature, `v1,<base64>`. An id must not hold a `.` (the signed content is dot-delimited)."""
    if not msg_id or "." in msg_id:
        raise ValueError("a webhook id is not empty and holds no '.'")
    content = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def headers(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of one attempt, signed with every key (the newest first, by convention)."""
    if not keys:
        raise ValueError("at least one key signs a message")
    return {ID_HEADER: msg_id, TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: " ".join(sign(key, msg_id, timestamp, body) for key in keys)}


def verify(keys: Sequence[bytes], message_headers: Mapping[str, str], body: bytes, *, now: float,
           tolerance_s: float = TOLERANCE_S) -> str:
    """Check a received message (header names in any case) against the receiver's keys; its id when valid,
    else InvalidSignature. `body`: the raw bytes received, not re-serialized JSON."""
    lower = {name.lower(): value for name, value in message_headers.items()}
    msg_id, stamp, signatures = (lower.get(ID_HEADER), lower.get(TIMESTAMP_HEADER), lower.get(SIGNATURE_HEADER))
    if not msg_id or not stamp or not signatures:
        raise InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise InvalidSignature("webhook-timestamp is not unix seconds") from None
    if timestamp < now - tolerance_s:
        raise InvalidSignature("webhook-timestamp is too old")
    if timestamp > now + tolerance_s:
        raise InvalidSignature("webhook-timestamp is too new")
    if "." in msg_id:
        raise InvalidSignature("webhook-id holds a '.'")
    expected = [sign(key, msg_id, timestamp, body).encode() for key in keys]
    for candidate in signatures.split(" "):
        if not candidate.startswith("v1,"):
            continue  # another scheme (v1a: asymmetric), or the empty string between two spaces
        given = candidate.encode()
        if any(hmac.compare_digest(given, mine) for mine in expected):
            return msg_id
    raise InvalidSignature("no signature matches")
