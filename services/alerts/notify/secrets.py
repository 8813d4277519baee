"""Where channels look up the secrets that targets only name (`Target.url_ref`, `Target.secret_ref`)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import SecretStr

from services.alerts.domain.routing import SLACK_WEBHOOK_REF, WEBHOOK_SECRET_REF, RoutingTree
from shared.settings import Settings


class SecretLookup:
    """Literal values first (settings, `url:` entries of the routing file), then the environment.

    `repr` shows names only, so a lookup can sit in a log line or a traceback without leaking anything.
    """

    def __init__(self, values: Mapping[str, str | SecretStr | None] | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self._values = {k: v for k, v in (values or {}).items() if v is not None}
        self._environ = environ if environ is not None else {}

    @classmethod
    def from_settings(cls, settings: Settings, tree: RoutingTree | None = None,
                      environ: Mapping[str, str] | None = None) -> SecretLookup:
        values: dict[str, str | SecretStr | None] = {
            SLACK_WEBHOOK_REF: settings.slack_webhook_url,
            WEBHOOK_SECRET_REF: settings.webhook_secret,
        }
        if tree is not None:
            values.update(tree.literal_secrets)
        return cls(values, os.environ if environ is None else environ)

    def get(self, name: str | None) -> str | None:
        if not name:
            return None
        value = self._values.get(name)
        if isinstance(value, SecretStr):
            return value.get_secret_value() or None
        if value is not None:
            return value or None
        return self._environ.get(name) or None

    def __repr__(self) -> str:
        return f"SecretLookup(names={sorted(self._values)})"
