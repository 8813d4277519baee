"""What the `churnsignal` command checks before it starts anything, and `churnsignal check-config`.

- Every command: no unknown `CHURNSIGNAL_*` variable, every value valid (`read_configuration`).
- `serve`: Kafka is configured (the in-process bus only with `--embedded`), scoring and alerts have a
  database URL (never the SQLite default), the scoring config and routing files load, and (scoring,
  alerts) Kafka and the database answer and the database is migrated (`serve_preflight`). Ingest starts
  while Kafka is down and answers 503 until it is back, so it is not probed.
- `migrate`: a database URL that answers (`migrate_preflight`).

Each problem is one `StartupError` line naming the variable (shared/startup_errors.py): exit code 2 for a
configuration error, 3 for a dependency that is unreachable or not ready.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import BaseModel, SecretStr

from shared.config_check import (
    DATABASE_VARIABLE,
    KAFKA_VARIABLE,
    DatabaseStatus,
    DatabaseTarget,
    database_target,
    kafka_addresses,
    kafka_display,
    probe_database,
    probe_kafka,
)
from shared.settings import Settings
from shared.startup_errors import (
    CONFIG_ERROR,
    ENV_PREFIX,
    UNREACHABLE,
    ConfigError,
    DependencyUnavailable,
    StartupError,
    known_variables,
    load_settings,
    secret_fields,
    unknown_variables,
    variable,
)

ROUTING_VARIABLE = "CHURNSIGNAL_ROUTING_FILE"
SCORING_CONFIG_VARIABLE = "CHURNSIGNAL_SCORING_CONFIG_FILE"
FALLBACK_EMAIL_VARIABLE = "CHURNSIGNAL_FALLBACK_EMAIL"
SERVICES = ("ingest", "scoring", "alerts")
NEEDS_DATABASE = frozenset({"scoring", "alerts"})
URL_EXAMPLE = "postgresql+asyncpg://user:password@host:5432/database"
DATABASE_VARIABLE_FIELD = "database_url"


# --- the variables ---------------------------------------------------------------------------------------------------

def read_configuration(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings, after checking that every `CHURNSIGNAL_*` variable is one something reads. ConfigError
    lists every unknown variable and every invalid value, one line each."""
    environ = os.environ if environ is None else environ
    named, unreadable = routing_variables(environ)
    problems = unknown_variables(environ, known_variables(named))
    if problems and unreadable:   # the names it gives could not be known: say why
        problems.append(unreadable)
    settings: Settings | None = None
    try:
        settings = load_settings()
    except ConfigError as exc:
        problems.extend(exc.lines)
    if problems or settings is None:
        raise ConfigError(*problems)
    return settings


def routing_variables(environ: Mapping[str, str]) -> tuple[set[str], str | None]:
    """The variables the routing file names (`url_env`, `secret_env`): a user may well call them
    `CHURNSIGNAL_…`. Best effort: a file that cannot be read names none, and the second value says why
    (`serve alerts` and `check-config` check the file in full)."""
    path = next((v for k, v in environ.items() if k.upper() == ROUTING_VARIABLE), "")
    if not path:
        return set(), None
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        return set(), f"{ROUTING_VARIABLE}: cannot read {path} ({_os_reason(exc)})"
    except UnicodeDecodeError:
        return set(), f"{ROUTING_VARIABLE}: {path} is not UTF-8 text"
    except yaml.YAMLError as exc:
        return set(), f"{ROUTING_VARIABLE}: not valid YAML{_yaml_where(exc)} (in {path})"
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("url_env", "secret_env") and isinstance(value, str):
                    names.add(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc)
    return names, None


# --- what each command needs -----------------------------------------------------------------------------------------

