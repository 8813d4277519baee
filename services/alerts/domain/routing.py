"""The route tree (docs/routing.md), in the spirit of Alertmanager's `dispatch/route.go`.

Routing file (`CHURNSIGNAL_ROUTING_FILE`)::

    receivers:
      - name: leadership
        slack_webhook: {url_env: SLACK_EXEC_WEBHOOK, channel: "#exec-alerts"}
        email: {to: [vp-cs@example.com]}
      - name: crm
        webhook: {url_env: CRM_HOOK_URL, secret_env: CRM_HOOK_SECRET}
    fallback_receiver: leadership        # optional: when a risk resolves to no target at all
    route:
      receiver: csm                      # built in: Slack DM to the account's CSM + email to the CSM
      group_wait: 30s                    # risks of one account opening this close go out as one message
      group_by: [account_id]             # the default: one message per target and account
      group_bypass: [critical]           # the default: critical risks never wait
      digest_only: {type: [health_drop], severity: [low]}   # the default: these wait for the daily digest
      repeat_interval: 24h
      send_resolved: false
      routes:
        - match: {type: champion_left, severity_at_least: high, segment: [enterprise], arr_min: 100000}
          receiver: leadership
          continue: true                 # keep looking at the next siblings too

A risk walks the tree from the root: children are tried in order; a matching child is descended into and,
unless it says `continue: true`, stops the search among its siblings. A route none of whose children match
is itself the match. Children inherit `receiver`, `group_wait`, `group_by`, `group_bypass`, `digest_only`,
`repeat_interval` and `send_resolved` from their parent. A receiver may set `digest: {at: "08:30",
timezone: Europe/Berlin}`: when its targets get their daily digest (default 09:00 UTC).

Secrets (webhook URLs, HMAC secrets) are named by environment variable (`url_env`, `secret_env`); a
literal `url:` is kept out of every target and log (see `literal_secrets`).

This module is the tree and its matching; reading and validating the file is `routing_config`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from services.alerts.domain.daily import DigestSchedule, DigestSelection
from services.alerts.domain.digest import DEFAULT_GROUP_BY, DEFAULT_GROUP_BYPASS
from services.alerts.domain.targets import CSM, ChannelSpec, Target, resolve_targets, valid_email
from shared.risks import SEVERITY_RANK, RiskEvent

DEFAULT_GROUP_WAIT = timedelta(seconds=30)
DEFAULT_REPEAT_INTERVAL = timedelta(hours=24)
CSM_RECEIVER = "csm"
FALLBACK_RECEIVER = "fallback"
WEBHOOK_SECRET_REF = "CHURNSIGNAL_WEBHOOK_SECRET"      # settings.webhook_secret when `secret_env` is absent
SLACK_WEBHOOK_REF = "CHURNSIGNAL_SLACK_WEBHOOK_URL"    # settings.slack_webhook_url (fallback receiver)



@dataclass(frozen=True)
class ReceiverSpec:
    name: str
    channels: tuple[ChannelSpec, ...]
    digest: DigestSchedule | None = None      # None: the deployment's default (09:00 UTC)


@dataclass(frozen=True)
class Matchers:
    """All given matchers must hold; an absent matcher matches everything."""

    types: frozenset[str] | None = None
    severities: frozenset[str] | None = None
    severity_at_least: str | None = None
    segments: frozenset[str] | None = None     # compared case-insensitively
    arr_min: float | None = None               # arr_min <= arr
    arr_max: float | None = None               # arr < arr_max
    has_csm: bool | None = None                # the account has a CSM with an email or Slack user id

    def matches(self, risk: RiskEvent) -> bool:
        if self.types is not None and risk.type not in self.types:
            return False
        if self.severities is not None and risk.severity not in self.severities:
            return False
        if self.severity_at_least is not None and \
                SEVERITY_RANK[risk.severity] < SEVERITY_RANK[self.severity_at_least]:
            return False
        if self.segments is not None:
            segment = risk.account.segment
            if segment is None or segment.casefold() not in self.segments:
                return False
        if self.arr_min is not None or self.arr_max is not None:
            arr = risk.account.arr
            if arr is None:
                return False
            if self.arr_min is not None and arr < self.arr_min:
                return False
            if self.arr_max is not None and arr >= self.arr_max:
                return False
        if self.has_csm is not None:
            csm = risk.account.csm
            known = csm is not None and bool(csm.email or csm.slack_user_id)
            if known != self.has_csm:
                return False
        return True


@dataclass(frozen=True)
class Route:
    """One node; settings are already resolved (inherited from the parent when not set)."""

    receiver: str
    matchers: Matchers = field(default_factory=Matchers)
    continue_: bool = False
    group_wait: timedelta = DEFAULT_GROUP_WAIT
    group_by: tuple[str, ...] = DEFAULT_GROUP_BY
    repeat_interval: timedelta = DEFAULT_REPEAT_INTERVAL
    send_resolved: bool = False
    routes: tuple[Route, ...] = ()
    path: str = "route"
    group_bypass: frozenset[str] = DEFAULT_GROUP_BYPASS
    digest_only: DigestSelection = DigestSelection()


@dataclass(frozen=True)
class RouteMatch:
    receiver: ReceiverSpec
    group_wait: timedelta
    repeat_interval: timedelta
    send_resolved: bool
    group_by: tuple[str, ...] = DEFAULT_GROUP_BY
    route_path: str = "route"
    group_bypass: frozenset[str] = DEFAULT_GROUP_BYPASS
    digest_only: DigestSelection = DigestSelection()


@dataclass(frozen=True)
class RoutedTarget:
    """One destination of one risk, with the settings of the route that chose it."""

    match: RouteMatch
    target: Target


def csm_receiver(name: str = CSM_RECEIVER) -> ReceiverSpec:
    """The account's own CSM: Slack DM when the Slack user id is known, email when the email is known."""
    return ReceiverSpec(name=name, channels=(ChannelSpec(kind="slack_dm", name="csm"),
                                             ChannelSpec(kind="email", name="csm", to=(CSM,))))


