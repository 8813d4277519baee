"""Risk events for the alerts tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.risks import RiskEvent

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def make_risk(*, risk_id: str = "acme:usage_drop:1", seq: int = 1, transition: str = "opened",
              account_id: str = "acme", type: str = "usage_drop", severity: str = "high",
              summary: str = "Weekly active users fell 62% below this account's own 8-week norm.",
              evidence: dict[str, Any] | None = None, csm: dict[str, Any] | None | bool = True,
              name: str | None = "Acme Corp", segment: str | None = "enterprise", arr: float | None = 120_000,
              score: float | None = 38.0, tier: str = "red", reasons: list[str] | None = None,
              received_at: datetime | None = NOW, **extra: Any) -> RiskEvent:
    if csm is True:
        csm = {"email": "dana@vendor.example", "slack_user_id": "U0DANA", "name": "Dana"}
    elif csm is False:
        csm = None
    return RiskEvent.model_validate({
        "event_id": f"{risk_id}:{seq}", "risk_id": risk_id, "seq": seq, "transition": transition,
        "account_id": account_id, "type": type, "severity": severity, "summary": summary,
        "evidence": evidence if evidence is not None else {"drop_pct": 62.0, "weekly_active_users": 31,
                                                             "baseline_wau": 82},
        "health": {"score": score, "tier": tier,
                   "reasons": reasons if reasons is not None else ["-18: usage trend", "-9: ticket spike"]},
        "account": {"name": name, "csm": csm, "segment": segment, "arr": arr, "renewal_date": "2025-05-01"},
        "occurred_at": NOW.isoformat(), "detected_at": NOW.isoformat(),
        "trigger": {"event_id": "evt-1", "received_at": received_at.isoformat() if received_at else None},
        **extra,
    })


def without_account_grouping(tree: Any) -> Any:
    """`tree` with every route set as the defaults were before risks were grouped per account: only low
    severity waits `group_wait`, one digest per target, no digest-only risks (for tests written for them)."""
    from dataclasses import replace

    from services.alerts.domain.daily import NO_DIGEST_ONLY

    def legacy(node: Any) -> Any:
        return replace(node, group_by=(), group_bypass=frozenset({"medium", "high", "critical"}),
                       digest_only=NO_DIGEST_ONLY, routes=tuple(legacy(child) for child in node.routes))

    return replace(tree, root=legacy(tree.root))
