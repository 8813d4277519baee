"""The sentiment signal: the answers (NPS, CSAT, surveys, conversations, reviews) in windows ending on the
day of the moment evaluated, and the latest detractor among the key contacts.

How an answer gets its value is `sentiment.py`; this module only measures the answers kept in the state.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from .config import ScoringConfig
from .state import (
    C_NAME,
    C_ROLE,
    ROLES,
    S_CONTACT,
    S_NORM,
    S_RAW,
    S_SOURCE,
    S_TS,
    SOURCES,
    AccountState,
    stable_hash,
)

DAY = 86_400


@dataclass(slots=True)
class SentimentSignal:
    count: int = 0
    mean: float | None = None        # weighted: detractors and key contacts weigh double
    detractors: int = 0
    recent_mean: float | None = None
    recent_count: int = 0
    recent_negative: int = 0         # recent answers below zero
    earlier_mean: float | None = None
    earlier_count: int = 0
    key_detractor: dict[str, Any] | None = None


_NPS, _CSAT = SOURCES.index("nps"), SOURCES.index("csat")


def is_detractor(cfg: ScoringConfig, source: int, raw_x10: int, norm_milli: int) -> bool:
    rule = cfg.sentiment
    if raw_x10 >= 0 and SOURCES[source] == "nps":
        return raw_x10 <= rule.nps_detractor_max * 10
    if raw_x10 >= 0 and SOURCES[source] == "csat":
        return raw_x10 <= rule.csat_detractor_max * 10
    return norm_milli <= rule.detractor_normalized_max * 1000


def _sentiment(st: AccountState, cfg: ScoringConfig, a: int,
               key_contacts: list[tuple[str, list[Any]]]) -> SentimentSignal:
    out = SentimentSignal()
    if not st.sentiments:
        return out
    rule = cfg.sentiment
    end = (a + 1) * DAY
    start = (a - rule.window_days + 1) * DAY
    recent_start = (a - rule.trend_days + 1) * DAY
    key_start = (a - rule.key_window_days + 1) * DAY
    key = {stable_hash(cid): (cid, c) for cid, c in key_contacts}
    # `is_detractor`, inlined: this loop runs at most evaluations.
    nps_max, csat_max = rule.nps_detractor_max * 10, rule.csat_detractor_max * 10
    normalized_max = rule.detractor_normalized_max * 1000
    wsum = wtot = 0.0
    rsum = esum = 0.0
    latest_by_key: dict[int, list[int]] = {}
    for s in st.sentiments:
        ts = s[S_TS]
        if not start <= ts < end:
            continue
        norm = s[S_NORM] / 1000.0
        raw, source = s[S_RAW], s[S_SOURCE]
        if raw >= 0 and source == _NPS:
            det = raw <= nps_max
        elif raw >= 0 and source == _CSAT:
            det = raw <= csat_max
        else:
            det = s[S_NORM] <= normalized_max
        by_key = s[S_CONTACT] in key
        weight = (2.0 if det else 1.0) * (2.0 if by_key else 1.0)
        wsum += weight * norm
        wtot += weight
        out.count += 1
        out.detractors += det
        if ts >= recent_start:
            rsum += norm
            out.recent_count += 1
            out.recent_negative += norm < 0
        else:
            esum += norm
            out.earlier_count += 1
        if by_key and ts >= key_start:
            latest_by_key[s[S_CONTACT]] = s  # samples are kept in time order: the last one wins
    if out.count:
        out.mean = wsum / wtot
    if out.recent_count:
        out.recent_mean = rsum / out.recent_count
    if out.earlier_count:
        out.earlier_mean = esum / out.earlier_count
    worst: list[int] | None = None
    for h, s in latest_by_key.items():
        if is_detractor(cfg, s[S_SOURCE], s[S_RAW], s[S_NORM]) and (
                worst is None or (s[S_TS], h) > (worst[S_TS], worst[S_CONTACT])):
            worst = s
    if worst is not None:
        cid, c = key[worst[S_CONTACT]]
        src = SOURCES[worst[S_SOURCE]]
        out.key_detractor = {
            "contact_id": cid, "contact": c[C_NAME] or cid, "role": ROLES[c[C_ROLE]], "source": src,
            "score": (worst[S_RAW] / 10 if worst[S_RAW] % 10 else worst[S_RAW] // 10)
            if worst[S_RAW] >= 0 else round(worst[S_NORM] / 1000, 2),
            "answered_at": worst[S_TS],
        }
    return out


_FAR = 1 << 40   # days: further than any event


def _sentiment_days(st: AccountState, cfg: ScoringConfig, a: int) -> tuple[int, int]:
    """The days around `a` throughout which every answer stays inside or outside each window of
    `_sentiment` (so that what it measures on `a` holds on all of them)."""
    edges = cfg.sentiment.window_edges
    back = ahead = _FAR
    for s in st.sentiments:
        age = a - s[S_TS] // DAY
        i = bisect_right(edges, age)   # edges[i - 1] <= age < edges[i]
        if i and age - edges[i - 1] < back:
            back = age - edges[i - 1]
        if i < len(edges) and edges[i] - age < ahead:
            ahead = edges[i] - age
    return a - back, a + ahead - 1
