"""Checks of the infrastructure settings before a service starts: the database URL and the Kafka bootstrap
list are well formed, and (with bounded timeouts) both answer. Each failure is a `StartupError` of one line
naming the variable and the `host:port`; a password is never shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.settings import normalize_database_url
from shared.startup_errors import ConfigError, DependencyUnavailable, StartupError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

DATABASE_VARIABLE = "CHURNSIGNAL_DATABASE_URL"
KAFKA_VARIABLE = "CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS"
SUPPORTED_DATABASES = ("postgresql+asyncpg", "sqlite+aiosqlite")
PROBE_TIMEOUT_S = 5.0


# --- the database ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatabaseTarget:
    url: URL

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def address(self) -> str:
        """`host:port` (PostgreSQL) or the file (SQLite)."""
        if self.is_sqlite:
            return self.url.database or ":memory:"
        return f"{self.url.host or 'localhost'}:{self.url.port or 5432}"

    @property
    def masked(self) -> str:
        return self.url.render_as_string(hide_password=True)


def database_target(raw: str) -> DatabaseTarget:
    """The parsed URL (`postgres://` and `postgresql://` read as `postgresql+asyncpg://`), or ConfigError."""
    # (imported here: commands that start no service, such as the backtest, need no SQLAlchemy)
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(normalize_database_url(raw.strip()))
    except ArgumentError:
        raise ConfigError(f"{DATABASE_VARIABLE}: not a database URL (expected postgresql+asyncpg://user:password@"
                          "host:port/database or sqlite+aiosqlite:///path)") from None
    if url.drivername not in SUPPORTED_DATABASES:
        raise ConfigError(f"{DATABASE_VARIABLE}: unsupported database {url.drivername!r} (expected "
                          "postgresql+asyncpg://… or sqlite+aiosqlite:///…)")
    if url.drivername == "postgresql+asyncpg" and not url.database:
        raise ConfigError(f"{DATABASE_VARIABLE}: names no database (…@{DatabaseTarget(url).address}/<database>)")
    return DatabaseTarget(url)


@dataclass(frozen=True)
class DatabaseStatus:
    revision: str | None      # alembic_version; None: never migrated
    head: str
    behind: bool              # a migration of this code has not run


async def probe_database(target: DatabaseTarget, *, timeout_s: float = PROBE_TIMEOUT_S) -> DatabaseStatus:
    """Connect once (bounded) and read the migration revision. DependencyUnavailable when nothing answers,
    ConfigError when the server refuses the credentials or has no such database."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(target.url, poolclass=NullPool)
    try:
        async with asyncio.timeout(timeout_s), engine.connect() as conn:
            try:
                revision = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            except DBAPIError as exc:
                if not _missing_table(exc):
                    raise
                revision = None
    except Exception as exc:  # classified below: every connection failure becomes one line
        raise database_failure(target, exc, timeout_s) from None
    finally:
        await engine.dispose()
    return _status(target, revision)


def _missing_table(exc: Exception) -> bool:
    import asyncpg

    return isinstance(_root(exc), asyncpg.UndefinedTableError) or "no such table" in str(exc)


def _status(target: DatabaseTarget, revision: str | None) -> DatabaseStatus:
    from alembic.script import ScriptDirectory

    from shared.migrate import alembic_config

    scripts = ScriptDirectory.from_config(alembic_config(target.url.render_as_string(hide_password=False)))
    head = scripts.get_current_head() or ""
    if revision is None:
        return DatabaseStatus(None, head, True)
    try:
        known = {rev.revision for rev in scripts.walk_revisions()}
    except Exception:  # a broken script directory is this code's bug, not the database's state
        known = set()
    # A revision this code does not know is a newer one: never "behind".
    behind = revision in known and revision != head
    return DatabaseStatus(revision, head, behind)


def _root(exc: BaseException) -> BaseException:
    """The innermost cause (a driver error under SQLAlchemy's wrapper, an OSError under asyncpg's)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = getattr(exc, "orig", None) or exc.__cause__
        if nxt is None:
            return exc
        exc = nxt
    return exc


def database_failure(target: DatabaseTarget, exc: BaseException,
                     timeout_s: float = PROBE_TIMEOUT_S) -> StartupError:
    """One line for a failed connection: refused credentials or no such database (2), else unreachable (3)."""
    import asyncpg

    root = _root(exc)
    where = f"the database at {target.address} ({DATABASE_VARIABLE})"
    user = target.url.username or ""
    if isinstance(root, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
        return ConfigError(f"{where} refused the credentials of user {user!r}")
    if isinstance(root, asyncpg.InvalidCatalogNameError):
        return ConfigError(f"{where}: database {target.url.database!r} does not exist")
    return DependencyUnavailable(f"cannot reach {where}: {_reason(root, timeout_s)}")


def _reason(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, asyncio.IncompleteReadError | ConnectionResetError):
        return "the connection closed without an answer"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


# --- Kafka -----------------------------------------------------------------------------------------------------------

def kafka_addresses(bootstrap: str) -> list[tuple[str, int]]:
    """`host:port[,host:port...]` (port 9092 when left out), or ConfigError."""
    addresses = []
    for item in (part.strip() for part in bootstrap.split(",")):
        if not item:
            continue
        host, port = item, "9092"
        if item.startswith("["):               # [::1]:9092
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":") or "9092"
        elif item.count(":") == 1:
            host, _, port = item.partition(":")
        if "://" in item or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{KAFKA_VARIABLE}: {item!r} is not host:port")
        addresses.append((host, int(port)))
    if not addresses:
        raise ConfigError(f"{KAFKA_VARIABLE} is empty")
    return addresses


def kafka_display(addresses: list[tuple[str, int]]) -> str:
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in addresses)


async def probe_kafka(bootstrap: str, *, timeout_s: float = PROBE_TIMEOUT_S) -> int:
    """Ask the bootstrap servers for the cluster's metadata (bounded): the number of brokers of the first that
    answers. DependencyUnavailable naming every address when none does."""
    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    addresses = kafka_addresses(bootstrap)
    reasons = []
    for host, port in addresses:
        conn: Any = None
        try:
            async with asyncio.timeout(timeout_s):
                conn = await create_conn(host, port, client_id="churnsignal-check",
                                         request_timeout_ms=int(timeout_s * 1000))
                metadata = await conn.send(MetadataRequest([]))
            return len(metadata.brokers)
        except Exception as exc:  # any client or socket error: this address does not answer
            reasons.append(_reason(_root(exc), timeout_s))
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
    reason = reasons[0] if len(set(reasons)) == 1 else "; ".join(reasons)
    raise DependencyUnavailable(f"cannot reach Kafka at {kafka_display(addresses)} ({KAFKA_VARIABLE}): {reason}")
