"""The route tree: matching, continue, inheritance, the default tree and fallback, bad files."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.alerts.domain.routing import (
    RoutingTree,
    fallback_receiver,
)
from services.alerts.domain.routing_config import parse_duration
from services.alerts.domain.targets import Target, resolve_targets
from tests.domain.alerts.factories import make_risk

TREE = """
receivers:
  - name: leadership
    slack_webhook: {url_env: SLACK_EXEC_WEBHOOK, channel: "#exec-alerts"}
  - name: smb-team
    email: {to: [smb-team@vendor.example]}
  - name: crm
    webhook: {url_env: CRM_HOOK_URL, secret_env: CRM_HOOK_SECRET}
  - name: renewals
    email:
      - {to: csm}
      - {name: renewals-desk, to: renewals@vendor.example}
route:
  receiver: csm
  repeat_interval: 12h
  group_wait: 1m
  send_resolved: true
  routes:
    - match: {type: champion_left}
      receiver: leadership
      continue: true
    - match: {severity_at_least: high, segment: [Enterprise], arr_min: 100000}
      receiver: leadership
      repeat_interval: 4h
      routes:
        - match: {type: renewal_risk}
          receiver: renewals
    - match: {segment: smb, severity: [low, medium]}
      receiver: smb-team
      send_resolved: false
    - match: {arr_max: 1000}
      receiver: crm
