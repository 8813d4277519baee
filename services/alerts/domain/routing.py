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
      group_wait: 30s                    # low-severity risks wait this long to be grouped in a digest
      group_by: [type]                   # optional: one digest per target and risk type
      repeat_interval: 24h
      send_resolved: false
      routes:
        - match: {type: champion_left, severity_at_least: high, segment: [enterprise], arr_min: 100000}
          receiver: leadership
          continue: true                 # keep looking at the next siblings too

A risk walks the tree from the root: children are tried in order; a matching child is descended into and,
unless it says `continue: true`, stops the search among its siblings. A route none of whose children match
is itself the match. Children inherit `receiver`, `group_wait`, `group_by`, `repeat_interval` and
`send_resolved` from their parent. Secrets (webhook URLs, HMAC secrets) are named by environment variable
(`url_env`, `secret_env`); a literal `url:` is kept out of every target and log (see `literal_secrets`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import yaml

from services.alerts.domain.targets import (
    CHANNEL_KINDS,
    CSM,
    ChannelSpec,
    Target,
    resolve_targets,
    valid_email,
)
from shared.risks import RISK_TYPES, SEVERITIES, SEVERITY_RANK, RiskEvent

DEFAULT_GROUP_WAIT = timedelta(seconds=30)
DEFAULT_REPEAT_INTERVAL = timedelta(hours=24)
CSM_RECEIVER = "csm"
FALLBACK_RECEIVER = "fallback"
WEBHOOK_SECRET_REF = "CHURNSIGNAL_WEBHOOK_SECRET"      # settings.webhook_secret when `secret_env` is absent
SLACK_WEBHOOK_REF = "CHURNSIGNAL_SLACK_WEBHOOK_URL"    # settings.slack_webhook_url (fallback receiver)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_LABEL = re.compile(r"^[A-Za-z0-9#@][A-Za-z0-9 #._@/-]{0,79}$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class ReceiverSpec:
    name: str
    channels: tuple[ChannelSpec, ...]


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
    group_by: tuple[str, ...] = ()
    repeat_interval: timedelta = DEFAULT_REPEAT_INTERVAL
    send_resolved: bool = False
    routes: tuple[Route, ...] = ()
    path: str = "route"


@dataclass(frozen=True)
class RouteMatch:
    receiver: ReceiverSpec
    group_wait: timedelta
    repeat_interval: timedelta
    send_resolved: bool
    group_by: tuple[str, ...] = ()
    route_path: str = "route"


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
        """Parse a routing file. Raises ValueError naming the bad key (and its line)."""
        return _Parser(fallback).parse(text)

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
                               route_path="fallback_receiver")
            out = [RoutedTarget(match, t) for t in resolve_targets(match, risk, enabled=enabled)]
        return out

    def _as_match(self, node: Route) -> RouteMatch:
        return RouteMatch(receiver=self.receivers[node.receiver], group_wait=node.group_wait,
                          repeat_interval=node.repeat_interval, send_resolved=node.send_resolved,
                          group_by=node.group_by, route_path=node.path)


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