def require_kafka(settings: Settings, command: str) -> str:
    """The bootstrap list, checked; ConfigError when it is not set."""
    if settings.embedded:
        instead = f"`{command} --embedded` or `churnsignal run`" if command.startswith("serve") else \
            "`churnsignal run`"
        raise ConfigError(f"{KAFKA_VARIABLE} is not set: `{command}` needs Kafka "
                          f"(for the in-process bus: {instead})")
    return kafka_display(kafka_addresses(settings.kafka_bootstrap_servers))


def require_database(settings: Settings, command: str) -> DatabaseTarget:
    """The database URL, set explicitly (the SQLite default is `churnsignal run`'s) and well formed."""
    if DATABASE_VARIABLE_FIELD not in settings.model_fields_set or not settings.database_url:
        raise ConfigError(f"{DATABASE_VARIABLE} is not set: `{command}` needs the database ({URL_EXAMPLE})")
    return database_target(settings.database_url)


def check_scoring_config(settings: Settings) -> str:
    """The scoring config file loads; what it is (its version)."""
    from services.scoring.domain.config import ScoringConfig

    path = settings.scoring_config_file
    if path is not None and not path.strip():
        raise ConfigError(f"{SCORING_CONFIG_VARIABLE} is set but empty (unset it for the defaults)")
    try:
        config = ScoringConfig.load(path)
    except OSError as exc:
        raise ConfigError(f"{SCORING_CONFIG_VARIABLE}: cannot read {path} ({_os_reason(exc)})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{SCORING_CONFIG_VARIABLE}: not valid YAML{_yaml_where(exc)} (in {path})") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{SCORING_CONFIG_VARIABLE}: {exc} (in {path})") from None
    if path is None:
        return f"not set: the defaults (version {config.version})"
    return f"{path} (version {config.version})"


@dataclass
class RoutingSummary:
    text: str
    unset_variables: list[str] = field(default_factory=list)   # named by the file, not set


def check_routing(settings: Settings, environ: Mapping[str, str] | None = None) -> RoutingSummary:
    """The routing file (and the fallback receiver) load as `serve alerts` loads them."""
    from services.alerts.domain.routing import SLACK_WEBHOOK_REF, fallback_receiver
    from services.alerts.domain.routing_config import parse_routing

    environ = os.environ if environ is None else environ
    try:
        fallback = fallback_receiver(settings.fallback_email,
                                     SLACK_WEBHOOK_REF if settings.slack_webhook_url is not None else None)
    except ValueError:
        raise ConfigError(f"{FALLBACK_EMAIL_VARIABLE}: not a valid e-mail address "
                          f"({settings.fallback_email!r})") from None
    path = settings.routing_file
    if not path:
        extra = " and the fallback receiver" if fallback is not None else ""
        return RoutingSummary(f"not set: every risk to the account's CSM{extra}")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{ROUTING_VARIABLE}: cannot read {path} ({_os_reason(exc)})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{ROUTING_VARIABLE}: {path} is not UTF-8 text") from None
    try:
        tree = parse_routing(text, fallback=fallback)
    except ValueError as exc:
        raise ConfigError(f"{ROUTING_VARIABLE}: {exc} (in {path})") from None
    names = {ref for receiver in tree.receivers.values() for channel in receiver.channels
             for ref in (channel.url_ref, channel.secret_ref) if ref and ref not in tree.literal_secrets}
    configured = {variable(f) for f in ("slack_webhook_url", "webhook_secret")}
    unset = sorted(n for n in names if n not in configured and not environ.get(n))
    receivers = ", ".join(sorted(tree.receivers))
    return RoutingSummary(f"{path} ({len(tree.receivers)} receivers: {receivers})", unset)


