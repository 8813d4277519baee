"""Embedded mode: alerts go to an outbox folder instead of Slack and SMTP.

Slack notifications become `<name>.json` (the exact payload that would be posted), emails `<name>.eml` (the
full MIME message), webhooks `<name>.webhook.json` (the body). Files are named after the dedup key, so a
resend overwrites instead of duplicating. One log line per alert says what, to whom and why.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
from pathlib import Path

from services.alerts.domain.content import Notification, one_line
from services.alerts.notify.email import build_message

log = logging.getLogger("churnsignal.alerts.outbox")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def outbox_name(notification: Notification) -> str:
    digest = hashlib.sha256(notification.dedup_key.encode()).hexdigest()[:12]
    readable = _UNSAFE.sub("_", notification.dedup_key)[:80].strip("_")
    return f"{readable}-{digest}"


class ConsoleChannel:
    kind = "console"

    def __init__(self, outbox_dir: str | os.PathLike[str], *, sender: str = "churnsignal@localhost",
                 logger: logging.Logger | None = None) -> None:
        self.outbox = Path(outbox_dir)
        self._sender = sender
        self._log = logger or log

    async def send(self, notification: Notification) -> None:
        target = notification.target
        name = outbox_name(notification)
        if target.kind == "email":
            path = self.outbox / f"{name}.eml"
            data = bytes(build_message(notification, self._sender))
        elif target.kind == "webhook":
            path = self.outbox / f"{name}.webhook.json"
            data = json.dumps(notification.webhook_body, indent=2, ensure_ascii=False, default=str).encode()
        else:
            path = self.outbox / f"{name}.json"
            payload = {**notification.slack_payload(), "channel": target.channel or target.address,
                       "target": target.key, "kind": notification.kind}
            data = json.dumps(payload, indent=2, ensure_ascii=False).encode()
        await asyncio.to_thread(_write_atomically, path, data)
        self._log.info("ALERT %s %s to %s : %s", notification.kind, notification.severity, target.key,
                       one_line(notification.summary, 500))


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
