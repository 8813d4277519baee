"""Classification of database failures for the scoring service: retryable or not.

The family is shared with the other services (shared.db_errors); the scoring tables' own error is here."""

from __future__ import annotations

from shared.db_errors import StoreConflict, StoreUnavailable, classified
from shared.errors import ChurnsignalError

__all__ = ["SchemaMissing", "StoreConflict", "StoreUnavailable", "classified"]


class SchemaMissing(ChurnsignalError):
    """The scoring tables do not exist: `churnsignal migrate` has not run on this database."""
