"""The risk event (docs/events.md): what scoring publishes on the `risks` topic and alerts consumes."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal, get_args

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared.events import NUL_ESCAPE, NUL_MESSAGE, json_may_hold_nul, nul_locations

RiskType = Literal["champion_left", "champion_inactive", "usage_drop", "ticket_spike", "sentiment_drop",
                   "renewal_risk", "health_drop"]
Severity = Literal["low", "medium", "high", "critical"]
Transition = Literal["opened", "updated", "resolved"]
Tier = Literal["green", "yellow", "red", "unknown"]

# The one list of each: everything else imports these (scoring stores a severity as its index here).
RISK_TYPES: tuple[str, ...] = get_args(RiskType)
SEVERITIES: tuple[str, ...] = get_args(Severity)      # lowest first
SEVERITY_RANK: dict[str, int] = {severity: rank for rank, severity in enumerate(SEVERITIES)}


class Trigger(BaseModel):
    model_config = ConfigDict(frozen=True)

    event_id: str
    received_at: AwareDatetime | None = None


class HealthBrief(BaseModel):
    model_config = ConfigDict(frozen=True)

    score: float | None
    tier: Tier
    reasons: list[str] = Field(default_factory=list)  # main reasons, most important first


class CsmRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    email: str | None = None
    slack_user_id: str | None = None
    name: str | None = None


class AccountBrief(BaseModel):
    """The account facts scoring knows when the risk moved (alerts routes on these)."""

    model_config = ConfigDict(frozen=True)

    name: str | None = None
    csm: CsmRef | None = None
    segment: str | None = None
    arr: float | None = None
    renewal_date: date | None = None
    crm_url: str | None = None      # the account's CRM page (an http(s) URL), when account events give one


class RiskEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    event_id: str            # unique per transition: f"{risk_id}:{seq}"
    risk_id: str
    seq: int                 # 1 for opened, then +1 per transition of this risk
    transition: Transition
    account_id: str
    type: RiskType
    severity: Severity
    summary: str
    evidence: dict[str, Any]
    health: HealthBrief
    account: AccountBrief = Field(default_factory=AccountBrief)
    occurred_at: AwareDatetime      # event time
    detected_at: AwareDatetime      # wall clock when scoring decided it
    trigger: Trigger | None = None
    config_version: str | None = None

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> RiskEvent:
        """The risk event of a record. Raises ValidationError (a ValueError) when it is not a valid one,
        including when any of its strings holds U+0000, which alerts could never store in PostgreSQL."""
        # JSON carries U+0000 only escaped: the strings are walked only when the escape is in the text.
        if ((isinstance(raw, str) and _NUL_ESCAPE_TEXT in raw)
                or (isinstance(raw, bytes | bytearray) and json_may_hold_nul(raw))):
            _reject_nul(raw)
        return cls.model_validate_json(raw)


_NUL_ESCAPE_TEXT = NUL_ESCAPE.decode()


def _reject_nul(raw: bytes | str) -> None:
    """Raise ValidationError naming every string of the JSON text that holds U+0000 (invalid JSON is left
    to the model to report). The error carries locations only, never the offending text."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return
    found = nul_locations(parsed)
    if found:
        errors = [InitErrorDetails(type=PydanticCustomError("nul_character", f"key {NUL_MESSAGE}" if is_key
                                                            else NUL_MESSAGE), loc=loc, input=None)
                  for loc, is_key in found]
        raise ValidationError.from_exception_data(RiskEvent.__name__, errors)


def severity_rises(old: str, new: str) -> bool:
    return SEVERITY_RANK[new] > SEVERITY_RANK[old]


_ = datetime  # re-exported type used in annotations by importers