def serve_preflight(settings: Settings, service: str, *, embedded: bool) -> None:
    """Everything `serve <service>` needs before it starts; raises StartupError (nothing printed)."""
    command = f"serve {service}"
    database: DatabaseTarget | None = None
    if not embedded:
        require_kafka(settings, command)
        if service in NEEDS_DATABASE:
            database = require_database(settings, command)
    elif service in NEEDS_DATABASE:
        database = database_target(settings.database_url)
    if service in NEEDS_DATABASE:
        check_scoring_config(settings)      # alerts reads it too (the account pages)
    if service == "alerts":
        check_routing(settings)
    probe_kafka_too = not embedded and service in NEEDS_DATABASE
    if probe_kafka_too or (database is not None and not database.is_sqlite):
        _run(_probe(settings, kafka=probe_kafka_too, database=database))


def migrate_preflight(settings: Settings) -> DatabaseTarget:
    target = require_database(settings, "migrate")
    if not target.is_sqlite:
        _run(_probe(settings, kafka=False, database=target, need_migrated=False))
    return target


async def _probe(settings: Settings, *, kafka: bool, database: DatabaseTarget | None,
                 need_migrated: bool = True) -> None:
    """Kafka and the database at once (each bounded). Every failure is reported, a line each; the exit code
    is the configuration error's when there is one."""
    probes: list[Any] = []
    if kafka:
        probes.append(probe_kafka(settings.kafka_bootstrap_servers))
    if database is not None and not database.is_sqlite:
        probes.append(probe_database(database))
    results = await asyncio.gather(*probes, return_exceptions=True)
    failures: list[StartupError] = []
    for result in results:
        if isinstance(result, StartupError):
            failures.append(result)
        elif isinstance(result, BaseException):
            raise result
    if failures:
        combined = (ConfigError if any(f.exit_code == CONFIG_ERROR for f in failures) else DependencyUnavailable)
        raise combined(*(line for f in failures for line in f.lines))
    status = next((r for r in results if isinstance(r, DatabaseStatus)), None)
    if need_migrated and status is not None and database is not None and status.behind:
        raise not_migrated(database, status)


def not_migrated(database: DatabaseTarget, status: DatabaseStatus) -> DependencyUnavailable:
    at = f"at {status.revision}" if status.revision else "never migrated"
    return DependencyUnavailable(f"the database at {database.address} ({DATABASE_VARIABLE}) is not migrated "
                                 f"({at}, this version needs {status.head}): run `churnsignal migrate`")


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _os_reason(exc: OSError) -> str:
    return (exc.strerror or type(exc).__name__).lower()


def _yaml_where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f" (line {mark.line + 1})" if mark is not None else ""


# --- check-config ----------------------------------------------------------------------------------------------------

@dataclass
class Report:
    out: TextIO
    err: TextIO
    worst: int = 0

    def ok(self, what: str, detail: str) -> None:
        self.out.write(f"  ok     {what}: {detail}\n")

    def note(self, what: str, detail: str) -> None:
        self.out.write(f"  note   {what}: {detail}\n")

    def fail(self, exc: StartupError) -> None:
        for line in exc.lines:
            self.out.write(f"  FAIL   {line}\n")
            self.err.write(f"error: {line}\n")
        # A configuration error is the one to fix first: it decides the exit code over an unreachable one.
        self.worst = CONFIG_ERROR if CONFIG_ERROR in (self.worst, exc.exit_code) else exc.exit_code

    def check(self, what: str, step: Callable[[], str]) -> None:
        try:
            self.ok(what, step())
        except StartupError as exc:
            self.fail(exc)


