"""Acceptance checks in the style of Alertmanager's `test/acceptance`: a scenario declares every
notification it expects (receiver, what it says, the time window it must arrive in); the check fails on a
missing one, a late or early one, and on any message nobody expected, so a duplicate fails the test."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from tests.support.slack import FakeSlack
from tests.support.smtp import FakeSmtp


@dataclass(frozen=True)
class Received:
    receiver: str  # "slack:<channel>" or "mail:<address>"
    text: str
    at: float  # seconds since the scenario started


@dataclass(frozen=True)
class Want:
    receiver: str
    contains: str
    window: tuple[float, float]


class Collector:
    def __init__(self, slack: FakeSlack, smtp: FakeSmtp) -> None:
        self.slack = slack
        self.smtp = smtp
        self.t0 = time.monotonic()
        self.wants: list[Want] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def at(self, t: float) -> None:
        """Sleep until `t` seconds into the scenario."""
        await asyncio.sleep(max(t - self.now(), 0.0))

    def want(self, receiver: str, contains: str, window: tuple[float, float]) -> None:
        self.wants.append(Want(receiver, contains, window))

    def received(self) -> list[Received]:
        out = [
            Received(f"slack:{m.channel}", "\n".join(m.all_text()), m.arrived_at - self.t0)
            for m in self.slack.messages()
        ]
        for mail in self.smtp.messages():
            subject = str(mail.message["Subject"])
            body = mail.text_part() or ""
            out.extend(
                Received(f"mail:{rcpt}", f"{subject}\n{body}", mail.arrived_at - self.t0)
                for rcpt in mail.rcpt_tos
            )
        return sorted(out, key=lambda r: r.at)

    async def check(self, *, quiet_s: float = 1.5) -> list[Received]:
        """Waits past the last window (plus `quiet_s` during which nothing more may arrive), then matches."""
        end = max(w.window[1] for w in self.wants) + quiet_s
        # Stop early once everything arrived, but always stay quiet_s after the last arrival.
        while self.now() < end:
            got = self.received()
            if len(got) >= len(self.wants) and self.now() >= got[-1].at + quiet_s:
                break
            await asyncio.sleep(0.05)
        got = self.received()
        unmatched = list(got)
        problems: list[str] = []
        for want in self.wants:
            match = next(
                (r for r in unmatched if r.receiver == want.receiver and want.contains in r.text), None
            )
            if match is None:
                problems.append(f"missing: {want}")
                continue
            unmatched.remove(match)
            lo, hi = want.window
            if not lo <= match.at <= hi:
                problems.append(f"outside its window: {want} arrived at {match.at:.2f}s")
        problems.extend(
            f"unexpected (duplicate?): {r.receiver} at {r.at:.2f}s: {r.text[:80]!r}" for r in unmatched
        )
        assert not problems, "\n".join(problems)
        assert len(got) == len(self.wants)
        return got
