"""The services' logging: one line per record, and no floods from the Kafka client.

While a broker is unreachable, aiokafka retries its metadata request as fast as the connection is refused
and logs two ERROR lines each time: thousands of lines a second (300,000 in a 17-second outage of the
broker case of `make chaos`). `RepeatFilter` lets the first record of each kind through, holds back the
repeats for `window_s`, and the next record of that kind after the window carries how many were held
back: "... (4,210 more like this in the last 10 s)". A kind is the logger and the message template, so
different errors are never merged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WINDOW_S = 10.0
# Loggers whose repeats are held back: the Kafka client's (ours say each thing once per state change).
NOISY = ("aiokafka",)


class RepeatFilter(logging.Filter):
    """At most one record per (logger, level, message template) every `window_s` for the loggers under
    `prefixes`; the one that passes after a window says how many were held back in it."""

    def __init__(self, prefixes: tuple[str, ...] = NOISY, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._prefixes = prefixes
        self._window_s = window_s
        self._clock = clock
        # kind -> (when its window opened, records held back since)
        self._windows: dict[tuple[str, int, str], tuple[float, int]] = {}

    def _noisy(self, name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in self._prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._noisy(record.name):
            return True
        kind = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        opened = self._windows.get(kind)
        if opened is not None and now - opened[0] < self._window_s:
            self._windows[kind] = (opened[0], opened[1] + 1)
            return False
        if opened is not None and opened[1]:
            # (formatted here, once: the record's own arguments stay as they were)
            record.msg = (f"{record.getMessage()} ({opened[1]:,} more like this in the last "
                          f"{now - opened[0]:.0f} s)")
            record.args = None
        self._windows[kind] = (now, 0)
        if len(self._windows) > 1000:   # (kinds are message templates: a handful; bounded all the same)
            self._windows = {k: v for k, v in self._windows.items() if now - v[0] < self._window_s}
        return True


def configure_logging(level: str) -> None:
    """The services' root logging: `level`, one line per record, repeats of the Kafka client held back."""
    logging.basicConfig(level=level.upper(), format=FORMAT)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(RepeatFilter())
    # Alembic lists its plugins at INFO when imported: noise before every check of the migrations.
    logging.getLogger("alembic.runtime.plugins").setLevel(
        max(logging.WARNING, logging.getLevelName(level.upper())))
