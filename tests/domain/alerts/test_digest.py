"""Low-severity risks are grouped into one digest per target once the group's wait is over."""

from __future__ import annotations

from datetime import timedelta

from services.alerts.domain.digest import goes_to_digest, next_due, pending, plan_digests
from services.alerts.domain.targets import Target
from tests.domain.alerts.factories import NOW, make_risk

DANA = Target(kind="email", address="dana@vendor.example", receiver="csm")
LEE = Target(kind="email", address="lee@vendor.example", receiver="csm")
WAIT = timedelta(seconds=30)
URL = "http://cs.example"


def low(account: str, kind: str = "usage_drop", seq: int = 1, transition: str = "opened"):
    return make_risk(risk_id=f"{account}:{kind}", account_id=account, type=kind, severity="low", seq=seq,
                     transition=transition, name=account.title())


def test_openings_and_reminders_are_grouped_but_bypassed_severities() -> None:
    assert goes_to_digest(low("a"), "opened", WAIT)
    assert goes_to_digest(low("a"), "repeat", WAIT)
    assert not goes_to_digest(low("a"), "resolved", WAIT)
    assert goes_to_digest(make_risk(severity="medium"), "opened", WAIT)  # grouped per account now
    assert not goes_to_digest(make_risk(severity="critical"), "opened", WAIT)  # group_bypass default
    assert not goes_to_digest(low("a"), "opened", timedelta(0))


def test_groups_per_target_after_group_wait() -> None:
    items = [pending(low("a"), DANA, now=NOW, group_wait=WAIT),
             pending(low("b"), DANA, now=NOW + timedelta(seconds=10), group_wait=WAIT),
             pending(low("c", "ticket_spike"), DANA, now=NOW + timedelta(seconds=20), group_wait=WAIT),
             pending(low("d"), LEE, now=NOW + timedelta(seconds=20), group_wait=WAIT)]
    assert next_due(items) == NOW + WAIT

    early = plan_digests(items, now=NOW + timedelta(seconds=29), public_url=URL)
    assert early.ready == [] and len(early.waiting) == 4

    plan = plan_digests(items, now=NOW + WAIT, public_url=URL)
    [digest] = plan.ready
    assert digest.kind == "digest" and digest.target == DANA
    assert digest.risk_ids == ("a:usage_drop", "b:usage_drop", "c:ticket_spike")
    assert digest.email_subject == "[churnsignal] 3 low-severity risks to review"
    assert "Ticket spike" in digest.email_text
    assert "http://cs.example/ui/accounts/c" in digest.email_text
    assert [i.risk.account_id for i in plan.consumed] == ["a", "b", "c"]
    assert [i.target for i in plan.waiting] == [LEE]

    # the same set regrouped after a restart claims the same key; a different set does not
    again = plan_digests(items, now=NOW + WAIT, public_url=URL).ready[0]
    assert again.dedup_key == digest.dedup_key
    fewer = plan_digests(items[:2], now=NOW + WAIT, public_url=URL).ready[0]
    assert fewer.dedup_key != digest.dedup_key


def test_latest_event_per_risk_wins_and_resolved_drops_out() -> None:
    items = [pending(low("a"), DANA, now=NOW, group_wait=WAIT),
             pending(low("a", seq=2, transition="updated"), DANA, now=NOW, group_wait=WAIT),
             pending(low("b"), DANA, now=NOW, group_wait=WAIT),
             pending(low("c"), DANA, now=NOW, group_wait=WAIT),
             pending(low("c", seq=2, transition="resolved"), DANA, now=NOW, group_wait=WAIT)]
    plan = plan_digests(items, now=NOW + WAIT, public_url=URL)
    [digest] = plan.ready
    assert digest.risk_ids == ("a:usage_drop", "b:usage_drop")
    assert digest.event_ids == ("a:usage_drop:2", "b:usage_drop:1")
    assert len(plan.consumed) == 5


def test_single_item_goes_out_as_a_normal_notification() -> None:
    item = pending(low("a"), DANA, now=NOW, group_wait=WAIT)
    [n] = plan_digests([item], now=NOW + WAIT, public_url=URL).ready
    assert n.kind == "opened"
    assert n.dedup_key == item.item_key == "a:usage_drop:1|email:dana@vendor.example|opened"


def test_group_of_only_resolved_sends_nothing() -> None:
    items = [pending(low("a"), DANA, now=NOW, group_wait=WAIT),
             pending(low("a", seq=2, transition="resolved"), DANA, now=NOW, group_wait=WAIT)]
    plan = plan_digests(items, now=NOW + WAIT, public_url=URL)
    assert plan.ready == [] and len(plan.consumed) == 2


def test_large_digest_stays_inside_block_kit_limits() -> None:
    items = [pending(low(f"acct-{i:03d}"), DANA, now=NOW, group_wait=WAIT) for i in range(120)]
    [digest] = plan_digests(items, now=NOW + WAIT, public_url=URL).ready
    assert len(digest.risk_ids) == 120
    assert len(digest.slack_blocks) <= 50
    assert any("and 75 more" in (b.get("text") or {}).get("text", "") for b in digest.slack_blocks)


def test_group_by_splits_a_targets_digest() -> None:
    items = [pending(low(a, kind), DANA, now=NOW, group_wait=WAIT, group_by=("type",))
             for a, kind in (("a", "usage_drop"), ("b", "usage_drop"), ("c", "ticket_spike"),
                             ("d", "ticket_spike"))]
    ready = plan_digests(items, now=NOW + WAIT, public_url=URL).ready
    assert sorted(n.risk_ids for n in ready) == [("a:usage_drop", "b:usage_drop"),
                                                 ("c:ticket_spike", "d:ticket_spike")]
