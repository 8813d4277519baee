"""When a risk event notifies a target: once on open, again only on escalation or an unacked repeat."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from services.alerts.domain.policy import AlertState, Decision, decide, next_state, repeat_due_at
from tests.domain.alerts.factories import NOW, make_risk

DAY = timedelta(hours=24)
KEY = "slack_dm:U0DANA"


def run(events, *, send_resolved: bool = False, acked_after: int | None = None, silenced_seqs=(),
        ) -> list[Decision]:
    """Feeds events (risk, minutes after NOW) through decide/next_state like the service does."""
    state: AlertState | None = None
    out = []
    for i, (risk, minutes) in enumerate(events):
        now = NOW + timedelta(minutes=minutes)
        decision = decide(risk, state, now=now, repeat_interval=DAY, send_resolved=send_resolved,
                          silenced=risk.seq in silenced_seqs)
        out.append(decision)
        state = next_state(state, risk, KEY, decision, now=now)
        if acked_after is not None and i == acked_after:
            state = replace(state, acked=True)
    return out


def test_opened_notifies_once_even_when_redelivered() -> None:
    opened = make_risk()
    decisions = run([(opened, 0), (opened, 1), (opened, 60)])
    assert [d.notify for d in decisions] == [True, False, False]
    assert decisions[0].kind == "opened" and decisions[0].sequence == 1
    assert decisions[1].reason == "already notified"


def test_update_without_escalation_is_quiet() -> None:
    decisions = run([(make_risk(severity="high"), 0),
                     (make_risk(seq=2, transition="updated", severity="high"), 5),
                     (make_risk(seq=3, transition="updated", severity="medium"), 10)])
    assert [d.notify for d in decisions] == [True, False, False]


def test_update_with_escalation_notifies() -> None:
    decisions = run([(make_risk(severity="medium"), 0),
                     (make_risk(seq=2, transition="updated", severity="high"), 5),
                     (make_risk(seq=3, transition="updated", severity="medium"), 6),
                     (make_risk(seq=4, transition="updated", severity="high"), 7),
                     (make_risk(seq=5, transition="updated", severity="critical"), 8)])
    assert [d.kind for d in decisions] == ["opened", "escalated", None, None, "escalated"]
    assert decisions[1].reason == "severity rose from medium to high"


def test_escalation_notifies_even_when_acknowledged() -> None:
    decisions = run([(make_risk(severity="medium"), 0),
                     (make_risk(seq=2, transition="updated", severity="critical"), 5)], acked_after=0)
    assert decisions[1].kind == "escalated"


def test_repeat_after_interval_while_unacknowledged() -> None:
    decisions = run([(make_risk(), 0),
                     (make_risk(seq=2, transition="updated"), 24 * 60 - 1),
                     (make_risk(seq=3, transition="updated"), 24 * 60),
                     (make_risk(seq=4, transition="updated"), 24 * 60 + 5)])
    assert [d.kind for d in decisions] == ["opened", None, "repeat", None]
    assert decisions[2].dedup_suffix == "repeat:2"


def test_no_repeat_once_acknowledged() -> None:
    decisions = run([(make_risk(), 0), (make_risk(seq=2, transition="updated"), 3 * 24 * 60)], acked_after=0)
    assert decisions[1].notify is False
    assert decisions[1].reason == "acknowledged"


def test_periodic_sweep_repeats_are_numbered() -> None:
    risk = make_risk()
    state = next_state(None, risk, KEY, decide(risk, None, now=NOW, repeat_interval=DAY, send_resolved=False,
                                                silenced=False), now=NOW)
    assert repeat_due_at(state, DAY) == NOW + DAY
    first = decide(risk, state, now=NOW + DAY, repeat_interval=DAY, send_resolved=False, silenced=False)
    state = next_state(state, risk, KEY, first, now=NOW + DAY)
    second = decide(risk, state, now=NOW + 2 * DAY, repeat_interval=DAY, send_resolved=False, silenced=False)
    assert (first.dedup_suffix, second.dedup_suffix) == ("repeat:2", "repeat:3")
    assert repeat_due_at(replace(state, acked=True), DAY) is None


def test_resolved_only_when_configured() -> None:
    events = [(make_risk(), 0), (make_risk(seq=2, transition="resolved", severity="high"), 30)]
    assert [d.notify for d in run(events, send_resolved=False)] == [True, False]
    with_resolved = run(events + [(make_risk(seq=2, transition="resolved"), 31)], send_resolved=True)
    assert [d.kind for d in with_resolved] == ["opened", "resolved", None]


def test_resolved_of_never_notified_risk_is_quiet() -> None:
    decisions = run([(make_risk(), 0), (make_risk(seq=2, transition="resolved"), 30)], send_resolved=True,
                    silenced_seqs={1})
    assert [d.notify for d in decisions] == [False, False]


def test_silence_suppresses_everything() -> None:
    decisions = run([(make_risk(severity="medium"), 0),
                     (make_risk(seq=2, transition="updated", severity="critical"), 5),
                     (make_risk(seq=3, transition="resolved"), 9)],
                    send_resolved=True, silenced_seqs={1, 2, 3})
    assert [d.reason for d in decisions] == ["silenced"] * 3


def test_first_update_after_silence_ends_notifies() -> None:
    decisions = run([(make_risk(severity="medium"), 0),
                     (make_risk(seq=2, transition="updated", severity="medium"), 60)], silenced_seqs={1})
    assert decisions[1].kind == "opened"
    assert decisions[1].reason == "first notification for target"


def test_escalation_is_measured_against_last_notified_severity() -> None:
    # medium notified; high arrives silenced; after the silence, another high update still escalates
    decisions = run([(make_risk(severity="medium"), 0),
                     (make_risk(seq=2, transition="updated", severity="high"), 5),
                     (make_risk(seq=3, transition="updated", severity="high"), 60)], silenced_seqs={2})
    assert [d.kind for d in decisions] == ["opened", None, "escalated"]


def test_stale_event_is_ignored() -> None:
    decisions = run([(make_risk(severity="medium"), 0),
                     (make_risk(seq=3, transition="updated", severity="medium"), 1),
                     (make_risk(seq=2, transition="updated", severity="critical"), 2)])
    assert decisions[2].notify is False
    assert decisions[2].reason.startswith("stale event")


def test_next_state_tracks_counts() -> None:
    risk = make_risk(severity="medium")
    d = decide(risk, None, now=NOW, repeat_interval=DAY, send_resolved=True, silenced=False)
    state = next_state(None, risk, KEY, d, now=NOW)
    assert (state.count, state.last_severity, state.last_notified_at, state.last_seq) == (1, "medium", NOW, 1)
    quiet = make_risk(seq=2, transition="updated", severity="low")
    d2 = decide(quiet, state, now=NOW, repeat_interval=DAY, send_resolved=True, silenced=False)
    state2 = next_state(state, quiet, KEY, d2, now=NOW + timedelta(minutes=1))
    assert (state2.count, state2.last_severity, state2.last_notified_at) == (1, "medium", NOW)
    assert state2.last_seq == 2
