from __future__ import annotations

from datetime import timedelta

import pytest

from services.alerts.domain.silences import Silence, is_silenced, matching_silence, validate_silence
from tests.domain.alerts.factories import NOW, make_risk


def silence(account_id: str = "acme", types: frozenset[str] = frozenset(), hours: float = 1, sid: str = "s1"):
    return Silence(id=sid, account_id=account_id, types=types, until=NOW + timedelta(hours=hours),
                   reason="renewal call this week", created_by="admin")


def test_account_silence_covers_every_type() -> None:
    assert is_silenced([silence()], make_risk(type="ticket_spike"), NOW)
    assert not is_silenced([silence()], make_risk(account_id="globex"), NOW)


def test_typed_silence_covers_only_its_types() -> None:
    s = silence(types=frozenset({"ticket_spike"}))
    assert is_silenced([s], make_risk(type="ticket_spike"), NOW)
    assert not is_silenced([s], make_risk(type="champion_left"), NOW)


def test_expired_silence_does_not_apply() -> None:
    s = silence(hours=1)
    assert is_silenced([s], make_risk(), NOW + timedelta(minutes=59))
    assert not is_silenced([s], make_risk(), NOW + timedelta(hours=1))


def test_longest_matching_silence_is_reported() -> None:
    short, long_ = silence(hours=1, sid="short"), silence(hours=5, sid="long")
    assert matching_silence([short, long_], make_risk(), NOW).id == "long"


def test_validate_silence() -> None:
    assert validate_silence("acme", ["usage_drop"], NOW + timedelta(hours=1), "x", now=NOW) == {"usage_drop"}
    with pytest.raises(ValueError, match="types: unknown risk type"):
        validate_silence("acme", ["usage_dorp"], NOW + timedelta(hours=1), "x", now=NOW)
    with pytest.raises(ValueError, match="until: must be in the future"):
        validate_silence("acme", [], NOW, "x", now=NOW)
    with pytest.raises(ValueError, match="until: must carry a timezone"):
        validate_silence("acme", [], (NOW + timedelta(hours=1)).replace(tzinfo=None), "x", now=NOW)
    with pytest.raises(ValueError, match="account_id"):
        validate_silence("", [], NOW + timedelta(hours=1), "x", now=NOW)
