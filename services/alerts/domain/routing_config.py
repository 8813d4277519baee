"""Reading a routing file (docs/routing.md, docs/routing.schema.json) into a `RoutingTree`: YAML with the
line of every key, validation of every key and value, and error messages naming the bad key and its line.

Kept apart from the tree (`routing`) so that matching a risk never depends on how the tree was written
down: `RoutingTree.default` and tests build trees without a file. The key sets here are the schema's
(tests/domain/alerts/test_routing_schema.py holds the two equal).
"""

from __future__ import annotations

import math
import re
from datetime import time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from services.alerts.domain.daily import DigestSchedule, DigestSelection
from services.alerts.domain.routing import (
    CSM_RECEIVER,
    WEBHOOK_SECRET_REF,
    Matchers,
    ReceiverSpec,
    Route,
    RoutingTree,
    csm_receiver,
)
from services.alerts.domain.targets import CHANNEL_KINDS, CSM, ChannelSpec, valid_email
from shared.risks import RISK_TYPES, SEVERITIES

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_LABEL = re.compile(r"^[A-Za-z0-9#@][A-Za-z0-9 #._@/-]{0,79}$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_routing(text: str, *, fallback: ReceiverSpec | None = None) -> RoutingTree:
    """Parse a routing file; `fallback` is the configured receiver for risks that resolve to nobody.
    Raises ValueError naming the bad key (and its line)."""
    return _Parser(fallback).parse(text)


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



# --- YAML with key lines ---------------------------------------------------------------------------------------------

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

_ROUTE_KEYS = {"receiver", "match", "continue", "group_wait", "group_by", "group_bypass", "digest_only",
               "repeat_interval", "send_resolved", "routes"}
_RECEIVER_KEYS = {"name", "digest"}      # besides the channel keys
_DIGEST_KEYS = {"at", "timezone"}
_DIGEST_ONLY_KEYS = {"type", "severity"}
_AT = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")
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
            self._no_unknown(item, {*_RECEIVER_KEYS, *_CHANNEL_KEYS}, path)
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
            digest = self._digest(item["digest"], f"{path}.digest", item) if "digest" in item else None
            out[name] = ReceiverSpec(name=name, channels=tuple(channels), digest=digest)
        out.setdefault(CSM_RECEIVER, csm_receiver())
        if self.fallback is not None:
            out.setdefault(self.fallback.name, self.fallback)
        return out

    def _digest(self, raw: Any, path: str, parent: dict) -> DigestSchedule:
        if not isinstance(raw, dict):
            raise self.fail(path, 'must be a mapping like {at: "08:30", timezone: Europe/Berlin}', parent,
                            "digest")
        self._no_unknown(raw, _DIGEST_KEYS, path)
        at = time(9, 0)
        if "at" in raw:
            value = raw["at"]
            m = _AT.match(value) if isinstance(value, str) else None
            if m is None:
                raise self.fail(f"{path}.at", f"{value!r} is not a time of day like \"08:30\" (HH:MM, 24 h, "
                                "quoted)", raw, "at")
            at = time(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))
        zone = raw.get("timezone", "UTC")
        if not isinstance(zone, str) or not re.match(r"^[A-Za-z0-9_+/-]{1,64}$", zone) or ".." in zone:
            raise self.fail(f"{path}.timezone", "must be an IANA time zone name like Europe/Berlin", raw,
                            "timezone")
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise self.fail(f"{path}.timezone", f"unknown time zone {zone!r} (an IANA name like "
                            "Europe/Berlin)", raw, "timezone") from None
        return DigestSchedule(at=at, timezone=zone)

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
        bypass = parent.group_bypass
        if "group_bypass" in raw:
            value = raw["group_bypass"]
            if not isinstance(value, list) or any(v not in SEVERITIES for v in value):
                raise self.fail(f"{path}.group_bypass", f"must be a list of severities ({', '.join(SEVERITIES)})",
                                raw, "group_bypass")
            bypass = frozenset(value)
        digest_only = parent.digest_only
        if "digest_only" in raw:
            digest_only = self._digest_only(raw["digest_only"], f"{path}.digest_only", raw)
        matchers = self._matchers(raw["match"], f"{path}.match", raw) if "match" in raw else Matchers()
        node = Route(receiver=receiver, matchers=matchers, continue_=cont, group_wait=group_wait,
                     group_by=tuple(group_by), repeat_interval=repeat, send_resolved=send_resolved, path=path,
                     group_bypass=bypass, digest_only=digest_only)
        children = raw.get("routes", [])
        if not isinstance(children, list):
            raise self.fail(f"{path}.routes", "must be a list of routes", raw, "routes")
        kids = tuple(self._route(child, f"{path}.routes[{i}]", node, receivers)
                     for i, child in enumerate(children))
        return Route(receiver=node.receiver, matchers=node.matchers, continue_=node.continue_,
                     group_wait=node.group_wait, group_by=node.group_by, repeat_interval=node.repeat_interval,
                     send_resolved=node.send_resolved, routes=kids, path=path, group_bypass=node.group_bypass,
                     digest_only=node.digest_only)

    def _digest_only(self, raw: Any, path: str, route: dict) -> DigestSelection:
        if not isinstance(raw, dict):
            raise self.fail(path, "must be a mapping of type and/or severity lists, e.g. "
                            "{type: [health_drop], severity: [low]}", route, "digest_only")
        self._no_unknown(raw, _DIGEST_ONLY_KEYS, path)
        out: dict[str, frozenset[str]] = {}
        for key, allowed in (("type", RISK_TYPES), ("severity", SEVERITIES)):
            value = raw.get(key, [])
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or any(v not in allowed for v in items):
                raise self.fail(f"{path}.{key}", f"must be a list of {', '.join(allowed)}", raw, key)
            out[key] = frozenset(items)
        return DigestSelection(types=out["type"], severities=out["severity"])

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
