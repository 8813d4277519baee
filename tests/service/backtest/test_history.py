"""Reading the inputs: partitions and topics, duplicates, blank lines, events past the last cut, outcomes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.scoring.backtest.history import InputError, read_events, read_outcomes
from shared.bus.port import partition_for
from tests.service.backtest.histories import write_events
from tests.stack.scoring.events import accounts_on_partition


def _usage(event_id: str, account: str, when: str) -> dict:
    return {"id": event_id, "type": "usage", "account_id": account, "occurred_at": when,
            "data": {"feature": "login"}}


def test_events_are_split_per_partition_and_topic_in_file_order(tmp_path: Path):
    a, b = accounts_on_partition(1, 1, prefix="a")[0], accounts_on_partition(4, 1, prefix="b")[0]
    raws = [
        _usage("u1", a, "2026-05-01T10:00:00Z"),
        {"id": "t1", "type": "ticket", "account_id": a, "occurred_at": "2026-05-01T09:00:00Z",
         "data": {"ticket_id": "T-1", "status": "opened"}},
        {"id": "c1", "type": "contact", "account_id": a, "occurred_at": "2026-05-01T11:00:00+02:00",
         "data": {"contact_id": "c", "role": "champion"}},
        _usage("u0", a, "2026-04-30T10:00:00Z"),
        _usage("u1", b, "2026-05-01T10:00:00Z"),              # the id of another partition's event
        _usage("u2", a, "2026-05-01T12:00:00Z"),
        _usage("u2", a, "2026-05-01T12:00:00Z"),              # resent: kept, applied once by the replay
        _usage("u3", b, "2026-06-01T00:00:00Z"),              # at the cut: validated, not kept
    ]
    path = tmp_path / "events.ndjson"
    path.write_bytes(write_events(path, raws).read_bytes().replace(b"\n", b"\n\n", 2))  # blank lines
    history = read_events(path, partitions=6, until=datetime(2026, 6, 1, tzinfo=UTC))
    assert history.lines == 8 and history.kept == 6 and history.foreign_duplicates == 1
    assert history.repeated_ids[1] == {"u2"}
    accounts, sentiment, tickets, usage = history.streams[1]
    assert [e.id for e in usage] == ["u1", "u0", "u2", "u2"]   # file order, not event time
    assert [e.id for e in tickets] == ["t1"] and [e.id for e in accounts] == ["c1"] and not sentiment
    assert history.partition_of[a] == partition_for(a.encode(), 6) == 1
    assert not any(history.streams[4])                         # b's only events were dropped
    assert list(history.activity[a].usage_days) == [20573, 20574]


def test_outcomes_accept_dates_timestamps_and_empty_cells(tmp_path: Path):
    path = tmp_path / "outcomes.csv"
    path.write_text("account_id,churned_at,note\na,2026-05-01,x\nb,2026-05-02T10:00:00+02:00,\nc,,\n\n")
    assert read_outcomes(path) == {"a": datetime(2026, 5, 1, tzinfo=UTC),
                                   "b": datetime(2026, 5, 2, 8, tzinfo=UTC), "c": None}
    path.write_text("account_id,churned_at\na,2026-05-01T10:00:00\n")
    with pytest.raises(InputError, match="line 2"):
        read_outcomes(path)
    path.write_text("account_id,churned_at\na,\na,2026-05-01\n")
    with pytest.raises(InputError, match="listed twice"):
        read_outcomes(path)
