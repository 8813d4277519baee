"""`CHURNSIGNAL_FEED_WEBHOOKS`: the health feed's subscribers, read from the environment and checked at start;
errors name the entry and the problem, never a URL or a secret."""

from __future__ import annotations

import base64
import json

import pytest

from services.alerts.bootstrap import create_app
from services.alerts.feed.config import default_name, feed_endpoints
from shared.bus.memory import MemoryBus
from shared.settings import Settings

KEY = b"k" * 32
SECRET = "whsec_" + base64.b64encode(KEY).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 24).decode()
URL = "https://crm.example.com/hooks/churn?token=url-token-9f8e7d"


def test_the_setting_is_one_secret_json_list(monkeypatch: pytest.MonkeyPatch):
    value = json.dumps([{"name": "crm", "url": URL, "secret": SECRET, "types": ["risk.*"]}])
    monkeypatch.setenv("CHURNSIGNAL_FEED_WEBHOOKS", value)
    settings = Settings()
    assert settings.feed_webhooks is not None and settings.feed_webhooks.get_secret_value() == value
    assert "url-token" not in repr(settings) and SECRET not in repr(settings)
    assert settings.feed_group_id == "churnsignal-feed"
    (crm,) = feed_endpoints(settings.feed_webhooks)
    assert crm.name == "crm" and crm.url == URL


def test_unset_or_empty_is_no_subscriber():
    assert feed_endpoints(None) == feed_endpoints("") == feed_endpoints("[]") == []


def test_endpoints_from_valid_entries():
    crm, tool = feed_endpoints(json.dumps([
        {"name": "crm", "url": URL, "secret": f"{SECRET} {OLD_SECRET}", "types": ["risk.*", "health.changed"]},
        {"url": "http://tool.internal:8080/feed", "secret": SECRET}]))
    assert crm.name == "crm" and crm.url == URL
    assert crm.keys == (KEY, b"o" * 24)              # rotation: both sign, the newest first
    assert crm.wants("risk.opened") and crm.wants("risk.resolved") and crm.wants("health.changed")
    assert tool.name == default_name("http://tool.internal:8080/feed") and tool.name.startswith("webhook-")
    assert tool.wants("health.changed") and tool.wants("risk.updated")  # no types: everything
    assert "url-token" not in repr(crm) and "kkkk" not in repr(crm)


def test_only_the_types_asked_for():
    (risks,) = feed_endpoints(json.dumps([{"name": "r", "url": URL, "secret": SECRET, "types": ["risk.opened"]}]))
    assert risks.wants("risk.opened")
    assert not risks.wants("risk.resolved") and not risks.wants("health.changed")


def test_every_problem_is_named_without_echoing_urls_or_secrets():
    short = "whsec_" + base64.b64encode(b"short-key").decode()
    with pytest.raises(ValueError) as caught:
        feed_endpoints(json.dumps([
            {"name": "crm", "url": "ftp://files.example.com/?token=url-token-1", "secret": "tok-not-whsec-42"},
            {"name": "crm", "url": URL, "secret": SECRET},
            {"name": "ops", "url": URL, "secret": short, "types": ["risk.escalated"]},
            {"url": "not a url token=url-token-2", "secret": SECRET, "secert": "whsec_misspelt-key-77"},
            {"name": "bad name!", "url": URL, "secret": f"{SECRET} tok-rotated-13"},
            "https://crm.example.com/?token=url-token-3",
            {"name": "nosecret", "url": URL}]))
    assert str(caught.value).splitlines() == [
        "CHURNSIGNAL_FEED_WEBHOOKS[0].url: not an absolute http:// or https:// URL with a host",
        "CHURNSIGNAL_FEED_WEBHOOKS[0].secret: a secret starts with 'whsec_' followed by base64",
        "CHURNSIGNAL_FEED_WEBHOOKS[2].secret: a secret's key is 24 to 64 bytes; this one has 9",
        "CHURNSIGNAL_FEED_WEBHOOKS[2].types: unknown type 'risk.escalated' (known: health.changed, risk.opened, "
        "risk.updated, risk.resolved, health.*, risk.*)",
        "CHURNSIGNAL_FEED_WEBHOOKS[3]: unknown key 'secert' (the keys are url, secret, name, types)",
        "CHURNSIGNAL_FEED_WEBHOOKS[3].url: not an absolute http:// or https:// URL with a host",
        "CHURNSIGNAL_FEED_WEBHOOKS[4].secret (secret 2 of 2): a secret starts with 'whsec_' followed by base64",
        "CHURNSIGNAL_FEED_WEBHOOKS[4].name: 1 to 64 letters, digits, '-' or '_'",
        "CHURNSIGNAL_FEED_WEBHOOKS[5]: not an object with url and secret",
        "CHURNSIGNAL_FEED_WEBHOOKS[6].secret: missing",
    ]
    text = str(caught.value)
    for secret in ("url-token", "tok-not-whsec-42", short, "misspelt-key", "tok-rotated-13", "kkkk"):
        assert secret not in text


def test_two_entries_may_not_share_a_name():
    with pytest.raises(ValueError, match=r"\[1\]\.name: 'crm' is already the name of entry 0"):
        feed_endpoints(json.dumps([{"name": "crm", "url": URL, "secret": SECRET},
                                   {"name": "crm", "url": URL + "2", "secret": SECRET}]))


def test_json_that_is_not_a_list_of_objects():
    with pytest.raises(ValueError, match=r"^CHURNSIGNAL_FEED_WEBHOOKS: not valid JSON \(Expecting") as caught:
        feed_endpoints('[{"url": "https://x.example/?token=url-token-4", ')
    assert "url-token" not in str(caught.value)
    with pytest.raises(ValueError, match="a JSON list of objects"):
        feed_endpoints(json.dumps({"url": URL, "secret": SECRET}))


def test_the_alerts_service_does_not_start_with_a_bad_subscriber(settings: Settings):
    bad = settings.model_copy(update={"feed_webhooks": json.dumps([{"url": URL, "secret": "tok-plain-31"}])})
    with pytest.raises(ValueError, match=r"FEED_WEBHOOKS\[0\]\.secret") as caught:
        create_app(bad, bus=MemoryBus(6))
    assert "tok-plain-31" not in str(caught.value) and "url-token" not in str(caught.value)
