"""Concrete destinations: a receiver's channel configs resolved against one risk's account.

A `Target` never holds a secret. Webhook URLs and HMAC secrets are referenced by name (`url_ref`,
`secret_ref`: an environment variable name, or a synthetic name for a literal `url:` from the routing
file) and looked up by the channel at send time, so targets can be stored, logged and used as metric-free
dedup / rate-limit keys.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from shared.risks import RiskEvent

if TYPE_CHECKING:
    from services.alerts.domain.routing import RouteMatch

ChannelKind = Literal["slack_webhook", "slack_dm", "email", "webhook", "console"]
CHANNEL_KINDS: tuple[str, ...] = ("slack_webhook", "slack_dm", "email", "webhook", "console")
CSM = "csm"  # in `email.to`: the account's own CSM

# Addresses come from account events (user data): accept only plain, single-line values so that
# nothing can be smuggled into a mail header or a Slack API call.
_EMAIL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}"
                       r"@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_SLACK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def valid_email(address: str | None) -> bool:
    return bool(address) and len(address) <= 254 and _EMAIL_RE.match(address) is not None  # type: ignore[arg-type]


def valid_slack_id(user_id: str | None) -> bool:
    return bool(user_id) and _SLACK_ID_RE.match(user_id) is not None  # type: ignore[arg-type]


@dataclass(frozen=True)
class ChannelSpec:
    """One channel config of a receiver, as written in the routing file."""

    kind: ChannelKind
    name: str                         # stable, non-secret label (used in target keys)
    url_ref: str | None = None        # slack_webhook / webhook: name the URL is looked up under
    channel: str | None = None        # slack_webhook: channel label / override, e.g. "#cs-alerts"
    to: tuple[str, ...] = ()          # email: addresses, or "csm"
    secret_ref: str | None = None     # webhook: name the HMAC secret is looked up under


@dataclass(frozen=True)
class Target:
    """One concrete destination of one notification."""

    kind: ChannelKind
    address: str                      # webhook name, Slack user id, email address, webhook name, "outbox"
    receiver: str                     # the receiver (routing file) this target came from
    url_ref: str | None = None
    secret_ref: str | None = None
    channel: str | None = None

    @property
    def key(self) -> str:
        """Stable "kind:address" used for dedup and in logs (never a secret)."""
        return f"{self.kind}:{self.address}"

    @property
    def rate_key(self) -> str:
        """What Slack rate-limits: one incoming webhook URL, one DM channel, one address."""
        if self.kind == "slack_webhook" and self.url_ref:
            return f"slack_webhook:{self.url_ref}"
        return self.key

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "address": self.address, "receiver": self.receiver,
                "url_ref": self.url_ref, "secret_ref": self.secret_ref, "channel": self.channel}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Target:
        kind = data["kind"]
        if kind not in CHANNEL_KINDS:
            raise ValueError(f"unknown target kind {kind!r}")
        return cls(kind=kind, address=data["address"], receiver=data.get("receiver", ""),
                   url_ref=data.get("url_ref"), secret_ref=data.get("secret_ref"),
                   channel=data.get("channel"))


def resolve_targets(match: RouteMatch, risk: RiskEvent, *,
                    enabled: Collection[str] | None = None) -> list[Target]:
    """The receiver of `match` made concrete for `risk`'s account.

    "csm" resolves to the account's CSM (email / Slack user id); a CSM channel is skipped when the account
    has no such CSM address or the address is not well formed. `enabled` (channel kinds the deployment
    can deliver to; None = all) drops the rest, so a missing bot token never produces a doomed target.
    Targets are de-duplicated by key, in receiver order.
    """
    csm = risk.account.csm
    out: list[Target] = []
    seen: set[str] = set()

    def add(target: Target) -> None:
        if (enabled is None or target.kind in enabled) and target.key not in seen:
            seen.add(target.key)
            out.append(target)

    receiver = match.receiver
    for spec in receiver.channels:
        if spec.kind == "slack_dm":
            if csm is not None and valid_slack_id(csm.slack_user_id):
                add(Target(kind="slack_dm", address=csm.slack_user_id or "", receiver=receiver.name))
        elif spec.kind == "email":
            for to in spec.to:
                address = (csm.email if csm is not None else None) if to == CSM else to
                if address is not None and valid_email(address):
                    add(Target(kind="email", address=address, receiver=receiver.name))
        elif spec.kind == "slack_webhook":
            add(Target(kind="slack_webhook", address=spec.name, receiver=receiver.name, url_ref=spec.url_ref,
                       channel=spec.channel))
        elif spec.kind == "webhook":
            add(Target(kind="webhook", address=spec.name, receiver=receiver.name, url_ref=spec.url_ref,
                       secret_ref=spec.secret_ref))
        else:
            add(Target(kind="console", address=spec.name, receiver=receiver.name))
    return out
