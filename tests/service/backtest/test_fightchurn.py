"""`churnsignal import fightchurn`: a ChurnSim export (tests/fixtures/fightchurn: four accounts of a real
socialnet7 run, seed 1, trimmed to eight event rows each) converted into events the backtest accepts."""

from __future__ import annotations

import gzip
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.cli import main
from services.scoring.backtest.fightchurn import convert
from services.scoring.backtest.history import lifecycle_outcomes, read_events

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "fightchurn"
PREFIX = "fc-fightchurn-"     # fc-<directory name>-


def _events(lines: list[bytes]) -> list[dict]:
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def events() -> list[dict]:
    return _events(convert(FIXTURE).lines)


def _import(*args: str) -> int:
    return main(["import", "fightchurn", "--quiet", *args])


def test_one_account_event_at_the_first_subscription_start(events: list[dict]):
    opening = {e["account_id"]: e for e in events if e["type"] == "account" and "lifecycle" not in e["data"]}
    assert opening == {
        "fc-5": {"id": f"{PREFIX}a5", "type": "account", "account_id": "fc-5",
                 "occurred_at": "2020-01-19T00:00:00Z",
                 "data": {"name": "ChurnSim account 5", "arr": 120.0, "segment": "web"}},
        "fc-15": {"id": f"{PREFIX}a15", "type": "account", "account_id": "fc-15",
                  "occurred_at": "2020-01-19T00:00:00Z",
                  "data": {"name": "ChurnSim account 15", "arr": 120.0, "segment": "appstore2"}},
        "fc-200": {"id": f"{PREFIX}a200", "type": "account", "account_id": "fc-200",
                   "occurred_at": "2020-01-02T00:00:00Z",
                   "data": {"name": "ChurnSim account 200", "arr": 120.0, "segment": "appstore2"}},
        "fc-1300": {"id": f"{PREFIX}a1300", "type": "account", "account_id": "fc-1300",
                    "occurred_at": "2020-04-26T00:00:00Z",
                    "data": {"name": "ChurnSim account 1300", "arr": 120.0, "segment": "web"}},
    }


def test_churn_is_the_last_subscription_end_before_the_simulation_end(events: list[dict]):
    # 15 and 200 stop renewing before 2020-06-01; 5 and 1300 have a subscription running past it
    churns = [e for e in events if e["type"] == "account" and "lifecycle" in e["data"]]
    assert churns == [
        {"id": f"{PREFIX}a200-churned-20200202", "type": "account", "account_id": "fc-200",
         "occurred_at": "2020-02-02T00:00:00Z",
         "data": {"lifecycle": "churned", "lifecycle_at": "2020-02-02T00:00:00Z"}},
        {"id": f"{PREFIX}a15-churned-20200419", "type": "account", "account_id": "fc-15",
         "occurred_at": "2020-04-19T00:00:00Z",
         "data": {"lifecycle": "churned", "lifecycle_at": "2020-04-19T00:00:00Z"}},
    ]


def test_every_event_row_becomes_a_usage_event(events: list[dict]):
    usage = sorted((e for e in events if e["type"] == "usage"), key=lambda e: int(e["id"].rsplit("e", 1)[1]))
    assert len(usage) == 32
    assert [e["id"] for e in usage] == [f"{PREFIX}e{n}" for n in range(1, 33)]
    # row 1: 5,2020-01-19 07:35:51,2,0,  (type 2 is "like")
    assert usage[0] == {"id": f"{PREFIX}e1", "type": "usage", "account_id": "fc-5",
                        "occurred_at": "2020-01-19T07:35:51Z", "data": {"feature": "like", "count": 1, "user_id": "0"}}
    # row 23: 200,2020-02-01 17:39:11,7,0,  (type 7 is "reply")
    assert usage[22]["account_id"] == "fc-200"
    assert usage[22]["occurred_at"] == "2020-02-01T17:39:11Z"
    assert usage[22]["data"]["feature"] == "reply"
    assert {e["data"]["feature"] for e in usage} == {"post", "like", "adview", "dislike", "message", "reply"}