def parse_duration(value: Any) -> timedelta:
    """`30s`, `5m`, `24h`, `1d`, `1h30m`, `500ms`, or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m, 24h")
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise ValueError("must be a non-negative duration")
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError("expected a duration like 30s, 5m, 24h")
    text = value.strip().lower()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(f"{value!r} is not a duration like 30s, 5m, 24h, 1h30m")
    return timedelta(seconds=total)


# --- parsing ---------------------------------------------------------------------------------------------

class _LineDict(dict):
    """A YAML mapping that remembers the line of each key (for error messages)."""

    lines: dict[Any, int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    out = _LineDict()
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            raise ValueError(f"routing file: line {line}: keys must be strings")
        if key in out:
            raise ValueError(f"routing file: line {line}: duplicate key {key!r}")
        out[key] = loader.construct_object(value_node, deep=True)  # type: ignore[no-untyped-call]
        out.lines[key] = line
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

_ROUTE_KEYS = {"receiver", "match", "continue", "group_wait", "group_by", "repeat_interval", "send_resolved",
               "routes"}
_MATCH_KEYS = {"type", "severity", "severity_at_least", "segment", "arr_min", "arr_max", "has_csm"}
_CHANNEL_KEYS = {
    "slack_webhook": {"name", "url_env", "url", "channel"},
    "slack_dm": set(),
    "email": {"name", "to"},
    "webhook": {"name", "url_env", "url", "secret_env"},
    "console": {"name"},
}
_GROUP_BY = {"account_id", "csm", "type", "severity", "segment"}


class _Parser:
    def __init__(self, fallback: ReceiverSpec | None) -> None:
        self.fallback = fallback
        self.literal_secrets: dict[str, str] = {}

    @staticmethod
    def fail(path: str, message: str, parent: Any = None, key: str | None = None) -> ValueError:
        line = ""
        if isinstance(parent, _LineDict) and key is not None and key in parent.lines:
            line = f" (line {parent.lines[key]})"
        return ValueError(f"routing file: {path}{line}: {message}")

    def parse(self, text: str) -> RoutingTree:
        try:
            doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown place"
            raise ValueError(f"routing file: invalid YAML at {where}: {exc.problem}") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"routing file: invalid YAML: {type(exc).__name__}") from None
        if not isinstance(doc, dict):
            raise ValueError("routing file: expected a mapping with `route` (and `receivers`) at the top")
        self._no_unknown(doc, {"receivers", "route", "fallback_receiver"}, "")
        receivers = self._receivers(doc.get("receivers", []), doc)
        if "route" not in doc:
            raise ValueError("routing file: route: missing (the root route)")
        raw_root = doc["route"]
        if not isinstance(raw_root, dict):
            raise self.fail("route", "must be a mapping", doc, "route")
        if "match" in raw_root:
            raise self.fail("route.match", "the root route matches every risk; put matchers on child routes",
                            raw_root, "match")
        if "continue" in raw_root:
            raise self.fail("route.continue", "not allowed on the root route", raw_root, "continue")
        if "receiver" not in raw_root:
            raise self.fail("route.receiver", "missing: the root route needs a receiver", doc, "route")
        base = Route(receiver=CSM_RECEIVER)
        root = self._route(raw_root, "route", base, receivers)
        fallback_name = doc.get("fallback_receiver")
        if fallback_name is None and self.fallback is not None:
            fallback_name = self.fallback.name
        if fallback_name is not None:
            if not isinstance(fallback_name, str) or fallback_name not in receivers:
                raise self.fail("fallback_receiver", f"unknown receiver {fallback_name!r}", doc,
                                "fallback_receiver")
        return RoutingTree(root=root, receivers=receivers, fallback_receiver=fallback_name,
                           literal_secrets=dict(self.literal_secrets))

    def _no_unknown(self, raw: dict, allowed: set[str], path: str) -> None:
        for key in raw:
            if key not in allowed:
                where = f"{path}.{key}" if path else key
                expected = ", ".join(sorted(allowed))
                raise self.fail(where, f"unknown key (expected one of {expected})", raw, key)

    # receivers

    def _receivers(self, raw: Any, doc: dict) -> dict[str, ReceiverSpec]:
        if not isinstance(raw, list):
            raise self.fail("receivers", "must be a list of receivers", doc, "receivers")
        out: dict[str, ReceiverSpec] = {}
        for i, item in enumerate(raw):
            path = f"receivers[{i}]"
            if not isinstance(item, dict):
                raise self.fail(path, "must be a mapping with a `name` and channel configs")
            self._no_unknown(item, {"name", *_CHANNEL_KEYS}, path)
            name = item.get("name")
            if not isinstance(name, str) or not _LABEL.match(name):
                raise self.fail(f"{path}.name", "missing or not a simple name", item, "name")
            if name in out:
                raise self.fail(f"{path}.name", f"duplicate receiver {name!r}", item, "name")
            channels: list[ChannelSpec] = []
            for kind in CHANNEL_KINDS:
                if kind not in item:
                    continue
                configs = item[kind]
                if configs is None or isinstance(configs, dict):
                    configs = [configs or {}]
                if not isinstance(configs, list) or not configs:
                    raise self.fail(f"{path}.{kind}", "must be a mapping or a list of mappings", item, kind)
                for j, cfg in enumerate(configs):
                    cpath = f"{path}.{kind}[{j}]" if len(configs) > 1 else f"{path}.{kind}"
                    default_name = name if len(configs) == 1 else f"{name}-{j + 1}"
                    channels.append(self._channel(kind, cfg, cpath, default_name))
            if not channels:
                raise self.fail(path, f"receiver {name!r} has no channel (one of {', '.join(CHANNEL_KINDS)})",
                                item, "name")
            names = [(c.kind, c.name) for c in channels]
            if len(set(names)) != len(names):
                raise self.fail(path, "two channel configs of the same kind share a `name`", item, "name")
            out[name] = ReceiverSpec(name=name, channels=tuple(channels))
        out.setdefault(CSM_RECEIVER, csm_receiver())
        if self.fallback is not None:
            out.setdefault(self.fallback.name, self.fallback)
        return out

    def _channel(self, kind: str, cfg: Any, path: str, default_name: str) -> ChannelSpec:
        if not isinstance(cfg, dict):
            raise self.fail(path, "must be a mapping")
        self._no_unknown(cfg, _CHANNEL_KEYS[kind], path)
        name = cfg.get("name", default_name)
        if not isinstance(name, str) or not _LABEL.match(name):
            raise self.fail(f"{path}.name", "not a simple name", cfg, "name")
        if kind == "slack_dm":
            return ChannelSpec(kind="slack_dm", name="csm")
        if kind == "console":
            return ChannelSpec(kind="console", name=name)
        if kind == "email":
            to = cfg.get("to")
            if to is None:
                raise self.fail(f"{path}.to", "missing: a list of addresses, or `csm`", cfg)
            items = [to] if isinstance(to, str) else to
            if not isinstance(items, list) or not items:
                raise self.fail(f"{path}.to", "must be an address, `csm`, or a list of them", cfg, "to")
            for address in items:
                if not isinstance(address, str) or (address != CSM and not valid_email(address)):
                    raise self.fail(f"{path}.to", f"{address!r} is not an email address or `csm`", cfg, "to")
            return ChannelSpec(kind="email", name=name, to=tuple(dict.fromkeys(items)))
        url_ref = self._url_ref(cfg, path)
        if kind == "slack_webhook":
            channel = cfg.get("channel")
            if channel is not None and (not isinstance(channel, str) or not _LABEL.match(channel)):
                raise self.fail(f"{path}.channel", "must be a channel name like #cs-alerts", cfg, "channel")
            return ChannelSpec(kind="slack_webhook", name=name, url_ref=url_ref, channel=channel)
        secret_env = cfg.get("secret_env", WEBHOOK_SECRET_REF)
        if not isinstance(secret_env, str) or not _ENV_NAME.match(secret_env):
            raise self.fail(f"{path}.secret_env", "must be an environment variable name", cfg, "secret_env")
        return ChannelSpec(kind="webhook", name=name, url_ref=url_ref, secret_ref=secret_env)

    def _url_ref(self, cfg: dict, path: str) -> str:
        if ("url_env" in cfg) == ("url" in cfg):
            raise self.fail(path, "exactly one of `url_env` (recommended: the URL is a secret) or `url`", cfg)
        if "url_env" in cfg:
            env = cfg["url_env"]
            if not isinstance(env, str) or not _ENV_NAME.match(env):
                raise self.fail(f"{path}.url_env", "must be an environment variable name", cfg, "url_env")
            return env
        url = cfg["url"]
        # Never echo the value: it may be a secret webhook URL.
        if not isinstance(url, str) or not re.match(r"^https?://[^\s]+$", url):
            raise self.fail(f"{path}.url", "must be an http(s) URL", cfg, "url")
        ref = f"routing:{path}.url"
        self.literal_secrets[ref] = url
        return ref

    # routes

    def _route(self, raw: Any, path: str, parent: Route, receivers: dict[str, ReceiverSpec]) -> Route:
        if not isinstance(raw, dict):
            raise self.fail(path, "must be a mapping")
        self._no_unknown(raw, _ROUTE_KEYS, path)
        receiver = raw.get("receiver", parent.receiver)
        if not isinstance(receiver, str) or receiver not in receivers:
            raise self.fail(f"{path}.receiver", f"unknown receiver {receiver!r} (defined: "
                            f"{', '.join(sorted(receivers))})", raw, "receiver")
        cont = raw.get("continue", False)
        if not isinstance(cont, bool):
            raise self.fail(f"{path}.continue", "must be true or false", raw, "continue")
        send_resolved = raw.get("send_resolved", parent.send_resolved)
        if not isinstance(send_resolved, bool):
            raise self.fail(f"{path}.send_resolved", "must be true or false", raw, "send_resolved")
        group_wait = self._duration(raw, "group_wait", path, parent.group_wait)
        repeat = self._duration(raw, "repeat_interval", path, parent.repeat_interval)
        if repeat <= timedelta(0):
            raise self.fail(f"{path}.repeat_interval", "must be greater than 0", raw, "repeat_interval")
        group_by = raw.get("group_by", list(parent.group_by))
        if not isinstance(group_by, list) or any(g not in _GROUP_BY for g in group_by):
            raise self.fail(f"{path}.group_by", f"must be a list of {', '.join(sorted(_GROUP_BY))}", raw,
                            "group_by")
        matchers = self._matchers(raw["match"], f"{path}.match", raw) if "match" in raw else Matchers()
        node = Route(receiver=receiver, matchers=matchers, continue_=cont, group_wait=group_wait,
                     group_by=tuple(group_by), repeat_interval=repeat, send_resolved=send_resolved, path=path)
        children = raw.get("routes", [])
        if not isinstance(children, list):
            raise self.fail(f"{path}.routes", "must be a list of routes", raw, "routes")
        kids = tuple(self._route(child, f"{path}.routes[{i}]", node, receivers)
                     for i, child in enumerate(children))
        return Route(receiver=node.receiver, matchers=node.matchers, continue_=node.continue_,
                     group_wait=node.group_wait, group_by=node.group_by, repeat_interval=node.repeat_interval,
                     send_resolved=node.send_resolved, routes=kids, path=path)

    def _duration(self, raw: dict, key: str, path: str, default: timedelta) -> timedelta:
        if key not in raw:
            return default
        try:
            return parse_duration(raw[key])
        except ValueError as exc:
            raise self.fail(f"{path}.{key}", str(exc), raw, key) from None

    def _matchers(self, raw: Any, path: str, route: dict) -> Matchers:
        if not isinstance(raw, dict) or not raw:
            raise self.fail(path, f"must be a mapping of {', '.join(sorted(_MATCH_KEYS))}", route, "match")
        self._no_unknown(raw, _MATCH_KEYS, path)
        types = self._choices(raw, "type", path, RISK_TYPES)
        severities = self._choices(raw, "severity", path, SEVERITIES)
        at_least = raw.get("severity_at_least")
        if at_least is not None and at_least not in SEVERITIES:
            raise self.fail(f"{path}.severity_at_least", f"unknown severity {at_least!r} (expected one of "
                            f"{', '.join(SEVERITIES)})", raw, "severity_at_least")
        segments = None
        if "segment" in raw:
            seg = raw["segment"]
            items = [seg] if isinstance(seg, str) else seg
            if not isinstance(items, list) or not items or not all(isinstance(s, str) for s in items):
                raise self.fail(f"{path}.segment", "must be a segment name or a list of them", raw, "segment")
            segments = frozenset(s.casefold() for s in items)
        arr_min = self._number(raw, "arr_min", path)
        arr_max = self._number(raw, "arr_max", path)
        if arr_min is not None and arr_max is not None and arr_min >= arr_max:
            raise self.fail(f"{path}.arr_max", "must be greater than arr_min", raw, "arr_max")
        has_csm = raw.get("has_csm")
        if has_csm is not None and not isinstance(has_csm, bool):
            raise self.fail(f"{path}.has_csm", "must be true or false", raw, "has_csm")
        return Matchers(types=types, severities=severities, severity_at_least=at_least, segments=segments,
                        arr_min=arr_min, arr_max=arr_max, has_csm=has_csm)

    def _choices(self, raw: dict, key: str, path: str, allowed: tuple[str, ...]) -> frozenset[str] | None:
        if key not in raw:
            return None
        value = raw[key]
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            expected = ", ".join(allowed)
            raise self.fail(f"{path}.{key}", f"must be one of {expected} or a list of them", raw, key)
        for item in items:
            if item not in allowed:
                raise self.fail(f"{path}.{key}", f"unknown {key} {item!r} (expected one of "
                                f"{', '.join(allowed)})", raw, key)
        return frozenset(items)

    def _number(self, raw: dict, key: str, path: str) -> float | None:
        if key not in raw:
            return None
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 \
                or not math.isfinite(value):
            raise self.fail(f"{path}.{key}", "must be a number >= 0", raw, key)
        return float(value)
