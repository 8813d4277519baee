"""A risk's evidence as sentences a CSM reads (Slack, e-mail, the account page): people by name, numbers with units.

Pure. The evidence keys are those of `services/scoring/domain/detectors.py` (one branch per risk type,
every key used); a key this module does not know yet still gets a plain sentence, so nothing is hidden.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

CHURNED = "account churned"
_ROLES = {"champion", "sponsor", "admin", "user"}
_SOURCES = {"nps": "an NPS score", "csat": "a CSAT score", "survey": "a survey score",
            "conversation": "a conversation score", "review": "a review score"}


def evidence_sentences(risk_type: str, evidence: Mapping[str, Any], names: Mapping[str, str]) -> list[str]:
    """Sentences telling `evidence` of a `risk_type` risk. `names` maps contact ids to names (from the
    account's contacts), used when the evidence holds no name; a person without one is "a contact"."""
    e = dict(evidence)
    if e.get("reason") == CHURNED:
        out = ["Closed because the account churned."]
        e.pop("reason")
    else:
        writer = _WRITERS.get(risk_type)
        out = writer(e, names) if writer is not None else []
    return [s[:1].upper() + s[1:] for s in out + _leftovers(risk_type, e)]


# -- per risk type -----------------------------------------------------------------------------------------

def _champion_left(e: dict[str, Any], names: Mapping[str, str]) -> list[str]:
    people = _list(e.pop("contacts", None))
    count = _int(e.pop("count", None))
    out = []
    for p in people:
        when = _day(p.get("left_at"))
        out.append(f"{_who(p, names)} left{f' on {when}' if when else ''}.")
    more = (count or len(people)) - len(people)
    if more > 0:
        out.append(f"{more} more key {_plural(more, 'contact')} left as well.")
    return out


def _champion_inactive(e: dict[str, Any], names: Mapping[str, str]) -> list[str]:
    people = _list(e.pop("contacts", None))
    count = _int(e.pop("count", None))
    uses = e.pop("account_uses_7d", None)
    out = []
    for p in people:
        days = _int(p.get("days_since_last_use"))
        gap = p.get("usual_gap_days")
        usual = f" (usually every {_days(gap)})" if _num(gap) else ""
        silent = f"for {_days(days)}" if days is not None else "for a while"
        out.append(f"{_who(p, names)} has not used the product {silent}{usual}.")
    more = (count or len(people)) - len(people)
    if more > 0:
        out.append(f"{more} more key {_plural(more, 'contact')} went quiet too.")
    if _num(uses):
        out.append(f"The rest of the account stays active: {_count(uses, 'use')} in the last 7 days.")
    return out


def _usage_drop(e: dict[str, Any], names: Mapping[str, str]) -> list[str]:
    mode = e.pop("mode", None)
    if mode == "lapsed":
        return _lapsed(e)
    out = []
    level = e.pop("level", None)
    judged = _int(e.pop("judged_days", None)) or 7
    measured = e.pop("measured_in", None)
    unit = "active user-days" if measured == "active_user_days" else "uses"
    uses, usual = e.pop("uses_7d", None), e.pop("usual_7d", None)
    ratio = e.pop("ratio", None)
    user_days, usual_user_days = e.pop("active_user_days_7d", None), e.pop("usual_active_user_days_7d", None)
    silent, gap = e.pop("days_silent", None), e.pop("usual_gap_days", None)
    if mode == "silent":
        out.append(f"No product usage for {_days(silent)}" + (f" (usually active every {_days(gap)})."
                                                                if _num(gap) else "."))
    if _num(level) is not None:
        fell = round((1 - float(level)) * 100)
        if fell > 0:
            out.append(f"Usage fell {fell}% over {_days(judged)} (measured in {unit}).")
        else:
            out.append(f"Usage is at {round(float(level) * 100)}% of its usual level over {_days(judged)}.")
    if _num(uses) is not None:
        out.append(f"{_count(uses, 'use')} in the last 7 days" + (f" (usual {_fmt(usual)})." if _num(usual)
                                                                   is not None else "."))
    if _num(ratio) is not None and (level is None or round(float(ratio), 2) != round(float(level), 2)):
        out.append(f"Uses are at {round(float(ratio) * 100)}% of the usual week.")
    if _num(user_days) is not None:
        tail = f" (usual {_fmt(usual_user_days)})." if _num(usual_user_days) is not None else "."
        out.append(f"{_fmt(user_days)} active user-days in the last 7 days{tail}")
    if mode != "silent" and _num(silent):
        out.append(f"No usage for the last {_days(silent)}" + (f" (usually active every {_days(gap)})."
                                                                 if _num(gap) else "."))
    elif mode != "silent" and _num(gap):
        out.append(f"The account is usually active every {_days(gap)}.")
    return out


def _lapsed(e: dict[str, Any]) -> list[str]:
    silent, gap = e.pop("days_silent", None), e.pop("usual_gap_days", None)
    visits, p_active = e.pop("visits", None), e.pop("p_active", None)
    uses = e.pop("uses_7d", None)
    out = [f"No activity for {_days(silent)}."]
    rhythm = f"about every {_days(gap)}" if _num(gap) is not None and float(gap) >= 1.5 else "about daily"
    history = f" ({_count(visits, 'active day')} in all)" if _num(visits) is not None else ""
    out.append(f"The account used to be active {rhythm}{history}.")
    if _num(p_active) is not None:
        out.append(f"The chance it is still active is {round(float(p_active) * 100)}%.")
    if _num(uses) is not None:
        out.append(f"{_count(uses, 'use')} in the last 7 days.")
    return out


def _ticket_spike(e: dict[str, Any], names: Mapping[str, str]) -> list[str]:
    opened, usual = e.pop("opened_7d", None), e.pop("usual_per_week", None)
    open_now, urgent = e.pop("open_tickets", None), e.pop("urgent_open", None)
    burst = e.pop("burst", None)
    out = [f"{_count(opened, 'ticket')} opened in 7 days" + (f" (usual {_fmt(usual)} per week)."
                                                             if _num(usual) is not None else ".")]
    if isinstance(burst, Mapping) and _num(burst.get("opened")) is not None:
        days = _int(burst.get("days")) or 1
        out.append(f"{_fmt(burst['opened'])} of them within {'a day' if days == 1 else _days(days)}.")
    if _num(open_now) is not None:
        urgent_part = f", {_fmt(urgent)} of them urgent" if _num(urgent) else ""
        out.append(f"{_count(open_now, 'ticket')} still open{urgent_part}.")
    elif _num(urgent):
        out.append(f"{_count(urgent, 'urgent ticket')} still open.")
    return out


def _sentiment_drop(e: dict[str, Any], names: Mapping[str, str]) -> list[str]:
    mode = e.pop("mode", None)
    if mode == "key_detractor":
        person = {"contact_id": e.pop("contact_id", None), "name": e.pop("contact", None),
                  "role": e.pop("role", None)}
        source, score = e.pop("source", None), e.pop("score", None)
        when = _day(e.pop("answered_at", None))
        what = _SOURCES.get(source, f"a {source} score" if source else "a score")
        return [f"{_who(person, names)} gave {what} of {_fmt(score)}{f' on {when}' if when else ''} "
                "(a detractor answer)."]
    recent, recent_n = e.pop("recent_mean", None), e.pop("recent_answers", None)
    earlier, earlier_n = e.pop("earlier_mean", None), e.pop("earlier_answers", None)
    out = [f"Average sentiment {_signed(recent)} over the last {_count(recent_n, 'answer')} (30 days)."]
    if _num(earlier) is not None:
        over = f" over {_count(earlier_n, 'answer')}" if _num(earlier_n) is not None else ""
        out.append(f"It was {_signed(earlier)}{over} in the two months before.")
    return out


def _renewal_risk(e: dict[str, Any], names: Mapping[str, str]) -> list[str]:
    days, when = e.pop("days_to_renewal", None), _day(e.pop("renewal_date", None))
    score, tier = e.pop("score", None), e.pop("tier", None)
    out = [f"Renews in {_days(days)}" + (f", on {when}." if when else ".")]
    if tier is not None or score is not None:
        score_part = f" (score {_fmt(score, 0)})" if _num(score) is not None else ""
        out.append(f"Health is {tier or 'unknown'}{score_part} so close to the renewal.")
    return out


def _health_drop(e: dict[str, Any], names: Mapping[str, str]) -> list[str]:
    frm, to, drop = e.pop("from", None), e.pop("to", None), e.pop("drop", None)
    within, factor = e.pop("within_days", None), e.pop("main_factor", None)
    span = f" within {_days(within)}" if _num(within) is not None else ""
    out = [f"Health fell {_count(round(float(drop)) if _num(drop) is not None else None, 'point')}{span}"
           + (f", from {_fmt(frm, 0)} to {_fmt(to, 0)}." if _num(frm) is not None and _num(to) is not None
              else ".")]
    if factor:
        out.append(f"Mostly {str(factor).replace('_', ' ')}.")
    return out


_WRITERS = {
    "champion_left": _champion_left,
    "champion_inactive": _champion_inactive,
    "usage_drop": _usage_drop,
    "ticket_spike": _ticket_spike,
    "sentiment_drop": _sentiment_drop,
    "renewal_risk": _renewal_risk,
    "health_drop": _health_drop,
}


def _leftovers(risk_type: str, e: dict[str, Any]) -> list[str]:
    """Keys the writers did not use (a newer detector's): one plain sentence each, raw ids left out."""
    out = []
    for key, value in e.items():
        if value is None or key.endswith("_id") or isinstance(value, Mapping | list):
            continue
        out.append(f"{key.replace('_', ' ').capitalize()}: {_fmt(value)}.")
    return out


# -- formatting --------------------------------------------------------------------------------------------

def _who(person: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """'Dana Smith (champion)'; never a raw contact id ('a contact' when no name is known)."""
    cid = person.get("contact_id")
    name = person.get("name")
    if not name or name == cid:
        name = names.get(cid) if isinstance(cid, str) else None
    if not name or name == cid:
        name = "a contact"
    role = person.get("role")
    return f"{name} ({role})" if role in _ROLES else str(name)


def _list(value: Any) -> list[Mapping[str, Any]]:
    return [p for p in value if isinstance(p, Mapping)] if isinstance(value, list) else []


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int(value: Any) -> int | None:
    n = _num(value)
    return None if n is None else int(n)


def _fmt(value: Any, digits: int = 1) -> str:
    n = _num(value)
    if n is None:
        return "unknown" if value is None else str(value)
    if n == int(n):
        return f"{int(n):,}"
    return f"{n:,.{digits}f}"


def _plural(n: float, word: str) -> str:
    return word if n == 1 else f"{word}s"


def _count(value: Any, word: str) -> str:
    n = _num(value)
    if n is None:
        return f"an unknown number of {word}s"
    return f"{_fmt(n)} {_plural(n, word)}"


def _days(value: Any) -> str:
    n = _num(value)
    if n is None:
        return "an unknown number of days"
    return f"{_fmt(n)} {_plural(n, 'day')}"


def _signed(value: Any) -> str:
    n = _num(value)
    return "unknown" if n is None else f"{n:+.2f}".replace("-", "\u2212")


def _day(value: Any) -> str | None:
    """The date of an ISO timestamp or date, as YYYY-MM-DD."""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value).date().isoformat()
    except ValueError:
        return value
