"""Silence judged against the account's own rhythm, sparse accounts included (the lapse model), and the
health components that are off unless configured (activity, intensity, key features, tenure)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.scoring.domain import ScoringConfig, ScoringEngine
from services.scoring.domain.config import COMPONENTS
from services.scoring.domain.stats import p_active

from .stories import Driver, at_day, event

ACC = "acc"
PRIORS = {"prior_gap": 14.0, "prior_weight": 1.0, "dropout_a": 1.0, "dropout_b": 6.0, "max_shape": 6,
          "break_share": 0.1, "max_break": 21}


def _regular(visits: int, gap: int, silence: int) -> float:
    found = p_active(visits, (visits - 1) * gap, (visits - 1) * gap * gap, silence, **PRIORS)  # type: ignore[arg-type]
    assert found is not None
    return found[0]


def test_p_active_follows_the_accounts_own_rhythm() -> None:
    assert p_active(1, 0, 0, 40, **PRIORS) is None   # type: ignore[arg-type]  # one visit: no rhythm yet
    # A monthly account: a month's silence is ordinary, three months are not.
    assert _regular(12, 30, 25) > 0.8
    assert _regular(12, 30, 90) < 0.5
    # A weekly account two weeks into a vacation (three weeks since its last visit) is still likely active,
    # but not after two months.
    assert _regular(50, 7, 21) > 0.5
    assert _regular(50, 7, 60) < 0.05
    # Fewer visits, less certainty either way; more silence, never more likely active.
    values = [_regular(3, 30, s) for s in range(0, 200, 10)]
    assert values == sorted(values, reverse=True)
    assert _regular(3, 30, 90) > _regular(12, 30, 90)


def _driver(**config: object) -> Driver:
    return Driver(ScoringEngine(ScoringConfig.from_dict(dict(config))), timedelta(hours=1))


def _visit(d: Driver, day: int, feature: str = "invoice.run", n: int = 2) -> None:
    for i in range(n):
        d.send(event("usage", ACC, at_day(day, 10 + i), {"feature": feature, "user_id": "buyer"}))


def _drops(d: Driver) -> list[tuple[str, str]]:
    return [(t.transition, t.evidence.get("mode", "")) for t in d.run.transitions.get(ACC, [])
            if t.type == "usage_drop"]


def test_a_monthly_account_silent_for_three_months_is_flagged_as_lapsed() -> None:
    d = _driver()
    for month in range(12):
        _visit(d, 30 * month)
    d.advance(at_day(330 + 40))                  # 40 days after the last visit: a late month, no more
    assert _drops(d) == []
    d.advance(at_day(330 + 91))
    assert _drops(d) == [("opened", "lapsed")]
    [opened] = [t for t in d.run.transitions[ACC] if t.type == "usage_drop"]
    assert opened.evidence["visits"] == 12 and opened.evidence["usual_gap_days"] == 30.0
    assert "looks lapsed" in opened.summary and "every 30 days" in opened.summary
    _visit(d, 330 + 95)                          # it comes back: the risk resolves
    d.advance(at_day(330 + 97))
    assert _drops(d) == [("opened", "lapsed"), ("resolved", "lapsed")]


def test_a_weekly_account_on_a_two_week_vacation_is_not_flagged() -> None:
    d = _driver()
    for week in range(40):
        _visit(d, 7 * week)
    d.advance(at_day(7 * 39 + 21))               # two weeks off after the last visit
    for week in range(42, 50):                   # and back
        _visit(d, 7 * week)
    d.advance(at_day(7 * 50))
    assert _drops(d) == []


def test_the_activity_component_is_the_chance_of_being_active_when_weighed() -> None:
    off = _driver()
    on = _driver(weights={"activity": 0.3})
    for d in (off, on):
        for month in range(6):
            _visit(d, 30 * month)
        d.advance(at_day(150 + 80))
    assert off.engine.snapshot(off.run.states[ACC]).component("activity").score is None   # weight 0: not computed
    snap = on.engine.snapshot(on.run.states[ACC])
    activity = snap.component("activity")
    assert activity.score is not None and activity.score < 50
    assert "chance it is still active" in activity.reason and "usually every 30 days" in activity.reason
    known = [c for c in snap.components if c.score is not None]
    assert snap.score == pytest.approx(sum(c.contribution for c in known), abs=0.1)


def test_key_features_and_intensity_weigh_what_the_config_names() -> None:
    config = {"weights": {"key_features": 0.5, "intensity": 0.2, "tenure": 0.1},
              "intensity": {"typical": 2.0},
              "key_features": {"features": {"unfriend": {"weight": -1.0, "typical": 1},
                                            "newfriend": {"weight": 0.8, "typical": 2}}}}
    calm, stormy = _driver(**config), _driver(**config)
    for day in range(30):
        _visit(calm, day, "newfriend", 2)
        _visit(stormy, day, "unfriend", 2)
    for d in (calm, stormy):
        d.advance(at_day(31))
    calm_snap = calm.engine.snapshot(calm.run.states[ACC])
    stormy_snap = stormy.engine.snapshot(stormy.run.states[ACC])
    assert calm_snap.component("key_features").score > 90 > 10 > stormy_snap.component("key_features").score
    assert "unfriend" in stormy_snap.component("key_features").reason
    assert calm_snap.component("intensity").score == pytest.approx(50.0, abs=1)   # at the typical 2 uses a day
    assert calm_snap.component("tenure").reason == "customer for 31 days"
    assert set(calm.run.states[ACC].key_counts) == {"newfriend"}     # only the features named are counted
    for snap in (calm_snap, stormy_snap):
        known = [c for c in snap.components if c.score is not None]
        assert snap.score == pytest.approx(sum(c.contribution for c in known), abs=0.1)
        assert len(snap.components) == len(COMPONENTS)


@pytest.mark.parametrize(("config", "message"), [
    ({"key_features": {"features": {"x": 1.0}}}, "'key_features.features.x' in scoring config must be a mapping"),
    ({"key_features": {"features": {"x": {"weight": "high"}}}}, "'key_features.features.x.weight'"),
    ({"lapse": {"open_below": 1.5}}, "lapse.open_below must be between 0 and 1"),
    ({"lapse": {"break_share": 0.6, "skip_share": 0.5}}, "together below 1"),
    ({"intensity": {"typical": -1}}, "intensity needs typical >= 0"),
])
def test_bad_lapse_and_feature_settings_are_named(config: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        ScoringConfig.from_dict(config)


def test_a_state_written_before_the_rhythm_was_kept_decodes_and_catches_up() -> None:
    from services.scoring.domain import decode_state, encode_state

    d = _driver()
    for week in range(6):
        _visit(d, 7 * week)
    d.advance(at_day(45))
    state = d.run.states[ACC]
    raw = encode_state(state)
    assert decode_state(raw).rhythm == state.rhythm
    state.rhythm = [0, -1, -1, 0, -1, 0]         # as an older state decodes: folded again from the days kept
    d.advance(at_day(46))
    assert state.rhythm[0] >= 6
