"""docs/routing.schema.json and docs/routing.md agree with the routing parser.

The keys the schema allows at each level are the parser's own key sets; every routing file shipped in the
repository (and the example in docs/routing.md) is accepted by both; files the parser rejects for a shape
error are rejected by the schema too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from services.alerts.domain.routing import (
    DEFAULT_GROUP_WAIT,
    DEFAULT_REPEAT_INTERVAL,
    WEBHOOK_SECRET_REF,
    RoutingTree,
)
from services.alerts.domain.routing_config import (
    _CHANNEL_KEYS,
    _GROUP_BY,
    _MATCH_KEYS,
    _RECEIVER_KEYS,
    _ROUTE_KEYS,
    parse_duration,
)
from services.alerts.domain.targets import CHANNEL_KINDS
from shared.risks import RISK_TYPES, SEVERITIES
from tests.domain.alerts.factories import make_risk
from tests.domain.alerts.test_routing import TREE as TEST_TREE

ROOT = Path(__file__).resolve().parents[3]
SCHEMA_PATH = ROOT / "docs" / "routing.schema.json"
DOC_PATH = ROOT / "docs" / "routing.md"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
DEFS: dict[str, Any] = SCHEMA["$defs"]
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

# Channel kind in the file -> its config's definition in the schema.
CHANNEL_DEFS = {"slack_webhook": "slackWebhook", "slack_dm": "slackDm", "email": "email", "webhook": "webhook",
                "console": "console"}


def keys_of(definition: dict[str, Any]) -> set[str]:
    assert definition.get("additionalProperties") is False, "the parser rejects unknown keys at every level"
    return set(definition["properties"])


def schema_errors(text: str) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(yaml.safe_load(text))]


def doc_example() -> str:
    found = re.search(r"^## Complete example\n+```yaml\n(.*?)^```", DOC_PATH.read_text(encoding="utf-8"),
                      re.MULTILINE | re.DOTALL)
    assert found, "docs/routing.md has a '## Complete example' section with a yaml block"
    return found.group(1)


def deploy_routing() -> str:
    docs = yaml.safe_load_all((ROOT / "deploy" / "k8s" / "configmap.yaml").read_text(encoding="utf-8"))
    [text] = [d["data"]["routing.yaml"] for d in docs if "routing.yaml" in (d.get("data") or {})]
    return text


# --- (a) the schema itself --------------------------------------------------------------------------------

def test_schema_is_valid_draft_2020_12() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


# --- (b) the keys and values the schema allows are the parser's -------------------------------------------

def test_top_level_keys_are_the_parsers() -> None:
    # The parser's top-level keys are inline in `_Parser.parse`: read them from its own error message.
    with pytest.raises(ValueError, match="unknown key") as failure:
        RoutingTree.from_yaml("unknown_probe_key: 1\nroute: {receiver: csm}\n")
    listed = re.search(r"expected one of ([^)]*)\)", str(failure.value))
    assert listed
    assert keys_of(SCHEMA) == set(listed.group(1).split(", "))
    assert SCHEMA["required"] == ["route"]


def test_route_keys_are_the_parsers() -> None:
    assert keys_of(DEFS["route"]) == _ROUTE_KEYS
    # The root route matches everything: the parser refuses `match` and `continue` there.
    assert keys_of(DEFS["rootRoute"]) == _ROUTE_KEYS - {"match", "continue"}
    assert DEFS["rootRoute"]["required"] == ["receiver"]


@pytest.mark.parametrize("key", ["match: {type: usage_drop}", "continue: true"])
def test_root_route_refuses_match_and_continue(key: str) -> None:
    text = f"route:\n  receiver: csm\n  {key}\n"
    with pytest.raises(ValueError, match="route"):
        RoutingTree.from_yaml(text)
    assert schema_errors(text)


def test_match_keys_are_the_parsers() -> None:
    assert keys_of(DEFS["match"]) == _MATCH_KEYS


def test_receiver_and_channel_keys_are_the_parsers() -> None:
    assert set(_CHANNEL_KEYS) == set(CHANNEL_KINDS) == set(CHANNEL_DEFS)
    assert keys_of(DEFS["receiver"]) == {*_RECEIVER_KEYS, *_CHANNEL_KEYS}
    for kind, definition in CHANNEL_DEFS.items():
        assert keys_of(DEFS[definition]) == _CHANNEL_KEYS[kind], kind


def test_allowed_values_are_the_parsers() -> None:
    assert DEFS["riskType"]["enum"] == list(RISK_TYPES)
    assert DEFS["severity"]["enum"] == list(SEVERITIES)
    for route in ("route", "rootRoute"):
        assert set(DEFS[route]["properties"]["group_by"]["items"]["enum"]) == _GROUP_BY


def test_defaults_are_the_parsers() -> None:
    root = RoutingTree.from_yaml("route: {receiver: csm}\n").root
    defaults = {k: v["default"] for k, v in DEFS["rootRoute"]["properties"].items() if "default" in v}
    assert parse_duration(defaults["group_wait"]) == root.group_wait == DEFAULT_GROUP_WAIT
    assert parse_duration(defaults["repeat_interval"]) == root.repeat_interval == DEFAULT_REPEAT_INTERVAL
    assert defaults["group_by"] == list(root.group_by)
    assert defaults["send_resolved"] is root.send_resolved
    assert DEFS["webhook"]["properties"]["secret_env"]["default"] == WEBHOOK_SECRET_REF


VALID = {
    "docs/routing.md example": doc_example,
    "deploy/k8s/configmap.yaml": deploy_routing,
    "tests/domain/alerts/test_routing.py TREE": lambda: TEST_TREE,
    "minimal": lambda: "route: {receiver: csm}\n",
    "every channel form": lambda: """
