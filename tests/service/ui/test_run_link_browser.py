"""The link a CSM gets: `churnsignal run` (what `make run` starts) writes its Slack messages to the outbox;
the "Open account" button of one opens the account's page in a real browser, with no API key."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.simulate.test_run import Run
from tests.service.ui.browser import NEEDS_CHROMIUM, page_text, screenshot

pytestmark = NEEDS_CHROMIUM


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    started = Run(tmp_path, "--accounts", "30", "--days", "42", "--live-days", "3", "--speedup", "43200",
                  "--duration", "120", env={"CHURNSIGNAL_PUBLIC_URL": "http://127.0.0.1:{alerts}"})
    try:
        yield started
    finally:
        if started.proc.poll() is None:
            started.proc.send_signal(signal.SIGINT)
            try:
                started.proc.wait(timeout=60)
            except Exception:
                started.proc.kill()
                started.proc.wait(timeout=10)


def _open_account_button(outbox: Path, timeout: float) -> tuple[str, dict]:
    """The first Slack payload in the outbox with an "Open account" button: (its URL, the payload)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted(outbox.glob("*slack*.json")) if outbox.exists() else []:
            payload = json.loads(path.read_text())
            for block in payload.get("blocks", []):
                for element in block.get("elements", []) if block.get("type") == "actions" else []:
                    if element.get("text", {}).get("text") == "Open account" and element.get("url"):
                        return element["url"], payload
        time.sleep(0.5)
    raise AssertionError(f"no Slack message with an Open account button in {outbox} within {timeout} s")


def test_the_open_account_link_of_a_slack_message_opens_the_page(run: Run, browser) -> None:  # noqa: ANN001
    url, payload = _open_account_button(run.tmp / "outbox", timeout=150)
    alerts = f"http://127.0.0.1:{run.ports['alerts']}"
    assert url.startswith(f"{alerts}/ui/accounts/") and "?t=" in url, url
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")

    browser.get(url)
    text = page_text(browser)
    header = payload["blocks"][0]["text"]["text"]           # "High · Usage drop · Nakatomi Outfitters"
    severity, risk_label, name = header.split(" · ")[-3:]
    assert name in text
    assert risk_label.lower() in text.lower(), f"{risk_label} not on the page"
    for heading in ("Health", "Components", "Open risks", "Why it moved"):
        assert heading in text, heading
    assert "/100" in text or "score" in text.lower()
    screenshot(browser, "account-from-make-run")

    # The same page without the token is closed to a stranger: the 401 page.
    bare = url.split("?")[0]
    answer = httpx.get(bare, timeout=10)
    assert answer.status_code == 401 and answer.headers["content-type"].startswith("text/html")


def test_the_run_says_where_the_pages_are_with_a_signed_portfolio_link(run: Run) -> None:
    found = run.wait_for(r"portfolio of (\S+) \(a signed link, valid 7 days\): (http\S+)", timeout=150)
    csm, url = found.group(1), found.group(2)
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert csm in answer.text and "/ui/accounts/" in answer.text   # the CSM's book, linking to its accounts