def check_config(settings: Settings, *, services: Iterable[str], connect: bool, version: str,
                 out: TextIO, err: TextIO, environ: Mapping[str, str] | None = None) -> int:
    """`churnsignal check-config`: the settings in use (secrets masked), then each check; 0, 2 or 3."""
    environ = os.environ if environ is None else environ
    services = tuple(services)
    report = Report(out, err)
    out.write(f"churnsignal {version}: configuration of {', '.join(services)} (secrets masked)\n")
    for name, value in describe(settings):
        out.write(f"  {name} = {value}\n")
    out.write("checks\n")
    present = sorted(k for k in environ if k.upper().startswith(ENV_PREFIX))
    report.ok("variables", f"{len(present)} CHURNSIGNAL_* set, none unknown")
    needs_database = bool(NEEDS_DATABASE.intersection(services))
    kafka_ok = database_ok = False
    try:
        report.ok(KAFKA_VARIABLE, require_kafka(settings, "serve " + services[0]))
        kafka_ok = True
    except StartupError as exc:
        report.fail(exc)
    database: DatabaseTarget | None = None
    if needs_database or DATABASE_VARIABLE_FIELD in settings.model_fields_set:
        try:
            needing = [s for s in services if s in NEEDS_DATABASE] or list(services)
            database = require_database(settings, "serve " + needing[0])
            report.ok(DATABASE_VARIABLE, database.masked)
            database_ok = True
        except StartupError as exc:
            report.fail(exc)
    if needs_database:
        report.check(SCORING_CONFIG_VARIABLE, lambda: check_scoring_config(settings))
    if "alerts" in services:
        try:
            routing = check_routing(settings, environ)
            report.ok(ROUTING_VARIABLE, routing.text)
            for name in routing.unset_variables:
                report.note(ROUTING_VARIABLE, f"names {name}, which is not set: deliveries there fail")
        except StartupError as exc:
            report.fail(exc)
    if not connect:
        report.note("connections", "not tried (--no-connect)")
    else:
        if kafka_ok:
            report.check(f"Kafka at {kafka_display(kafka_addresses(settings.kafka_bootstrap_servers))}",
                         lambda: _kafka_line(settings))
        if database_ok and database is not None:
            target = database
            if target.is_sqlite:
                report.note(f"database {target.address}", "SQLite file, migrated by the service at start")
            else:
                report.check(f"database at {target.address}", lambda: _database_line(target))
    if report.worst:
        out.write("configuration has errors\n")
        return report.worst
    out.write("configuration OK\n")
    return 0


def _kafka_line(settings: Settings) -> str:
    brokers = _run(probe_kafka(settings.kafka_bootstrap_servers))
    return f"{brokers} broker{'s' if brokers != 1 else ''}"


def _database_line(target: DatabaseTarget) -> str:
    status = _run(probe_database(target))
    if status.behind:
        raise not_migrated(target, status)
    return f"reachable, migrated ({status.revision})"


def describe(settings: Settings) -> list[tuple[str, str]]:
    """Every setting as `(variable, value)`, secrets masked; `(default)` after values not set."""
    secrets = secret_fields()
    rows = []
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if name == DATABASE_VARIABLE_FIELD:
            text = _masked_url(value)
        elif name == "api_keys":
            text = "; ".join(f"{k.name} [{' '.join(k.scopes)}] sha256=***" for k in value) or "none"
        elif isinstance(value, dict):
            text = ", ".join(f"{k}: {_shown(v, name in secrets)}" for k, v in value.items()) or "none"
        elif isinstance(value, list):
            text = "; ".join(_shown(v, name in secrets) for v in value) or "none"
        elif value is None:
            text = "not set"
        else:
            text = _shown(value, name in secrets)
            text = "*** (set)" if text == "***" else text
        if name not in settings.model_fields_set:
            text += "  (default)"
        rows.append((variable(name), text))
    return rows


def _shown(value: Any, secret: bool) -> str:
    """A value as the report shows it: a secret as `***`; a model (a webhook subscriber...) key by key, its
    `SecretStr` fields masked."""
    if secret or isinstance(value, SecretStr):
        return "***"
    if isinstance(value, BaseModel):
        return " ".join(f"{k}={_shown(v, False)}" for k, v in value if v is not None)
    return str(value)


def _masked_url(url: str) -> str:
    try:
        return database_target(url).masked
    except ConfigError:
        return "*** (not a URL churnsignal can use)"


__all__ = ["CONFIG_ERROR", "SERVICES", "UNREACHABLE", "check_config", "migrate_preflight", "read_configuration",
           "serve_preflight"]
