"""Classification of database failures for the scoring service: retryable or not."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import asyncpg
from sqlalchemy import exc as sa_exc

from shared.errors import ChurnsignalError, RetryableFailure


class StoreUnavailable(RetryableFailure):
    """The database could not be reached or aborted the transaction; retry the batch after a pause."""

    status_code = 503


class StoreConflict(RetryableFailure):
    """A unique key was taken by a concurrent transaction (an event id processed elsewhere meanwhile).

    Retrying the batch from the committed state resolves it: the id is then seen as processed."""


class SchemaMissing(ChurnsignalError):
    """The scoring tables do not exist: `churnsignal migrate` has not run on this database."""


_TRANSIENT_PG = (
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


def _is_transient_sa(exc: sa_exc.DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return True
    cause = getattr(exc.orig, "__cause__", None)
    return isinstance(exc.orig, _TRANSIENT_PG) or isinstance(cause, _TRANSIENT_PG)


@contextlib.contextmanager
def classified() -> Iterator[None]:
    """Translate driver errors into StoreUnavailable / StoreConflict; anything else propagates."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise StoreConflict(f"unique key taken concurrently: {exc.constraint_name}") from exc
    except _TRANSIENT_PG as exc:
        raise StoreUnavailable(f"database unavailable: {type(exc).__name__}") from exc
    except sa_exc.IntegrityError as exc:
        raise StoreConflict("unique key taken concurrently") from exc
    except sa_exc.DBAPIError as exc:
        if _is_transient_sa(exc):
            raise StoreUnavailable(f"database unavailable: {type(exc.orig).__name__}") from exc
        raise
    except (OSError, TimeoutError) as exc:
        raise StoreUnavailable(f"database unreachable: {type(exc).__name__}") from exc
