"""The scoring configuration: tier thresholds, component weights and detector thresholds.

Loaded from YAML (`ScoringConfig.load(path)`); every key is optional and falls back to the defaults below.
Sections mirror the dataclasses (`weights:`, `usage_drop:`, ...). An unknown key is a `ValueError` naming
it, because a typo would otherwise silently keep a default. The version stamped on every score is the
file's `version:` key, or a short hash of the file's content.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

DEFAULT_VERSION = "default-3"  # bumped whenever the defaults change what is raised

BREADTH_WINDOW_DAYS = 30   # the daily user bitmaps kept per account (state.BREADTH_DAYS)

COMPONENTS = ("usage_trend", "breadth", "support_load", "sentiment", "key_contacts", "renewal", "activity",
              "intensity", "key_features", "tenure")


@dataclass(frozen=True)
class Weights:
    usage_trend: float = 0.25
    breadth: float = 0.10
    support_load: float = 0.25
    sentiment: float = 0.20
    key_contacts: float = 0.10
    renewal: float = 0.10
    activity: float = 0.0
    intensity: float = 0.0
    key_features: float = 0.0
    tenure: float = 0.0

    def of(self, component: str) -> float:
        return float(getattr(self, component))


@dataclass(frozen=True)
class UsageDropRule:
    """Usage well below the account's own norm, or silent far beyond its own usual gap.

    The level judged is the account's active user-days against their norm (raw uses when it sends no
    user ids), see `usage.UsageSignal`; a small team is judged over the last two weeks as well as the
    last one, so that one or two people's week off is not mistaken for the account fading.
    """

    recent_days: int = 7            # the trailing window (complete days)
    norm_windows: int = 4           # norm = median of this many earlier windows of `recent_days`
    min_norm_windows: int = 3       # earlier windows needed before judging the level
    min_history_days: int = 28      # days of usage history before a drop or silence is judged at all
    min_norm: float = 10.0          # below this weekly volume only silence is judged ...
    min_norm_user_days: float = 5.0  # ... and below this many active user-days a week
    small_team: float = 11.0        # fewer people than this in a usual week (ten or fewer): a small team
                                    # (see above); in a team of ten, two or three people off at once halve
                                    # a week
    ratio: float = 0.50             # opens when the level is below this share of normal, ...
    small_team_ratio: float = 0.40  # ... below this for a small team (the last week and fortnight), ...
    quiet_week_days: int = 1        # ... or, whatever the team size, usage on at most this many days of
    quiet_week_usual_days: float = 4.0  # the last week where there usually is on at least this many;
    resolve_ratio: float = 0.60     # clears once the last week is back at this share (hysteresis)
    gap_factor: float = 3.0         # silence opens when days silent >= gap_factor * usual gap ...
    min_silent_days: int = 10       # ... and at least this many days (a team's week off spans 9)
    min_active_days: int = 8        # active days needed before the usual gap is trusted


@dataclass(frozen=True)
class LapseRule:
    """The chance that the account is still active, from its own rhythm (see `stats.p_active`).

    Every account, however sparse, is judged from its second visit on (a visit: an active day, or two
    when it carries over to the next day): its visits are a renewal process whose mean gap and
    regularity are learnt from its own gaps (a prior of `prior_weight` gaps of `prior_gap_days` days keeps
    the first ones modest), and after each visit it may have stopped for good (Beta(`dropout_a`,
    `dropout_b`) prior, as in the BG/NBD model). A share `break_share` of gaps may carry a break of up
    to `max_break_days` (holidays, a planning pause), so a weekly account on a two-week vacation stays
    likely active; a share `skip_share` may skip a visit. usage_drop opens in mode "lapsed" when the
    chance falls below `open_below` after at least `min_silent_days` silent days.
    """

    prior_gap_days: float = 14.0
    prior_weight: float = 1.0
    dropout_a: float = 1.0
    dropout_b: float = 6.0
    max_regularity: int = 6         # gamma shape of the gaps at most (1: as irregular as a Poisson process)
    min_regularity_gaps: int = 3    # gaps needed before the regularity is estimated (exponential before)
    break_share: float = 0.10
    max_break_days: int = 28
    skip_share: float = 0.0         # share of gaps that are two gaps in one (a visit skipped)
    open_below: float = 0.5
    min_silent_days: int = 10
    live_gaps: float = 5.0          # an account is ticked while silent for fewer than this many usual gaps
    max_live_days: int = 400        # ... but no longer than this


@dataclass(frozen=True)
class IntensityRule:
    """Uses per active user-day (per active day without user ids) over the last `window_days` complete
    days, against `typical` (from `churnsignal calibrate`; 0: not calibrated, the component is unknown)."""

    window_days: int = 28
    typical: float = 0.0
    slope: float = 1.5              # score = 100 * sigmoid(slope * ln(intensity / typical))


@dataclass(frozen=True)
class KeyFeaturesRule:
    """Features whose use (or absence) tells health, each with a weight and a typical 28-day count.

    score = 100 * sigmoid(offset + sum(weight * (ln(1 + uses) - ln(1 + typical)))). Only the features
    listed are counted (per account, per day, over `window_days`); none listed: the component is
    unknown. `churnsignal calibrate` fits them from a labelled history.
    """

    window_days: int = 28
    offset: float = 0.0
    features: tuple[tuple[str, float, float], ...] = ()   # (name, weight, typical)

    def __post_init__(self) -> None:
        raw: Any = self.features
        if isinstance(raw, dict):
            items = []
            for name, spec in raw.items():
                if not isinstance(spec, dict) or set(spec) - {"weight", "typical"} or "weight" not in spec:
                    raise ValueError(f"'key_features.features.{name}' in scoring config must be a mapping "
                                     "with 'weight' and optional 'typical'")
                weight, typical = spec["weight"], spec.get("typical", 0.0)
                for key, value in (("weight", weight), ("typical", typical)):
                    if isinstance(value, bool) or not isinstance(value, int | float):
                        raise ValueError(f"'key_features.features.{name}.{key}' in scoring config must be a "
                                         f"number, got {value!r}")
                if typical < 0:
                    raise ValueError(f"'key_features.features.{name}.typical' must be >= 0")
                items.append((str(name), float(weight), float(typical)))
            object.__setattr__(self, "features", tuple(sorted(items)))
        elif not isinstance(raw, tuple):
            raise ValueError("'key_features.features' in scoring config must be a mapping")
        if not 1 <= self.window_days <= 35:
            raise ValueError("key_features.window_days must be within 1..35")

    @functools.cached_property
    def names(self) -> frozenset[str]:
        return frozenset(name for name, _, _ in self.features)


@dataclass(frozen=True)
class TenureRule:
    full_days: int = 365            # score = 100 * min(1, days since the first event / full_days)


@dataclass(frozen=True)
class ChampionInactiveRule:
    """A champion who used the product habitually has stopped, while the account carries on."""

    gap_factor: float = 3.0         # silent >= gap_factor * the person's usual gap ...
    min_silent_days: int = 12       # ... and at least this many days: a week off, last seen on a Friday
                                    # and back on the Monday after next, is 9 silent days; a day skipped
                                    # on either side, or a time zone moving the UTC day, adds one or two
    min_active_days: int = 12       # the person's own active days (of the 64 kept) before judging
    max_usual_gap_days: int = 7     # only people who use the product at least weekly are judged


@dataclass(frozen=True)
class TicketSpikeRule:
    """Tickets opened well above the account's own rate, judged over a burst and over the week.

    The test runs at every ticket of every account, over several windows: the probability bound is
    small enough that chance alone rarely crosses it among hundreds of accounts checked every day.
    """

    recent_days: int = 7
    burst_days: int = 3             # also judged over the last 1..burst_days days (today included)
    min_count: int = 6              # never a spike below this many opened tickets in the window
    factor: float = 4.0             # and at least factor * the usual weekly rate ...
    max_probability: float = 1e-5   # ... and P(X >= n | Poisson(usual rate over the window)) below this
    min_baseline: float = 0.5       # floor of the weekly baseline (new or ticket-free accounts)
    resolve_below: int = 3          # clears when fewer than max(this, 2 * baseline) remain in the week
    stale_open_days: int = 60       # an open ticket untouched this long stops counting as open


@dataclass(frozen=True)
class SentimentRule:
    window_days: int = 90           # responses older than this are forgotten
    key_window_days: int = 60       # a key contact's detractor answer counts this long
    nps_detractor_max: int = 6      # NPS 0-6
    csat_detractor_max: int = 2     # CSAT 1-2
    detractor_normalized_max: float = -0.5  # other sources (and scored text)
    trend_days: int = 30            # "recent" responses for the trend
    trend_min_samples: int = 3
    trend_min_negative: int = 3     # recent answers below zero needed for a trend (a lone bad week of
                                    # surveys on a happy account is chance)
    trend_drop: float = 0.40        # recent mean at least this far below the earlier mean ...
    trend_negative_mean: float = -0.10  # ... and recent mean below this
    trend_min_earlier: int = 2      # a trend needs this many earlier answers to compare with

    @functools.cached_property
    def window_edges(self) -> tuple[int, ...]:
        """The ages (days after an answer's day) at which it moves between windows: into the window,
        out of the trend's recent days, out of the key-contact window, out of the window."""
        return tuple(sorted({0, self.trend_days, self.key_window_days, self.window_days}))


@dataclass(frozen=True)
class RenewalRule:
    within_days: int = 90
    resolve_margin: float = 5.0     # clears once the score is this far above the green threshold
    proximity_start_days: int = 180  # the renewal component starts weighing health in from here
    proximity_full_days: int = 30
    amplify: float = 2.0            # near renewal, each point of missing health costs this many


@dataclass(frozen=True)
class HealthDropRule:
    drop: float = 20.0
    within_days: int = 7
    resolve_drop: float = 15.0      # hysteresis
    min_history_days: int = 28      # the components build their baselines over the first four weeks


@dataclass(frozen=True)
class ScoringConfig:
    version: str = DEFAULT_VERSION
    green_at: float = 70.0
    yellow_at: float = 40.0
    snapshot_min_change: float = 1.0    # history rows only on a change of at least this many points
    weights: Weights = field(default_factory=Weights)
    usage_drop: UsageDropRule = field(default_factory=UsageDropRule)
    champion_inactive: ChampionInactiveRule = field(default_factory=ChampionInactiveRule)
    ticket_spike: TicketSpikeRule = field(default_factory=TicketSpikeRule)
    sentiment: SentimentRule = field(default_factory=SentimentRule)
    renewal: RenewalRule = field(default_factory=RenewalRule)
    health_drop: HealthDropRule = field(default_factory=HealthDropRule)
    lapse: LapseRule = field(default_factory=LapseRule)
    intensity: IntensityRule = field(default_factory=IntensityRule)
    key_features: KeyFeaturesRule = field(default_factory=KeyFeaturesRule)
    tenure: TenureRule = field(default_factory=TenureRule)
    calibration: str = ""               # what the weights were fitted on (written by `churnsignal calibrate`)

    def __post_init__(self) -> None:
        if not 0 <= self.yellow_at < self.green_at <= 100:
            raise ValueError(f"tier thresholds need 0 <= yellow_at < green_at <= 100, got "
                             f"yellow_at={self.yellow_at}, green_at={self.green_at}")
        weights = [self.weights.of(c) for c in COMPONENTS]
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError("component weights must be >= 0 and not all zero")
        if self.usage_drop.recent_days * (self.usage_drop.norm_windows + 2) > 56:
            raise ValueError("usage_drop windows exceed the 56 days of usage kept per account")
        if self.ticket_spike.recent_days >= 56:
            raise ValueError("ticket_spike.recent_days must be below the 56 days kept per account")
        if not 1 <= self.ticket_spike.burst_days <= self.ticket_spike.recent_days:
            raise ValueError("ticket_spike.burst_days must be within 1..recent_days")
        lapse = self.lapse
        if not 0 < lapse.open_below < 1:
            raise ValueError("lapse.open_below must be between 0 and 1")
        if lapse.prior_gap_days <= 0 or lapse.prior_weight <= 0 or lapse.dropout_a <= 0 or lapse.dropout_b <= 0:
            raise ValueError("lapse.prior_gap_days, prior_weight, dropout_a and dropout_b must be > 0")
        if not 1 <= lapse.max_regularity <= 20 or not 0 <= lapse.break_share < 1 or lapse.max_break_days < 0 \
                or not 0 <= lapse.skip_share < 1 or lapse.break_share + lapse.skip_share >= 1:
            raise ValueError("lapse needs 1 <= max_regularity <= 20, max_break_days >= 0, break_share and "
                             "skip_share >= 0 and together below 1")
        if self.intensity.typical < 0 or not 1 <= self.intensity.window_days <= BREADTH_WINDOW_DAYS:
            raise ValueError(f"intensity needs typical >= 0 and window_days within 1..{BREADTH_WINDOW_DAYS}")
        if self.tenure.full_days < 1:
            raise ValueError("tenure.full_days must be >= 1")

    @functools.cached_property
    def component_weights(self) -> tuple[float, ...]:
        """The configured weight of every component, in COMPONENTS order."""
        return tuple(self.weights.of(c) for c in COMPONENTS)

    def tier(self, score: float | None) -> str:
        if score is None:
            return "unknown"
        if score >= self.green_at:
            return "green"
        if score >= self.yellow_at:
            return "yellow"
        return "red"

    @classmethod
    def load(cls, path: str | Path | None) -> ScoringConfig:
        """The configuration from a YAML file, or the defaults when `path` is None."""
        if path is None:
            return cls()
        raw_text = Path(path).read_bytes()
        data = yaml.safe_load(raw_text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"scoring config {path}: the top level must be a mapping")
        return cls.from_dict(data, default_version="sha-" + hashlib.sha256(raw_text).hexdigest()[:12])

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, default_version: str = DEFAULT_VERSION) -> ScoringConfig:
        data = dict(data)
        version = data.pop("version", None)
        kwargs = _build(cls, data, "")
        kwargs["version"] = str(version) if version is not None else default_version
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["key_features"]["features"] = {name: {"weight": weight, "typical": typical}
                                           for name, weight, typical in self.key_features.features}
        return out


def _build(kind: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    known = {f.name: f for f in fields(kind) if f.name != "version"}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{where}{key}"
        if key not in known:
            raise ValueError(f"unknown key '{name}' in scoring config (known: {', '.join(sorted(known))})")
        spec = known[key]
        default = (spec.default_factory() if spec.default_factory is not dataclasses.MISSING  # type: ignore[misc]
                   else spec.default)
        if dataclasses.is_dataclass(default) and not isinstance(default, type):
            if not isinstance(value, dict):
                raise ValueError(f"'{name}' in scoring config must be a mapping")
            out[key] = type(default)(**_build(type(default), value, f"{name}."))
        else:
            out[key] = _coerce(name, value, default)
    return out


def _coerce(name: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool) or isinstance(value, bool):
        raise ValueError(f"'{name}' in scoring config must be a number")
    if isinstance(default, int):
        if not isinstance(value, int):
            raise ValueError(f"'{name}' in scoring config must be a whole number, got {value!r}")
        return value
    if isinstance(default, float):
        if not isinstance(value, int | float):
            raise ValueError(f"'{name}' in scoring config must be a number, got {value!r}")
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ValueError(f"'{name}' in scoring config must be a string, got {value!r}")
    return value