def test_lines_are_sorted_by_time_account_events_first(events: list[dict]):
    times = [e["occurred_at"] for e in events]
    assert times == sorted(times)
    assert len(events) == 4 + 2 + 32
    for account in ("fc-5", "fc-15", "fc-200", "fc-1300"):
        own = [e for e in events if e["account_id"] == account]
        assert own[0]["type"] == "account" and "lifecycle" not in own[0]["data"]


def test_cli_writes_gzip_events_and_outcomes_byte_identical_on_rerun(tmp_path: Path):
    out, outcomes = tmp_path / "events.ndjson.gz", tmp_path / "outcomes.csv"
    assert _import("--dir", str(FIXTURE), "--events", str(out), "--outcomes", str(outcomes)) == 0
    first = out.read_bytes()
    assert gzip.decompress(first) == b"".join(convert(FIXTURE).lines)
    assert outcomes.read_text() == ("account_id,churned_at\nfc-5,\nfc-15,2020-04-19T00:00:00Z\n"
                                    "fc-200,2020-02-02T00:00:00Z\nfc-1300,\n")
    assert _import("--dir", str(FIXTURE), "--events", str(out)) == 0
    assert out.read_bytes() == first
    plain = tmp_path / "events.ndjson"
    assert _import("--dir", str(FIXTURE), "--events", str(plain)) == 0
    assert plain.read_bytes() == gzip.decompress(first)


def test_the_backtest_reader_accepts_every_line(tmp_path: Path):
    out = tmp_path / "events.ndjson.gz"
    assert _import("--dir", str(FIXTURE), "--events", str(out)) == 0
    history = read_events(out, partitions=6)
    assert history.lines == 38
    assert lifecycle_outcomes(history) == {"fc-5": None, "fc-1300": None,
                                           "fc-15": datetime(2020, 4, 19, tzinfo=UTC),
                                           "fc-200": datetime(2020, 2, 2, tzinfo=UTC)}
    assert main(["backtest", "--events", str(out), "--cut", "2020-03-01", "--horizon", "120d", "--quiet"]) == 0


def test_a_resubscription_within_seven_days_is_no_churn(tmp_path: Path):
    copy = tmp_path / "sim"
    shutil.copytree(FIXTURE, copy)
    with (copy / "subscription.csv").open("a") as f:
        f.write("15,basic,2020-04-25,2020-05-25,10,,,1,0\n")     # 6 days after the end of 2020-04-19
        f.write("15,basic,2020-05-25,2020-06-25,10,,,1,0\n")
    result = convert(copy)
    assert result.outcomes["fc-15"] is None
    assert result.outcomes["fc-200"] == datetime(2020, 2, 2, tzinfo=UTC)


def test_a_missing_table_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    copy = tmp_path / "sim"
    shutil.copytree(FIXTURE, copy)
    (copy / "subscription.csv").unlink()
    assert _import("--dir", str(copy), "--events", str(tmp_path / "out.ndjson")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("churnsignal import fightchurn: error: ")
    assert "subscription.csv" in err and "subscription table is missing" in err
    assert not (tmp_path / "out.ndjson").exists()


def test_a_bad_row_is_named_with_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    copy = tmp_path / "sim"
    shutil.copytree(FIXTURE, copy)
    with (copy / "event.csv").open("a") as f:
        f.write("5,2020-06-18 22:00:00,9,0,\n")
    assert _import("--dir", str(copy), "--events", str(tmp_path / "out.ndjson")) == 2
    assert "event.csv: line 34: event_type_id '9' is not in event_type.csv" in capsys.readouterr().err


def test_without_a_saved_configuration_the_end_is_asked_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    copy = tmp_path / "sim"
    shutil.copytree(FIXTURE, copy)
    shutil.rmtree(copy / "socialnet7")
    assert _import("--dir", str(copy), "--events", str(tmp_path / "out.ndjson")) == 2
    assert "give --end" in capsys.readouterr().err
    # an earlier end: 15's churn on 2020-04-19 is after it, so 15 has not churned yet
    assert _import("--dir", str(copy), "--events", str(tmp_path / "out.ndjson"), "--end", "2020-04-01") == 0
    assert convert(copy, end=datetime(2020, 4, 1).date()).outcomes["fc-15"] is None
