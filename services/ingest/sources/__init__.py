"""Vendor webhooks on ingest: `POST /v1/sources/<source>` for Zendesk, Intercom, HubSpot, Typeform and
Delighted (the integration guide: docs/integrations.md).

Each vendor has one pure module: `verify` checks its signature (or token) over the raw body, `parse` maps
its payload onto native envelopes (`delivery.Mapped`), naming what a payload lacks in a 422. `http.py` is
the one HTTP adapter shared by all of them: it reads the body, checks, maps, and hands the envelopes to
the same `Intake.accept` as `POST /v1/events`, so nothing differs downstream. `options.py` reads the
per-source options (`CHURNSIGNAL_SOURCES_FILE`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.ingest.sources import delighted, hubspot, intercom, typeform, zendesk
from services.ingest.sources.delivery import Delivery, Mapped
from services.ingest.sources.options import SourceOptions


@dataclass(frozen=True)
class Source:
    name: str
    title: str
    verify: Callable[[Delivery, str, datetime], None]
    parse: Callable[[Any, Mapping[str, str], SourceOptions], Mapped]


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source(zendesk.NAME, "Zendesk", zendesk.verify, lambda p, q, o: zendesk.parse(p, q, o.zendesk)),
    Source(intercom.NAME, "Intercom", intercom.verify, lambda p, q, o: intercom.parse(p, q, o.intercom)),
    Source(hubspot.NAME, "HubSpot", hubspot.verify, lambda p, q, o: hubspot.parse(p, q, o.hubspot)),
    Source(typeform.NAME, "Typeform", typeform.verify, lambda p, q, o: typeform.parse(p, q, o.typeform)),
    Source(delighted.NAME, "Delighted", delighted.verify, lambda p, q, o: delighted.parse(p, q, o.delighted)),
)}
