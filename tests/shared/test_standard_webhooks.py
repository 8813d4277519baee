"""Standard Webhooks signing and verification (shared/standard_webhooks.py).

The published vector is the one of the specification's reference libraries
(github.com/standard-webhooks/standard-webhooks, libraries/python/tests/test_webhooks.py, `test_sign_function`):
secret `whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw`, id `msg_p5jXN8AQM9LWM0D4loKWxJek`, timestamp 1614265330, body
`{"test": 2432232314}`, signature `v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=`.
"""

from __future__ import annotations

import base64
import os

import pytest

from shared import standard_webhooks as sw

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_published_vector():
    key = sw.decode_secret(SECRET)
    assert sw.sign(key, MSG_ID, TIMESTAMP, BODY) == SIGNATURE
    assert sw.headers([key], MSG_ID, TIMESTAMP, BODY) == {
        "webhook-id": MSG_ID, "webhook-timestamp": "1614265330", "webhook-signature": SIGNATURE}
    assert sw.verify([key], {"webhook-id": MSG_ID, "webhook-timestamp": str(TIMESTAMP),
                             "webhook-signature": SIGNATURE}, BODY, now=TIMESTAMP + 10) == MSG_ID


def test_a_signature_changed_in_its_last_bit_is_refused():
    # The reference libraries' `test_invalid_signature_raises_error`: the vector with its last character changed.
    key = sw.decode_secret(SECRET)
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(TIMESTAMP),
               "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="}
    with pytest.raises(sw.InvalidSignature):
        sw.verify([key], headers, BODY, now=TIMESTAMP)


def _signed(keys: list[bytes], body: bytes = b'{"type":"health.changed"}', msg_id: str = "hc_1",
            at: int = 1_700_000_000) -> dict[str, str]:
    return sw.headers(keys, msg_id, at, body)


def test_round_trip_with_random_keys_and_header_names_in_any_case():
    key = os.urandom(32)
    body = b'{"account_id":"acme","health":{"score":61.5}}'
    headers = {name.upper(): value for name, value in _signed([key], body).items()}
    assert sw.verify([key], headers, body, now=1_700_000_000) == "hc_1"


@pytest.mark.parametrize("change", ["body", "timestamp", "id"])
def test_tampering_with_the_body_the_timestamp_or_the_id_is_refused(change: str):
    key = os.urandom(32)
    body = b'{"score":61.5}'
    headers = _signed([key], body)
    if change == "body":
        body = b'{"score":91.5}'
    elif change == "timestamp":
        headers["webhook-timestamp"] = str(1_700_000_001)
    else:
        headers["webhook-id"] = "hc_2"
    with pytest.raises(sw.InvalidSignature, match="no signature matches"):
        sw.verify([key], headers, body, now=1_700_000_000)


def test_another_key_is_refused():
    headers = _signed([os.urandom(32)])
    with pytest.raises(sw.InvalidSignature):
        sw.verify([os.urandom(32)], headers, b'{"type":"health.changed"}', now=1_700_000_000)


def test_timestamps_outside_five_minutes_are_refused():
    key = os.urandom(32)
    headers = _signed([key], at=1_700_000_000)
    body = b'{"type":"health.changed"}'
    assert sw.verify([key], headers, body, now=1_700_000_000 + 300)
    with pytest.raises(sw.InvalidSignature, match="too old"):
        sw.verify([key], headers, body, now=1_700_000_000 + 301)
    with pytest.raises(sw.InvalidSignature, match="too new"):
        sw.verify([key], headers, body, now=1_700_000_000 - 301)


def test_missing_or_malformed_headers_are_refused():
    key = os.urandom(32)
    body = b"{}"
    for missing in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        headers = _signed([key], body)
        del headers[missing]
        with pytest.raises(sw.InvalidSignature, match="missing"):
            sw.verify([key], headers, body, now=1_700_000_000)
    headers = _signed([key], body)
    headers["webhook-timestamp"] = "yesterday"
    with pytest.raises(sw.InvalidSignature, match="unix seconds"):
        sw.verify([key], headers, body, now=1_700_000_000)


def test_rotation_signs_with_every_key_and_either_one_verifies():
    new, old = os.urandom(32), os.urandom(24)
    body = b'{"type":"risk.opened"}'
    headers = _signed([new, old], body)
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    assert sw.verify([new], headers, body, now=1_700_000_000)
    assert sw.verify([old], headers, body, now=1_700_000_000)
    # Other schemes in the list (v1a: asymmetric) are skipped, not an error.
    headers["webhook-signature"] = "v1a,AAAA " + headers["webhook-signature"]
    assert sw.verify([old], headers, body, now=1_700_000_000)


def test_secrets_must_be_whsec_base64_of_24_to_64_bytes_and_errors_do_not_echo_them():
    assert sw.decode_secret(sw.encode_secret(b"k" * 64)) == b"k" * 64
    unpadded = "whsec_" + base64.b64encode(b"x" * 25).decode().rstrip("=")
    assert sw.decode_secret(unpadded) == b"x" * 25
    bad = {
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw": "starts with 'whsec_'",
        "whsec_not*base64!": "not base64",
        sw.encode_secret(b"short"): "24 to 64 bytes; this one has 5",
        sw.encode_secret(b"k" * 65): "24 to 64 bytes; this one has 65",
    }
    for secret, message in bad.items():
        with pytest.raises(ValueError, match=message) as caught:
            sw.decode_secret(secret)
        assert secret.removeprefix("whsec_") not in str(caught.value)


def test_an_id_holding_a_dot_cannot_be_signed():
    with pytest.raises(ValueError):
        sw.sign(os.urandom(32), "a.b", 1, b"{}")
