"""Segment on ingest (docs/integrations.md, "Segment"): a team's Segment stream, pointed at ingest, reaches
scoring as native events.

- `http.py`: the plain ASGI endpoints: the HTTP Tracking API paths (`/v1/track`, `/v1/batch`, ...) and the
  Webhooks destination's `/v1/sources/segment`; authentication, body, then `Intake.accept` like `/v1/events`.
- `mapping.py`: messages -> envelopes (pure): track/page/screen -> usage, group -> account, identify -> contact.
- `config.py` and `mapping.yaml`: what the mapping reads where (defaults, `CHURNSIGNAL_SEGMENT_MAPPING_FILE`).
- `directory.py`: the user -> account map learned from `group` calls, on a compacted topic every process reads.
"""