def fallback_receiver(email: str | None, slack_webhook_ref: str | None = None) -> ReceiverSpec | None:
    """The receiver for accounts without a CSM: an email address and/or a Slack incoming webhook
    (its URL looked up under `slack_webhook_ref`, e.g. `SLACK_WEBHOOK_REF`). None when neither is set."""
    channels: list[ChannelSpec] = []
    if slack_webhook_ref:
        channels.append(ChannelSpec(kind="slack_webhook", name=FALLBACK_RECEIVER, url_ref=slack_webhook_ref))
    if email:
        if not valid_email(email):
            raise ValueError("fallback email: not a valid address")
        channels.append(ChannelSpec(kind="email", name=FALLBACK_RECEIVER, to=(email,)))
    return ReceiverSpec(name=FALLBACK_RECEIVER, channels=tuple(channels)) if channels else None


@dataclass(frozen=True)
class RoutingTree:
    root: Route
    receivers: Mapping[str, ReceiverSpec]
    fallback_receiver: str | None = None
    # Literal `url:` values from the file, by the synthetic reference their targets carry.
    literal_secrets: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def default(cls, fallback: ReceiverSpec | None) -> RoutingTree:
        """No routing file: every risk to the account's CSM; to `fallback` when that resolves to nobody."""
        receivers = {CSM_RECEIVER: csm_receiver()}
        if fallback is not None:
            receivers[fallback.name] = fallback
        return cls(root=Route(receiver=CSM_RECEIVER), receivers=receivers,
                   fallback_receiver=fallback.name if fallback is not None else None)

    @classmethod
    def from_yaml(cls, text: str, *, fallback: ReceiverSpec | None = None) -> RoutingTree:
        """Parse a routing file (`routing_config.parse_routing`). Raises ValueError naming the bad key (and
        its line)."""
        # Imported here: the parser builds this module's types, so it imports this module.
        from services.alerts.domain.routing_config import parse_routing

        return parse_routing(text, fallback=fallback)

    def route(self, risk: RiskEvent) -> list[RouteMatch]:
        return [self._as_match(node) for node in _walk(self.root, risk)]

    def route_targets(self, risk: RiskEvent, *, enabled: Collection[str] | None = None) -> list[RoutedTarget]:
        """Every distinct target of `risk` (first route wins for a target reached twice); the fallback
        receiver's targets when no route yields any."""
        out: list[RoutedTarget] = []
        seen: set[str] = set()
        for match in self.route(risk):
            for target in resolve_targets(match, risk, enabled=enabled):
                if target.key not in seen:
                    seen.add(target.key)
                    out.append(RoutedTarget(match, target))
        if not out and self.fallback_receiver is not None:
            match = RouteMatch(receiver=self.receivers[self.fallback_receiver],
                               group_wait=self.root.group_wait, repeat_interval=self.root.repeat_interval,
                               send_resolved=self.root.send_resolved, group_by=self.root.group_by,
                               route_path="fallback_receiver", group_bypass=self.root.group_bypass,
                               digest_only=self.root.digest_only)
            out = [RoutedTarget(match, t) for t in resolve_targets(match, risk, enabled=enabled)]
        return out

    def _as_match(self, node: Route) -> RouteMatch:
        return RouteMatch(receiver=self.receivers[node.receiver], group_wait=node.group_wait,
                          repeat_interval=node.repeat_interval, send_resolved=node.send_resolved,
                          group_by=node.group_by, route_path=node.path, group_bypass=node.group_bypass,
                          digest_only=node.digest_only)

    def schedules(self) -> dict[str, DigestSchedule]:
        """The daily digest schedule of every receiver that sets one."""
        return {name: r.digest for name, r in self.receivers.items() if r.digest is not None}


def _walk(node: Route, risk: RiskEvent) -> list[Route]:
    if not node.matchers.matches(risk):
        return []
    found: list[Route] = []
    for child in node.routes:
        matched = _walk(child, risk)
        found.extend(matched)
        if matched and not child.continue_:
            break
    return found or [node]
