"""The alerts domain: route -> targets -> policy -> content (pure: no I/O, no framework imports).

Implements the alerts interface (routing, targets, policy, silences, digest, content). Additions beyond it,
all backwards compatible:

- `Target` names its secrets instead of holding them: `url_ref` (env var name, or a synthetic
  `routing:...` name for a literal `url:` in the routing file, see `RoutingTree.literal_secrets`) and
  `secret_ref` (HMAC secret, default `CHURNSIGNAL_WEBHOOK_SECRET`). `Target.rate_key` is what the Deliverer
  rate-limits (one Slack webhook URL, one DM user, ...). `Target.to_dict()/from_dict()` for storage.
- `RoutingTree.route_targets(risk, enabled=None) -> list[RoutedTarget(match, target)]`: every distinct
  target over all matching routes, plus the tree's fallback receiver when nothing resolved (the default tree
  uses that for "account without a CSM"). `enabled` = channel kinds the deployment can deliver to.
  `RoutingTree.from_yaml(text, fallback=...)` (the parser: `routing_config.parse_routing`); YAML extras:
  top-level `fallback_receiver`, matcher `has_csm`; built-in receiver `csm`.
  `fallback_receiver(email, slack_webhook_ref)` builds the fallback.
- `AlertState` also carries `last_seq` (stale redeliveries are ignored) and `resolved_notified`.
  `Decision.sequence` / `Decision.dedup_suffix` (repeats are numbered: "repeat:3"), and
  `next_state(previous, risk, target_key, decision, now=...)` gives the state to store after any decision.
  `plan_target(...)` is the whole per-target step (decision, state, next repeat, send now or digest) that
  both the claim of risk events and the repeat sweep use.
- `render(risk, target, public_url, *, kind=None, dedup_suffix=None)`: pass the decision's kind and
  dedup_suffix. `Notification.to_dict()/from_dict()` to store a claimed delivery and resume it.
  `render_digest(risks, target, public_url)`.
- Digest flow: `goes_to_digest(risk, kind, group_wait)` -> queue `pending(..., group_by=match.group_by)` ->
  `plan_digests(items, now=, public_url=)` -> `DigestPlan(ready, consumed, waiting)`; groups are per target
  (and per the route's `group_by` values when given).
- Silences: `validate_silence(...)` for the API, `matching_silence(...)` besides `is_silenced(...)`.
"""

from services.alerts.domain.content import Notification, render, render_digest
from services.alerts.domain.digest import DigestPlan, PendingItem, goes_to_digest, pending, plan_digests
from services.alerts.domain.policy import AlertState, Decision, TargetPlan, decide, next_state, plan_target
from services.alerts.domain.routing import (
    ReceiverSpec,
    Route,
    RoutedTarget,
    RouteMatch,
    RoutingTree,
    fallback_receiver,
)
from services.alerts.domain.silences import Silence, is_silenced, matching_silence, validate_silence
from services.alerts.domain.targets import ChannelSpec, Target, resolve_targets

__all__ = [
    "AlertState", "ChannelSpec", "Decision", "DigestPlan", "Notification", "PendingItem", "ReceiverSpec",
    "Route", "RouteMatch", "RoutedTarget", "RoutingTree", "Silence", "Target", "TargetPlan", "decide",
    "fallback_receiver", "goes_to_digest", "is_silenced", "matching_silence", "next_state", "pending",
    "plan_digests", "plan_target", "render", "render_digest", "resolve_targets", "validate_silence",
]
