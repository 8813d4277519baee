"""A partition number the scoring consumer owns, as the loop, the intake and the batch builder share it.

One partition number spans every input topic (accounts are keyed the same on all of them), so state,
clock and merge are per number, not per topic-partition.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.scoring.entrypoints.feed import PartitionFeed
from services.scoring.entrypoints.ports import Clock

# The service label of the shared metrics (lag, dead letters) and of the dead letters' records.
SERVICE = "scoring"


@dataclass
class OwnedPartition:
    """A partition number this consumer owns: its accounts' encoded states, its clock and its feed."""

    number: int
    states: dict[str, bytes]
    clock: Clock
    feed: PartitionFeed
    blocked_since: float | None = None
    blocked_reported: float = 0.0
    # The decoded form of some of `states` (the most recently used), identical in content.
    live: OrderedDict[str, Any] = field(default_factory=OrderedDict)
    # The seq of its last health feed row (stored or deleted since): the next batch writes the one after.
    health_seq: int = 0


def tracked(owned: Mapping[int, OwnedPartition]) -> int:
    """Accounts whose state is held in memory, over all owned partitions (the tracked-accounts gauge)."""
    return sum(len(o.states) for o in owned.values())
