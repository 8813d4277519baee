"""Per-source options: how each vendor's events find their account, and the survey fields to read.

Read once at start-up from the YAML file `CHURNSIGNAL_SOURCES_FILE` (optional; every option has a default).
One top-level key per source, e.g.:

    zendesk:
      account_field: organization_id      # the ticket field naming the account (detail.<field>)
      accounts: {"8447346622462": acme}    # its value -> our account_id; values not listed are the account
    intercom:
      account_field: account_id           # the conversation attribute (custom_attributes.<field>)
    hubspot:
      accounts: {"1246965": acme}          # ticket objectId -> account_id (the webhook carries no company)
      closed_stages: ["4"]                 # hs_pipeline_stage values that close a ticket
    typeform:
      account_field: account_id           # the hidden field holding the account
      score_field: nps_score              # the score question (ref or id); default: first nps / opinion
      kind: nps                           #   scale / rating answer, kind nps / nps / csat by its type
      comment_field: why                  # default: the first long_text answer
      contact_field: email                # hidden field naming the respondent; default: first email answer
    delighted:
      account_field: account_id           # the person property (event_data.person_properties.<field>)

Everywhere, `?account_id=` on the webhook URL wins over all of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    accounts: dict[str, str] = Field(default_factory=dict)

    @field_validator("accounts", mode="before")
    @classmethod
    def _text_keys(cls, value: Any) -> Any:
        # YAML reads unquoted ids as numbers: `12345: acme` maps the id "12345".
        if isinstance(value, dict):
            return {str(k): str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                    for k, v in value.items()}
        return value


class ZendeskOptions(_Options):
    account_field: str = Field(default="organization_id", min_length=1)


class IntercomOptions(_Options):
    account_field: str = Field(default="account_id", min_length=1)


class HubSpotOptions(_Options):
    closed_stages: list[str] = Field(default_factory=lambda: ["4"])

    @field_validator("closed_stages", mode="before")
    @classmethod
    def _text_stages(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value


class TypeformOptions(_Options):
    account_field: str = Field(default="account_id", min_length=1)
    score_field: str | None = None
    kind: Literal["nps", "csat"] | None = None
    comment_field: str | None = None
    contact_field: str | None = None


class DelightedOptions(_Options):
    account_field: str = Field(default="account_id", min_length=1)


class SourceOptions(BaseModel):
    """Every source's options (the defaults when the file leaves a source out)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    zendesk: ZendeskOptions = Field(default_factory=ZendeskOptions)
    intercom: IntercomOptions = Field(default_factory=IntercomOptions)
    hubspot: HubSpotOptions = Field(default_factory=HubSpotOptions)
    typeform: TypeformOptions = Field(default_factory=TypeformOptions)
    delighted: DelightedOptions = Field(default_factory=DelightedOptions)


def parse_options(text: str) -> SourceOptions:
    """The options of a sources file's text; ValueError naming the bad key."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError("a sources file is a mapping with one key per source (zendesk, intercom, ...)")
    try:
        return SourceOptions.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))
        raise ValueError(problems) from None


def load_options(path: str | None) -> SourceOptions:
    """The options of `CHURNSIGNAL_SOURCES_FILE`, or the defaults when it is not set."""
    if not path:
        return SourceOptions()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the sources file {path}: {exc.strerror}") from None
    try:
        return parse_options(text)
    except ValueError as exc:
        raise ValueError(f"{exc} (in {path})") from None
