"""Configuration problems found before a command starts, each said in one line that names the variable.

Exit codes of the `churnsignal` command: 2 for a configuration error (a variable or a file to fix), 3 for a
dependency that cannot be reached or is not ready yet (Kafka, the database, its migrations: retrying later
may help). `StartupError` carries the lines and the code; the command prints them and exits, no traceback.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsError

from shared.settings import Settings

CONFIG_ERROR = 2
UNREACHABLE = 3

ENV_PREFIX = "CHURNSIGNAL_"

# `CHURNSIGNAL_*` variables read outside `Settings`: each is known, so that it is never reported as a typo.
OTHER_VARIABLES: Mapping[str, str] = {
    "CHURNSIGNAL_TEST_DATABASE_URL": "the test suite's and benchmarks' PostgreSQL (tests/conftest.py, bench/)",
    "CHURNSIGNAL_SIMULATE_API_KEY": "the simulator's API key (services/simulate/cli.py)",
    "CHURNSIGNAL_CACHE": "scripts/services.sh: jar cache",
    "CHURNSIGNAL_KAFKA_VERSION": "scripts/services.sh: Kafka version",
    "CHURNSIGNAL_KAFKA_HEAP": "scripts/services.sh: JVM heap options",
    "CHURNSIGNAL_START_TIMEOUT": "scripts/services.sh: seconds to wait for each server",
    "CHURNSIGNAL_PURE_PYTHON": "run the scoring domain from its Python source, not compiled "
                               "(services/scoring/domain/native.py)",
}

# Settings whose value is never echoed: not in errors, not in `check-config`'s report (besides SecretStr ones).
_ALSO_SECRET = frozenset({"database_url", "api_keys"})


class StartupError(Exception):
    """A problem that stops a command before it starts: one or a few lines, and the exit code."""

    exit_code = CONFIG_ERROR

    def __init__(self, *lines: str) -> None:
        super().__init__("\n".join(lines))
        self.lines = list(lines)


class ConfigError(StartupError):
    exit_code = CONFIG_ERROR


class DependencyUnavailable(StartupError):
    exit_code = UNREACHABLE


def variable(field: str) -> str:
    """The environment variable of a Settings field."""
    return f"{ENV_PREFIX}{field.upper()}"


def settings_variables() -> set[str]:
    return {variable(name) for name in Settings.model_fields}


def known_variables(extra: Iterable[str] = ()) -> set[str]:
    """Every `CHURNSIGNAL_*` name something reads: the settings, the scripts' and tests' own, and `extra`
    (names a routing file gives in `url_env` / `secret_env`)."""
    return settings_variables() | set(OTHER_VARIABLES) | {name.upper() for name in extra}


def unknown_variables(environ: Mapping[str, str], known: set[str]) -> list[str]:
    """One line per `CHURNSIGNAL_*` variable nothing reads, naming the closest known one. Names match
    case-insensitively, as the settings read them."""
    lines = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        # Compared without the prefix every name shares, which would make any two names look alike.
        suffixes = sorted(k.removeprefix(ENV_PREFIX) for k in known if k.startswith(ENV_PREFIX))
        close = difflib.get_close_matches(upper.removeprefix(ENV_PREFIX), suffixes, n=1, cutoff=0.6)
        hint = (f"; did you mean {ENV_PREFIX}{close[0]}?" if close
                else " (README.md, Configuration, lists the variables)")
        lines.append(f"unknown variable {name}{hint}")
    return lines


def secret_fields() -> frozenset[str]:
    """Settings fields holding a secret: their values never appear in errors or reports."""
    return frozenset(name for name, field in Settings.model_fields.items()
                     if _holds_secret(field.annotation)) | _ALSO_SECRET


def _holds_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    origin = typing.get_origin(annotation)
    if origin is None and not isinstance(annotation, types.UnionType):
        return False
    return any(_holds_secret(arg) for arg in typing.get_args(annotation))


def load_settings() -> Settings:
    """Settings from the environment, or ConfigError with one line per bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(*settings_problems(exc)) from None
    except SettingsError as exc:
        raise ConfigError(settings_source_problem(exc)) from None


# Pydantic's error types, said plainly.
_PLAIN = {
    "int_parsing": "not a valid integer",
    "int_type": "not a valid integer",
    "int_from_float": "not a whole number",
    "float_parsing": "not a valid number",
    "float_type": "not a valid number",
    "bool_parsing": "not a valid boolean (true or false)",
    "bool_type": "not a valid boolean (true or false)",
    "json_invalid": "not valid JSON",
    "string_type": "not a string",
    "list_type": "not a JSON list",
    "dict_type": "not a JSON object",
    "model_type": "not a JSON object",
    "missing": "missing",
}


def settings_problems(exc: ValidationError) -> list[str]:
    """`CHURNSIGNAL_INGEST_PORT: not a valid integer ('abc')`, one line per error; a secret's value is never
    shown."""
    secrets = secret_fields()
    lines = []
    for error in exc.errors(include_url=False):
        loc = error.get("loc") or ("?",)
        field = str(loc[0])
        where = variable(field) + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
        message = _PLAIN.get(error["type"]) or _plain_message(str(error.get("msg", "invalid")))
        value = error.get("input")
        # Only a top-level scalar is quoted: inside a JSON value (a list of webhooks...) any string may be a secret.
        if (len(loc) == 1 and field not in secrets and error["type"] != "missing"
                and isinstance(value, str | int | float) and not isinstance(value, bool) and len(str(value)) <= 80):
            message += f" ({value!r})"
        lines.append(f"{where}: {message}")
    return lines


def _plain_message(msg: str) -> str:
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    msg = re.sub(r"^(Input|String|Value|Number|List|Dictionary) should", "should", msg)
    if msg[:2].isupper():  # an acronym (URL, JSON) keeps its case
        return msg
    return msg[:1].lower() + msg[1:]


def settings_source_problem(exc: SettingsError) -> str:
    """A value the settings could not even decode (a JSON variable that is not JSON)."""
    found = re.search(r'field "([^"]+)"', str(exc))
    name = variable(found.group(1)) if found else "a CHURNSIGNAL_* variable"
    cause = exc.__cause__
    if isinstance(cause, json.JSONDecodeError):
        return f"{name}: not valid JSON ({cause.msg} at line {cause.lineno} column {cause.colno})"
    return f"{name}: cannot be read ({type(cause).__name__ if cause is not None else exc})"