receivers:
  - name: all-kinds
    slack_dm:
    console:
    slack_webhook: [{url: "https://hooks.example/a"}, {url_env: HOOK_B, channel: "#b", name: b}]
    email: {to: csm}
    webhook: {url_env: CRM_URL}
  - name: "@ops team"
    console: {name: ops}
    slack_dm: {}
route:
  receiver: all-kinds
  group_wait: 0
  repeat_interval: 1h30m
  routes:
    - match: {type: [usage_drop, ticket_spike], severity: low, segment: SMB, arr_max: 5000.5}
      group_wait: 500ms
      group_by: [account_id, segment, type, severity, csm]
    - match: {has_csm: false, arr_min: 0}
      receiver: "@ops team"
      repeat_interval: 90
      send_resolved: true
      routes: [{match: {severity_at_least: critical}, repeat_interval: 2D}]
""",
}


@pytest.mark.parametrize("name", list(VALID))
def test_shipped_routing_files_pass_parser_and_schema(name: str) -> None:
    text = VALID[name]()
    RoutingTree.from_yaml(text)
    assert schema_errors(text) == []


INVALID = {
    "unknown top-level key": "routes: []\nroute: {receiver: csm}\n",
    "no route": "receivers: []\n",
    "root without receiver": "route: {group_wait: 1m}\n",
    "unknown route key": "route: {receiver: csm, routes: [{matcher: {type: usage_drop}}]}\n",
    "unknown match key": "route: {receiver: csm, routes: [{match: {tier: red}}]}\n",
    "empty match": "route: {receiver: csm, routes: [{match: {}}]}\n",
    "unknown risk type": "route: {receiver: csm, routes: [{match: {type: churned}}]}\n",
    "unknown severity": "route: {receiver: csm, routes: [{match: {severity_at_least: urgent}}]}\n",
    "empty type list": "route: {receiver: csm, routes: [{match: {type: []}}]}\n",
    "negative arr": "route: {receiver: csm, routes: [{match: {arr_min: -1}}]}\n",
    "has_csm not boolean": "route: {receiver: csm, routes: [{match: {has_csm: maybe}}]}\n",
    "continue not boolean": "route: {receiver: csm, routes: [{continue: 1}]}\n",
    "bad duration": "route: {receiver: csm, group_wait: 5 minutes}\n",
    "negative duration": "route: {receiver: csm, group_wait: -5}\n",
    "zero repeat_interval": "route: {receiver: csm, repeat_interval: 0s}\n",
    "bad group_by": "route: {receiver: csm, group_by: [tier]}\n",
    "receiver without name": "receivers: [{console: {}}]\nroute: {receiver: csm}\n",
    "receiver without channel": "receivers: [{name: x}]\nroute: {receiver: csm}\n",
    "unknown channel": "receivers: [{name: x, pagerduty: {}}]\nroute: {receiver: csm}\n",
    "bad receiver name": "receivers: [{name: '-x', console: {}}]\nroute: {receiver: csm}\n",
    "slack webhook url and url_env": "receivers: [{name: x, slack_webhook: {url: 'https://h.example', "
                                     "url_env: H}}]\nroute: {receiver: csm}\n",
    "slack webhook without url": "receivers: [{name: x, slack_webhook: {channel: '#a'}}]\nroute: {receiver: csm}\n",
    "webhook url not http": "receivers: [{name: x, webhook: {url: 'ftp://h.example'}}]\nroute: {receiver: csm}\n",
    "bad env name": "receivers: [{name: x, webhook: {url_env: 'A-B'}}]\nroute: {receiver: csm}\n",
    "unknown webhook key": "receivers: [{name: x, webhook: {url_env: A, secret: s}}]\nroute: {receiver: csm}\n",
    "slack_dm with a key": "receivers: [{name: x, slack_dm: {name: y}}]\nroute: {receiver: csm}\n",
    "email without to": "receivers: [{name: x, email: {name: y}}]\nroute: {receiver: csm}\n",
    "bad email address": "receivers: [{name: x, email: {to: [not-an-address]}}]\nroute: {receiver: csm}\n",
    "empty channel list": "receivers: [{name: x, console: []}]\nroute: {receiver: csm}\n",
}


@pytest.mark.parametrize("name", list(INVALID))
def test_files_the_parser_rejects_the_schema_rejects(name: str) -> None:
    text = INVALID[name]
    with pytest.raises(ValueError, match="routing file"):
        RoutingTree.from_yaml(text)
    assert schema_errors(text), f"the schema accepts a file the parser rejects ({name})"


# --- (c) docs/routing.md -------------------------------------------------------------------------------------

def test_doc_example_parses_and_routes_as_described() -> None:
    tree = RoutingTree.from_yaml(doc_example())
    assert set(tree.receivers) >= {"cs-leadership", "renewals", "crm", "cs-ops", "csm"}
    assert tree.fallback_receiver == "cs-ops"
    big = make_risk(type="champion_left", severity="high", segment="enterprise", arr=250_000)
    assert [m.receiver.name for m in tree.route(big)] == ["cs-leadership", "crm", "csm"]
    low = make_risk(type="usage_drop", severity="low", segment="smb", arr=10_000)
    [crm, csm] = tree.route(low)
    assert (crm.receiver.name, csm.receiver.name, csm.group_by) == ("crm", "csm", ("csm",))
    assert csm.group_wait == parse_duration("10m")


def test_doc_names_every_key_and_the_schema_line() -> None:
    doc = DOC_PATH.read_text(encoding="utf-8")
    keys = {"receivers", "fallback_receiver", "route", "name", *_ROUTE_KEYS, *_MATCH_KEYS, *_CHANNEL_KEYS,
            *(k for keys in _CHANNEL_KEYS.values() for k in keys), *_GROUP_BY, *RISK_TYPES, *SEVERITIES}
    missing = sorted(k for k in keys if f"`{k}`" not in doc)
    assert not missing, f"docs/routing.md does not name {missing}"
    assert "# yaml-language-server: $schema=" in doc