"""


def receivers(tree: RoutingTree, **risk_fields) -> list[str]:
    return [m.receiver.name for m in tree.route(make_risk(**risk_fields))]


def test_first_matching_child_wins_and_stops_siblings() -> None:
    tree = RoutingTree.from_yaml(TREE)
    assert receivers(tree, type="usage_drop", severity="high", segment="enterprise",
                     arr=200_000) == ["leadership"]


def test_continue_keeps_looking_at_siblings() -> None:
    tree = RoutingTree.from_yaml(TREE)
    # champion_left matches route 0 (continue) and route 1 (enterprise, high, big ARR)
    assert receivers(tree, type="champion_left", severity="critical", segment="enterprise",
                     arr=500_000) == ["leadership", "leadership"]
    # continue, but no later sibling matches: only the first
    assert receivers(tree, type="champion_left", severity="critical", segment="mid-market",
                     arr=50_000) == ["leadership"]


def test_nested_route_matches_deepest_node() -> None:
    tree = RoutingTree.from_yaml(TREE)
    [match] = tree.route(make_risk(type="renewal_risk", severity="high", segment="enterprise", arr=150_000))
    assert match.receiver.name == "renewals"
    assert match.route_path == "route.routes[1].routes[0]"


def test_children_inherit_settings_unless_overridden() -> None:
    tree = RoutingTree.from_yaml(TREE)
    [renewals] = tree.route(make_risk(type="renewal_risk", severity="high", segment="enterprise",
                                      arr=150_000))
    assert renewals.repeat_interval == timedelta(hours=4)   # from its parent, which overrode the root
    assert renewals.group_wait == timedelta(minutes=1)      # from the root
    assert renewals.send_resolved is True
    [smb] = tree.route(make_risk(segment="SMB", severity="medium", arr=20_000))
    assert smb.receiver.name == "smb-team"
    assert smb.send_resolved is False
    assert smb.repeat_interval == timedelta(hours=12)


def test_no_child_matches_root_receiver() -> None:
    tree = RoutingTree.from_yaml(TREE)
    [match] = tree.route(make_risk(type="usage_drop", severity="medium", segment="mid-market", arr=50_000))
    assert match.receiver.name == "csm"
    assert match.route_path == "route"


@pytest.mark.parametrize(("fields", "expected"), [
    ({"severity": "medium", "segment": "enterprise", "arr": 200_000}, "csm"),     # below severity_at_least
    ({"severity": "critical", "segment": "enterprise", "arr": 99_999}, "csm"),    # below arr_min
    ({"severity": "critical", "segment": "ENTERPRISE", "arr": 100_000}, "leadership"),  # inclusive, any case
    ({"severity": "critical", "segment": None, "arr": 500_000}, "csm"),           # unknown segment
    ({"severity": "high", "segment": "smb", "arr": 20_000}, "csm"),               # severity not listed
    ({"severity": "high", "segment": "mid", "arr": 999.0}, "crm"),                # arr_max exclusive
    ({"severity": "high", "segment": "mid", "arr": 1000.0}, "csm"),
    ({"severity": "high", "segment": "mid", "arr": None}, "csm"),                 # unknown ARR never matches
])
def test_matchers(fields: dict, expected: str) -> None:
    assert receivers(RoutingTree.from_yaml(TREE), type="usage_drop", **fields) == [expected]


def test_csm_receiver_resolves_to_the_accounts_csm() -> None:
    tree = RoutingTree.from_yaml(TREE)
    routed = tree.route_targets(make_risk(segment="mid", severity="medium", arr=50_000))
    assert [r.target.key for r in routed] == ["slack_dm:U0DANA", "email:dana@vendor.example"]


def test_targets_are_distinct_and_carry_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_EXEC_WEBHOOK", "https://hooks.slack.example/services/T/B/secret-token")
    tree = RoutingTree.from_yaml(TREE)
    routed = tree.route_targets(make_risk(type="champion_left", severity="critical", segment="enterprise",
                                          arr=500_000))
    # two matching routes to the same receiver -> one target
    assert [r.target for r in routed] == [Target(kind="slack_webhook", address="leadership",
                                                 receiver="leadership", url_ref="SLACK_EXEC_WEBHOOK",
                                                 channel="#exec-alerts")]
    assert "secret-token" not in repr(routed)


def test_email_to_csm_and_fixed_address() -> None:
    tree = RoutingTree.from_yaml(TREE)
    [match] = tree.route(make_risk(type="renewal_risk", severity="high", segment="enterprise", arr=150_000))
    keys = [t.key for t in resolve_targets(match, make_risk())]
    assert keys == ["email:dana@vendor.example", "email:renewals@vendor.example"]
    # without a CSM the csm entry is skipped, the fixed address stays
    assert [t.key for t in resolve_targets(match, make_risk(csm=False))] == ["email:renewals@vendor.example"]


def test_default_tree_sends_to_csm_slack_and_email() -> None:
    tree = RoutingTree.default(fallback_receiver("cs-ops@vendor.example"))
    routed = tree.route_targets(make_risk())
    assert [r.target.key for r in routed] == ["slack_dm:U0DANA", "email:dana@vendor.example"]
    assert routed[0].match.repeat_interval == timedelta(hours=24)
    assert routed[0].match.send_resolved is False


def test_default_tree_partial_csm() -> None:
    tree = RoutingTree.default(fallback_receiver("cs-ops@vendor.example"))
    only_email = make_risk(csm={"email": "dana@vendor.example"})
    assert [r.target.key for r in tree.route_targets(only_email)] == ["email:dana@vendor.example"]
    only_slack = make_risk(csm={"slack_user_id": "U0DANA"})
    assert [r.target.key for r in tree.route_targets(only_slack)] == ["slack_dm:U0DANA"]


def test_default_tree_falls_back_when_account_has_no_csm() -> None:
    fallback = fallback_receiver("cs-ops@vendor.example", "CHURNSIGNAL_SLACK_WEBHOOK_URL")
    tree = RoutingTree.default(fallback)
    routed = tree.route_targets(make_risk(csm=False))
    assert [r.target.key for r in routed] == ["slack_webhook:fallback", "email:cs-ops@vendor.example"]
    assert routed[0].target.url_ref == "CHURNSIGNAL_SLACK_WEBHOOK_URL"
    assert routed[0].match.route_path == "fallback_receiver"


def test_fallback_when_csm_channels_are_not_enabled() -> None:
    tree = RoutingTree.default(fallback_receiver("cs-ops@vendor.example"))
    # a CSM known only by Slack id, but no bot token configured: nobody would hear -> fallback
    routed = tree.route_targets(make_risk(csm={"slack_user_id": "U0DANA"}),
                                enabled={"email", "slack_webhook"})
    assert [r.target.key for r in routed] == ["email:cs-ops@vendor.example"]


def test_default_tree_without_fallback_drops_accounts_without_csm() -> None:
    assert RoutingTree.default(None).route_targets(make_risk(csm=False)) == []


def test_malformed_csm_addresses_are_never_targets() -> None:
    tree = RoutingTree.default(None)
    risk = make_risk(csm={"email": "dana@vendor.example\r\nBcc: all@vendor.example",
                          "slack_user_id": "<!here>"})
    assert tree.route_targets(risk) == []


def test_has_csm_matcher_and_file_fallback() -> None:
    tree = RoutingTree.from_yaml("""
receivers:
  - name: ops
    email: {to: ops@vendor.example}
fallback_receiver: ops
route:
  receiver: csm
  routes:
    - match: {has_csm: false, severity: critical}
      receiver: ops
""")
    assert receivers(tree, csm=False, severity="critical") == ["ops"]
    assert receivers(tree, csm=False, severity="high") == ["csm"]
    # csm resolves to nobody -> the file's fallback_receiver
    assert [r.target.key for r in tree.route_targets(make_risk(csm=False, severity="high"))] == [
        "email:ops@vendor.example"]


def test_literal_url_is_kept_out_of_targets() -> None:
    tree = RoutingTree.from_yaml("""
