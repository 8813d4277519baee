"""The Bus port and its adapters (Kafka, in-process)."""

from __future__ import annotations

from shared.bus.port import Bus, OutMessage, Publisher, RebalanceListener, Record, Subscriber, TopicPartition
from shared.settings import Settings


def build_bus(settings: Settings) -> Bus:
    """Kafka when bootstrap servers are configured, else the in-process bus (embedded mode)."""
    if settings.embedded:
        from shared.bus.memory import MemoryBus

        return MemoryBus(settings.topic_partitions)
    from shared.bus.kafka import KafkaBus

    return KafkaBus(settings.kafka_bootstrap_servers, publish_timeout_s=settings.ingest_publish_timeout_s,
                    max_poll_records=settings.scoring_batch_max_records)


__all__ = ["Bus", "OutMessage", "Publisher", "RebalanceListener", "Record", "Subscriber", "TopicPartition",
           "build_bus"]
