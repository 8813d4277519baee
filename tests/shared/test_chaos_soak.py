"""The chaos command's soak and servers, without services: the retention settings it runs with, which series it
expects to level off (and says so), and the private servers it stops and starts instead of the shared ones."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from chaos import cases
from chaos.harness import Outage
from chaos.report import CaseResult, Sample, render_samples
from chaos.services import PrivateServices
from shared.settings import Settings


def test_the_soak_runs_with_ages_of_minutes_the_settings_accept(monkeypatch: pytest.MonkeyPatch):
    for name, value in cases.soak_env().items():
        monkeypatch.setenv(name, value)
    settings = Settings()       # as the services read them: no error
    assert settings.retention_age("scoring_processed_events") == timedelta(minutes=5)
    assert settings.retention_age("scoring_outbox") == timedelta(minutes=5)
    assert settings.retention_age("alerts_processed") == timedelta(minutes=5)
    assert settings.retention_age("alerts_deliveries") == timedelta(days=90)   # its least age is 8 days
    assert settings.retention_interval_s == 60 and settings.scoring_allowed_lateness_s == 60
    note = cases.soak_ages_note(settings)
    assert "scoring_processed_events 5m" in note and "alerts_deliveries 90d" in note
    assert "an id goes about 16 minutes after it was recorded" in note
    # Rows of the tables under short ages go early enough in the documented 30 minutes to see the plateau.
    assert cases._pruned_after(settings, "scoring_processed_events") == timedelta(minutes=17)
    assert cases._pruned_after(settings, "scoring_outbox") == timedelta(minutes=6)


def _soak_samples(grow: set[str], n: int = 61) -> list[Sample]:
    """Samples every 30 s: the series in `grow` (tables, or "<service> RSS") grow steadily, the others level
    off after a third."""
    samples = []
    for i in range(n):
        level = min(i, n // 3)
        rows = {t: 1000 * (i if t in grow else level) for t in cases.SOAK_TABLES}
        rss = {s: 2**20 * (100 + (i if f"{s} RSS" in grow else level)) for s in cases.SOAK_SERVICES}
        samples.append(Sample(at_s=30.0 * i, rss=rss, rows=rows, sizes={t: 100 * r for t, r in rows.items()}))
    return samples


def test_anything_growing_in_the_last_third_is_a_finding_and_the_others_are_said():
    settings = cases.soak_settings()
    fine = CaseResult("soak", "5. Soak", "", samples=_soak_samples(set()))
    cases._levels(fine, settings, 30 * 60)
    assert not fine.findings
    notes = "\n".join(fine.notes)
    assert "Still growing at the end: none" in notes
    assert "scoring_history grows with the departures" in notes
    assert "scoring RSS grows with the departures" in notes
    assert "Expected to level off (rows pruned once this old): scoring_processed_events (17 min)" in notes

    leaking = CaseResult("soak", "5. Soak", "", samples=_soak_samples({"scoring_outbox", "alerts RSS"}))
    cases._levels(leaking, settings, 30 * 60)
    assert leaking.findings == ["still growing in the last third of the soak, with no departures and the first "
                                "retention cycles done: alerts RSS, scoring_outbox rows, scoring_outbox size"]


def test_departures_are_spread_evenly_over_the_first_two_thirds_and_stop():
    per_batch = cases.SOAK_DEPARTURES_PER_S * cases.INGEST_BATCH / cases.SOAK_RATE
    batches = int(30 * 60 * cases.SOAK_RATE / cases.INGEST_BATCH)          # 30 minutes of batches
    departures = int(30 * 60 * cases.SOAK_DEPARTING_SHARE * cases.SOAK_DEPARTURES_PER_S)
    carried = [(seq, cases.departure_in(seq, per_batch, departures)) for seq in range(batches)]
    numbers = [k for _, k in carried if k is not None]
    assert numbers == list(range(departures)) == list(range(3600))       # each once, in order
    last = max(seq for seq, k in carried if k is not None)
    assert batches * 0.66 < last < batches * 2 / 3                        # none in the last third
    first_minute = [k for seq, k in carried if k is not None and seq < cases.SOAK_RATE / cases.INGEST_BATCH * 60]
    assert len(first_minute) == 180                                       # 3 a second


def test_a_soak_too_short_for_the_ages_says_so_instead_of_finding():
    pruned = set(cases.SOAK_TABLES) - set(cases.SOAK_GROWS_WITH_DEPARTURES)   # the tables retention prunes
    result = CaseResult("soak", "5. Soak", "", samples=_soak_samples(pruned, n=7))
    cases._levels(result, cases.soak_settings(), 3 * 60)
    assert not result.findings
    assert any(n.startswith("Too short a soak for these tables to level off") and "scoring_outbox (6 min)" in n
               for n in result.notes)


def test_the_sample_table_gives_each_tables_rows_and_size_a_trend():
    lines = "\n".join(render_samples(_soak_samples({"scoring_history"})))
    assert "| scoring_outbox rows | 0 | 20,000 | levels off |" in lines
    assert "| scoring_history rows | 0 | 60,000 | still grows" in lines
    assert "| scoring_outbox size |" in lines


def test_the_private_servers_never_inherit_the_shared_ones(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    monkeypatch.setenv("CHURNSIGNAL_DATABASE_URL", "postgresql+asyncpg://u:p@127.0.0.1:55432/churnsignal")
    services = PrivateServices.on_free_ports(tmp_path / "services")
    env = services.env()
    assert "CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS" not in env and "CHURNSIGNAL_DATABASE_URL" not in env
    assert env["SERVICES_VAR_DIR"] == str(tmp_path / "services")
    ports = {services.kafka_port, services.controller_port, services.pg_port}
    assert len(ports) == 3 and not ports & {9092, 9093, 55432}
    assert env["SERVICES_KAFKA_PORT"] == str(services.kafka_port)
    assert services.bootstrap_servers == f"127.0.0.1:{services.kafka_port}"
    assert services.database_url().endswith(f"@127.0.0.1:{services.pg_port}/churnsignal_test")


def test_an_outage_stops_the_private_server(tmp_path: Path):
    ran: list[str] = []

    class _Services(PrivateServices):
        def run(self, command: str, *, timeout_s: float = 300) -> str:
            ran.append(command)
            return ""

    services = _Services(tmp_path, kafka_port=21001, controller_port=21002, pg_port=21003)
    broker, database = Outage("kafka", services), Outage("pg", services)
    assert (broker.port, database.port) == (21001, 21003)
    broker.stopped = database.stopped = True
    broker.restore()
    database.restore()
    assert ran == ["kafka-start", "pg-start"]
