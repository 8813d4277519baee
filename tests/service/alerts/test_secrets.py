from __future__ import annotations

from pydantic import SecretStr

from services.alerts.domain.routing import SLACK_WEBHOOK_REF, WEBHOOK_SECRET_REF, RoutingTree
from services.alerts.notify.secrets import SecretLookup
from shared.settings import Settings


def test_lookup_order_and_repr_without_values() -> None:
    tree = RoutingTree.from_yaml("receivers: [{name: h, webhook: {url: 'https://crm.example/x?k=lit'}}]\n"
                                 "route: {receiver: h}")
    settings = Settings(slack_webhook_url=SecretStr("https://hooks.example/services/T/B/settings-secret"),
                        webhook_secret=SecretStr("hmac-from-settings"))
    lookup = SecretLookup.from_settings(settings, tree, environ={"CRM_URL": "https://crm.example/env",
                                                                 WEBHOOK_SECRET_REF: "ignored-env"})
    assert lookup.get(SLACK_WEBHOOK_REF) == "https://hooks.example/services/T/B/settings-secret"
    assert lookup.get(WEBHOOK_SECRET_REF) == "hmac-from-settings"
    assert lookup.get("routing:receivers[0].webhook.url") == "https://crm.example/x?k=lit"
    assert lookup.get("CRM_URL") == "https://crm.example/env"
    assert lookup.get("MISSING") is None and lookup.get(None) is None
    assert "settings-secret" not in repr(lookup) and "k=lit" not in repr(lookup)


def test_unset_settings_secrets_fall_through_to_the_environment() -> None:
    lookup = SecretLookup.from_settings(Settings(), environ={SLACK_WEBHOOK_REF: "https://hooks.example/env"})
    assert lookup.get(SLACK_WEBHOOK_REF) == "https://hooks.example/env"
