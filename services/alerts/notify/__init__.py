"""Notification channels behind one `Channel` protocol, and the `Deliverer` (retry, rate limit, record).

Channels depend on the domain (`Notification`, `Target`); the domain never imports them.

`Deliverer.deliver(n)` returns the final outcome string ("sent" | "dead_letter" | "failed");
`deliver_detailed(n)` returns a `DeliveryResult` (outcome, attempts, last error and its code). The
`on_attempt(notification, attempt_no, outcome, error, duration_s)` callback (sync or async) sees every attempt
with outcome "sent" | "retry" | "dead_letter" | "failed"; the last attempt's outcome is the final one.
Channels resolve secrets through a `SecretLookup` (targets only name them).
"""

from services.alerts.notify.channel import Channel, parse_retry_after
from services.alerts.notify.console import ConsoleChannel
from services.alerts.notify.delivery import Deliverer, DeliveryResult, RateLimiter
from services.alerts.notify.email import EmailChannel
from services.alerts.notify.secrets import SecretLookup
from services.alerts.notify.slack_api import SlackApiChannel
from services.alerts.notify.slack_webhook import SlackWebhookChannel
from services.alerts.notify.webhook import WebhookChannel

__all__ = ["Channel", "ConsoleChannel", "Deliverer", "DeliveryResult", "EmailChannel", "RateLimiter",
           "SecretLookup", "SlackApiChannel", "SlackWebhookChannel", "WebhookChannel", "parse_retry_after"]
