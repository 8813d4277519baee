"""The Segment mapping's configuration: the defaults shipped in `mapping.yaml`, overridden by the file
`CHURNSIGNAL_SEGMENT_MAPPING_FILE` names (objects merge key by key, lists and values replace).

A bad file fails at start-up with the file and the key named (`SegmentMappingError`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULTS = Path(__file__).with_name("mapping.yaml")

ROLES = ("champion", "sponsor", "admin", "user")
STATUSES = ("active", "left")
_RESERVED_CONTACT_FIELDS = ("contact_id", "user_id")


class SegmentMappingError(ValueError):
    """The mapping file cannot be used; the message names the file and the key."""


def normalize(name: str) -> str:
    """A Segment field name as matched: case and the separators `_`, `-` and spaces ignored."""
    return name.replace("_", "").replace("-", "").replace(" ", "").casefold()


@dataclass(frozen=True, slots=True)
class Part:
    """One step of a path: the name as configured, and as matched."""

    name: str
    key: str


FieldPath = tuple[Part, ...]


def parse_path(text: str) -> FieldPath:
    return tuple(Part(p, normalize(p)) for p in text.split("."))


def shown(path: FieldPath) -> str:
    return ".".join(p.name for p in path)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _paths(value: list[str]) -> list[str]:
    for text in value:
        if not text or any(not part.strip() for part in text.split(".")):
            raise ValueError(f"'{text}' is not a field path (names joined by dots, e.g. context.groupId)")
    return value


class _UsageRule(_Strict):
    enabled: bool = True
    feature_from: list[str] = Field(default_factory=list)

    _check = field_validator("feature_from")(_paths)


class _Fields(_Strict):
    enabled: bool = True
    fields: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("fields")
    @classmethod
    def _check_fields(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, paths in value.items():
            if not name or any(not part for part in name.split(".")):
                raise ValueError(f"'{name}' is not a field name")
            _paths(paths)
        return value


class _Identify(_Fields):
    roles: dict[str, Literal["champion", "sponsor", "admin", "user"]] = Field(default_factory=dict)
    statuses: dict[str, Literal["active", "left"]] = Field(default_factory=dict)

    @field_validator("fields")
    @classmethod
    def _not_the_user(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        taken = [name for name in value if name in _RESERVED_CONTACT_FIELDS]
        if taken:
            raise ValueError(f"{', '.join(taken)} come from the message's userId (else anonymousId), not from "
                             "traits")
        return value


class _File(_Strict):
    id_prefix: str = Field(default="segment:", max_length=32)
    account_from: list[str] = Field(default_factory=list)
    track: _UsageRule = _UsageRule()
    page: _UsageRule = _UsageRule()
    screen: _UsageRule = _UsageRule()
    group: _Fields = _Fields()
    identify: _Identify = _Identify()

    _check = field_validator("account_from")(_paths)


@dataclass(frozen=True, slots=True)
class UsageRule:
    enabled: bool
    feature_from: tuple[FieldPath, ...]


@dataclass(frozen=True, slots=True)
class TraitRule:
    """`fields`: (the field of the event's data, as a path inside it; the trait paths tried in order)."""

    enabled: bool
    fields: tuple[tuple[tuple[str, ...], tuple[FieldPath, ...]], ...]
    roles: Mapping[str, str]
    statuses: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class SegmentMapping:
    """What `services.ingest.segment.mapping` maps by (see mapping.yaml for each key)."""

    id_prefix: str
    account_from: tuple[FieldPath, ...]
    track: UsageRule
    page: UsageRule
    screen: UsageRule
    group: TraitRule
    identify: TraitRule

    @classmethod
    def load(cls, path: str | Path | None = None) -> SegmentMapping:
        """The defaults, overridden by the file at `path` when given."""
        merged = _read(DEFAULTS)
        if path is not None:
            merged = _merge(merged, _read(Path(path)))
        try:
            parsed = _File.model_validate(merged)
        except ValidationError as exc:
            where = DEFAULTS if path is None else path
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
            raise SegmentMappingError(f"Segment mapping {where}: {problems}") from None
        return cls._from(parsed)

    @classmethod
    def _from(cls, f: _File) -> SegmentMapping:
        def usage(rule: _UsageRule) -> UsageRule:
            return UsageRule(rule.enabled, tuple(parse_path(p) for p in rule.feature_from))

        def traits(rule: _Fields) -> TraitRule:
            fields = tuple((tuple(name.split(".")), tuple(parse_path(p) for p in paths))
                           for name, paths in rule.fields.items())
            roles = {normalize_value(k): v for k, v in getattr(rule, "roles", {}).items()}
            statuses = {normalize_value(k): v for k, v in getattr(rule, "statuses", {}).items()}
            return TraitRule(rule.enabled, fields, roles, statuses)

        return cls(id_prefix=f.id_prefix, account_from=tuple(parse_path(p) for p in f.account_from),
                   track=usage(f.track), page=usage(f.page), screen=usage(f.screen), group=traits(f.group),
                   identify=traits(f.identify))


def normalize_value(value: str) -> str:
    """A role or status value as matched: case and surrounding or repeated spaces ignored."""
    return " ".join(value.split()).casefold()


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SegmentMappingError(f"Segment mapping {path}: cannot be read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise SegmentMappingError(f"Segment mapping {path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SegmentMappingError(f"Segment mapping {path}: the top level must be a mapping of keys")
    return data


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
