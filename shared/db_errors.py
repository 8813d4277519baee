"""One family of database errors for every service, on either path (SQLAlchemy or asyncpg straight).

Two ways to use it:
- `classified()` translates a driver error into `StoreUnavailable` / `StoreConflict` (retryable) and
  lets any other error (a permanent one) propagate;
- the tuples name what a site catches as a whole: `ENGINE_ERRORS` (a statement through SQLAlchemy),
  `DATABASE_ERRORS` (through SQLAlchemy or straight on asyncpg), `STALE_CONNECTION_ERRORS` (a pooled
  asyncpg connection the server has dropped since).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import asyncpg
from sqlalchemy import exc as sa_exc

from shared.errors import RetryableFailure


class StoreUnavailable(RetryableFailure):
    """The database could not be reached or aborted the transaction; retry the batch after a pause."""

    status_code = 503


class StoreConflict(RetryableFailure):
    """A unique key was taken by a concurrent transaction (an event id processed elsewhere meanwhile).

    Retrying the batch from the committed state resolves it: the id is then seen as processed."""


# What a statement through SQLAlchemy can raise: its own errors (driver errors come wrapped in
# DBAPIError) or the socket's. TimeoutError (asyncio.timeout's included) is an OSError.
ENGINE_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.SQLAlchemyError,
    OSError,
)

# What a failed statement can raise on either path: through SQLAlchemy, or straight on the asyncpg
# connection under it (whose errors come unwrapped).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    *ENGINE_ERRORS,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

# A pooled connection the server has dropped since (restart, terminated backend, idle timeout): the
# statement is worth one more try on a new connection. Not a failure to connect (the database is down).
STALE_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    # The server's "terminating connection" arrived while the connection sat in the pool: the next
    # statement finds the protocol still consuming that error ("another operation is in progress").
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
)

# The asyncpg errors worth a retry of the whole transaction.
TRANSIENT_PG: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,  # a connection left mid-operation by a failure
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.InsufficientResourcesError,
)


def is_transient(exc: sa_exc.DBAPIError) -> bool:
    """Whether a driver error wrapped by SQLAlchemy is worth a retry of the transaction."""
    if exc.connection_invalidated:
        return True
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return True
    cause = getattr(exc.orig, "__cause__", None)
    return isinstance(exc.orig, TRANSIENT_PG) or isinstance(cause, TRANSIENT_PG)


@contextlib.contextmanager
def classified() -> Iterator[None]:
    """Translate driver errors into StoreUnavailable / StoreConflict; anything else propagates."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise StoreConflict(f"unique key taken concurrently: {exc.constraint_name}") from exc
    except TRANSIENT_PG as exc:
        raise StoreUnavailable(f"database unavailable: {type(exc).__name__}") from exc
    except sa_exc.IntegrityError as exc:
        raise StoreConflict("unique key taken concurrently") from exc
    except sa_exc.DBAPIError as exc:
        if is_transient(exc):
            raise StoreUnavailable(f"database unavailable: {type(exc.orig).__name__}") from exc
        raise
    except (OSError, TimeoutError) as exc:
        raise StoreUnavailable(f"database unreachable: {type(exc).__name__}") from exc
