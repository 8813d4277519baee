"""The key contacts (champions and sponsors): who left, and how long each habitual user has been silent
on complete days before the last clock tick."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import ScoringConfig
from .state import C_FIRST, C_LEFT, C_NAME, C_ROLE, C_SINCE, C_STATUS, C_USER, K_GAP, NONE, ROLES, AccountState


@dataclass(slots=True)
class KeyContact:
    contact_id: str
    name: str
    role: str
    left: bool
    departed_unreplaced: bool = False
    left_ts: int = NONE
    has_usage: bool = False
    days_silent: int | None = None
    usual_gap: int | None = None
    threshold: float | None = None   # days of silence that count as stopped; None: not a habitual user


def contact_label(k: KeyContact) -> str:
    return f"{k.name} ({k.role})"


def _key_contacts(st: AccountState, cfg: ScoringConfig, d: int,
                  items: list[tuple[str, list[Any]]]) -> list[KeyContact]:
    rule = cfg.champion_inactive
    named_at = [c[C_SINCE] for _, c in items if c[C_STATUS] != 1 and c[C_SINCE] != NONE]
    out: list[KeyContact] = []
    for cid, c in items:
        name, role = c[C_NAME] or cid, ROLES[c[C_ROLE]]
        if c[C_STATUS] == 1:   # left
            left_ts = c[C_LEFT]
            confirmed = left_ts != NONE and c[C_FIRST] < left_ts
            out.append(KeyContact(cid, name, role, True, confirmed and not any(t > left_ts for t in named_at),
                                  left_ts))
            continue
        rec = st.key_users.get(c[C_USER]) if c[C_USER] else None
        last = None
        if rec is not None and d != NONE:
            last = st.user_last_active_day(rec, d)
        if rec is None or last is None:
            out.append(KeyContact(cid, name, role, False))
            continue
        usual_gap = rec[K_GAP] or None
        threshold = None
        # Only a habitual user's silence means something: a sponsor who looks in every other week is
        # not judged on a month without a login.
        if usual_gap is not None and usual_gap <= rule.max_usual_gap_days:
            threshold = max(rule.gap_factor * usual_gap, float(rule.min_silent_days))
        out.append(KeyContact(cid, name, role, False, False, NONE, True, d - 1 - last, usual_gap, threshold))
    return out
