"""The Kafka client's repeated errors are held back, counted, and reported with the next one (shared/logs.py)."""

from __future__ import annotations

import io
import logging

import pytest

from shared.logs import FORMAT, RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logged() -> tuple[io.StringIO, Clock, list[logging.Logger]]:
    out, clock = io.StringIO(), Clock()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RepeatFilter(window_s=10.0, clock=clock))
    loggers = [logging.getLogger(name) for name in ("aiokafka", "aiokafka.producer.sender", "services.x")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)
    yield out, clock, loggers
    for logger in loggers:
        logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_a_storm_of_one_client_error_is_one_line_per_window_with_the_count(logged) -> None:
    out, clock, (kafka, _, _) = logged
    for i in range(5000):                      # a refused connection, retried without pause
        kafka.error("Unable connect to node with id %s: %s", 1, f"[Errno 111] refused #{i}")
        clock.now += 0.001                     # 5 s of it
    assert lines(out) == ["ERROR aiokafka: Unable connect to node with id 1: [Errno 111] refused #0"]
    clock.now += 6                             # the window (10 s) is over
    kafka.error("Unable connect to node with id %s: %s", 1, "[Errno 111] refused #5000")
    assert lines(out)[1] == ("ERROR aiokafka: Unable connect to node with id 1: [Errno 111] refused #5000 "
                             "(4,999 more like this in the last 11 s)")
    clock.now += 11                            # a quiet window: the next one carries no count
    kafka.error("Unable connect to node with id %s: %s", 1, "again")
    assert lines(out)[2] == "ERROR aiokafka: Unable connect to node with id 1: again"


def test_different_messages_loggers_and_levels_are_never_merged(logged) -> None:
    out, _, (kafka, sender, _) = logged
    kafka.error("Unable connect to node with id %s: %s", 1, "refused")
    kafka.error("Unable to update metadata from %s", [1])
    kafka.warning("Unable connect to node with id %s: %s", 1, "refused")
    sender.error("Unable connect to node with id %s: %s", 1, "refused")
    kafka.error("Unable to update metadata from %s", [1])        # a repeat: held back
    assert lines(out) == [
        "ERROR aiokafka: Unable connect to node with id 1: refused",
        "ERROR aiokafka: Unable to update metadata from [1]",
        "WARNING aiokafka: Unable connect to node with id 1: refused",
        "ERROR aiokafka.producer.sender: Unable connect to node with id 1: refused",
    ]


def test_the_services_own_records_always_pass(logged) -> None:
    out, _, (_, _, ours) = logged
    for _ in range(3):
        ours.warning("kafka producer acknowledged nothing for %ss; replacing it", 30)
    assert len(lines(out)) == 3


def test_the_services_configure_it_on_the_root_handler() -> None:
    from shared.logs import configure_logging

    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = []
    try:
        configure_logging("info")
        configure_logging("info")              # twice: still one filter
        assert root.level == logging.INFO
        assert len(root.handlers) == 1
        handler = root.handlers[0]
        assert [type(f) for f in handler.filters] == [RepeatFilter]
        assert handler.formatter is not None and handler.formatter._fmt == FORMAT
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers, root.level = saved_handlers, saved_level