receivers:
  - name: hook
    webhook: {url: "https://crm.example/hooks/abc?token=s3cr3t"}
route: {receiver: hook}
""")
    [routed] = tree.route_targets(make_risk())
    assert "s3cr3t" not in repr(routed) and "s3cr3t" not in repr(tree)
    assert tree.literal_secrets[routed.target.url_ref or ""] == "https://crm.example/hooks/abc?token=s3cr3t"
    assert routed.target.secret_ref == "CHURNSIGNAL_WEBHOOK_SECRET"


@pytest.mark.parametrize(("text", "message"), [
    ("route: [", "invalid YAML at line"),
    ("- a\n- b", "expected a mapping"),
    ("receivers: []", "route: missing"),
    ("route: {receiver: nobody}", "route.receiver (line 1): unknown receiver 'nobody'"),
    ("route: {receiver: csm, routes: [{match: {severity: hgih}}]}", "route.routes[0].match.severity"),
    ("route: {receiver: csm, routes: [{match: {type: churn}}]}", "unknown type 'churn'"),
    ("route: {receiver: csm, routes: [{match: {sevrity: high}}]}", "route.routes[0].match.sevrity"),
    ("route: {receiver: csm, routes: [{match: {severity_at_least: big}}]}", "severity_at_least"),
    ("route: {receiver: csm, routes: [{match: {arr_min: 10, arr_max: 5}}]}", "arr_max"),
    ("route: {receiver: csm, routes: [{match: {arr_min: -1}}]}", "arr_min"),
    ("route: {receiver: csm, routes: [{continue: maybe}]}", "route.routes[0].continue"),
    ("route: {receiver: csm, repeat_interval: soon}", "route.repeat_interval"),
    ("route: {receiver: csm, repeat_interval: 0s}", "route.repeat_interval (line 1): must be greater than 0"),
    ("route: {receiver: csm, group_wait: -5}", "route.group_wait"),
    ("route: {receiver: csm, match: {type: usage_drop}}", "route.match"),
    ("route: {receiver: csm, recever: x}", "route.recever"),
    ("route: {receiver: csm}\nroutes: []", "routes (line 2): unknown key"),
    ("receivers: [{name: a}]\nroute: {receiver: a}", "has no channel"),
    ("receivers: [{name: a, email: {}}]\nroute: {receiver: a}", "receivers[0].email.to"),
    ("receivers: [{name: a, email: {to: 'not an address'}}]\nroute: {receiver: a}", "receivers[0].email.to"),
    ("receivers: [{name: a, slack_webhook: {channel: '#x'}}]\nroute: {receiver: a}",
     "receivers[0].slack_webhook: exactly one of"),
    ("receivers: [{name: a, slack_webhook: {url_env: 'not-an-env'}}]\nroute: {receiver: a}", "url_env"),
    ("receivers: [{name: a, slack_dm: {}}, {name: a, slack_dm: {}}]\nroute: {receiver: a}",
     "duplicate receiver"),
    ("route: {receiver: csm}\nroute: {receiver: csm}", "duplicate key 'route'"),
    ("route: {receiver: csm}\nfallback_receiver: ghost", "fallback_receiver"),
])
def test_bad_files_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="routing file") as info:
        RoutingTree.from_yaml(text)
    assert message in str(info.value)


def test_bad_literal_url_is_not_echoed() -> None:
    with pytest.raises(ValueError) as info:
        RoutingTree.from_yaml("receivers: [{name: a, slack_webhook: {url: 'ftp://user:pw@host/x'}}]\n"
                              "route: {receiver: a}")
    assert "receivers[0].slack_webhook.url" in str(info.value)
    assert "pw@host" not in str(info.value)


def test_error_names_the_line() -> None:
    text = "route:\n  receiver: csm\n  routes:\n    - receiver: csm\n      match:\n        severity: hgih\n"
    with pytest.raises(ValueError, match=r"route\.routes\[0\]\.match\.severity \(line 6\)"):
        RoutingTree.from_yaml(text)


@pytest.mark.parametrize(("value", "seconds"), [
    ("30s", 30), ("5m", 300), ("24h", 86400), ("1d", 86400), ("1h30m", 5400), ("500ms", 0.5), (90, 90),
    ("0s", 0),
])
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == timedelta(seconds=seconds)


@pytest.mark.parametrize("value", ["", "5", "5 minutes", "h", "-1s", True, None, [1]])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)
