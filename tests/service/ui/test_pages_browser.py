"""The web pages in a real browser: headless Chromium (Debian's /usr/bin/chromium, driven through
/usr/bin/chromedriver by Selenium) against a real uvicorn server on a free loopback port. Nothing is
downloaded: the driver path is given, so Selenium Manager is never asked to find or fetch anything.

`make tools` installs chromium and chromium-driver (scripts/install-tools.sh). Screenshots of each page are
saved under var/screenshots/.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import quote

import httpx
import pytest
import uvicorn

from shared.links import sign_account_link, sign_portfolio_link
from tests.service.ui.browser import NEEDS_CHROMIUM, page_text, screenshot
from tests.service.ui.conftest import SECRET, pages_app
from tests.service.ui.world import CSM_EMAIL, World

pytestmark = NEEDS_CHROMIUM


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(world: World) -> Iterator[str]:
    """The pages app on a real uvicorn server in a thread; yields its base URL."""
    port = _free_port()
    config = uvicorn.Config(pages_app(world), host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on", access_log=False)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, name="ui-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive(), "the server did not start"
        assert time.monotonic() < deadline, "the server did not start within 30s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=30)


def test_signed_account_link_shows_the_account(browser, server: str, world: World):  # noqa: ANN001
    from selenium.webdriver.common.by import By

    account = world.risky_account
    token = sign_account_link(SECRET, account, "U01MAYAPATEL", now=world.now)
    browser.get(f"{server}/ui/accounts/{quote(account, safe='')}?t={token}")
    name = browser.find_element(By.TAG_NAME, "h1").text
    assert name and name != "This link is not valid"
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    score = browser.find_element(By.ID, "score").text
    assert score.splitlines()[0] == "Score" and score.splitlines()[1].replace("—", "0").isdigit()
    components = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#components tbody th[scope=row]")]
    assert {"Usage trend", "Support load", "Sentiment"} <= set(components)
    risks = browser.find_elements(By.CSS_SELECTOR, "#open-risks > li")
    assert risks, "the account has open risks"
    assert all(r.find_elements(By.CSS_SELECTOR, "ul.evidence li") for r in risks)
    assert browser.find_element(By.CSS_SELECTOR, "svg.spark").is_displayed()
    assert "slack_dm:U01MAYAPATEL" in page_text(browser)
    screenshot(browser, "account")


def test_forged_and_expired_links_show_the_401_page(browser, server: str, world: World):  # noqa: ANN001
    account = world.risky_account
    path = f"/ui/accounts/{quote(account, safe='')}"
    token = sign_account_link(SECRET, account, "U01MAYAPATEL", now=world.now)
    payload, signature = token.split(".")
    forged = f"{payload}.{('A' if signature[0] != 'A' else 'B') + signature[1:]}"
    expired = sign_account_link(SECRET, account, "U01MAYAPATEL", now=world.now - timedelta(days=8))

    browser.get(f"{server}{path}?t={forged}")
    assert "This link is not valid" in page_text(browser)
    screenshot(browser, "link-not-valid")
    browser.get(f"{server}{path}?t={expired}")
    assert "This link has expired" in page_text(browser)
    screenshot(browser, "link-expired")

    for bad in (forged, expired):
        response = httpx.get(f"{server}{path}", params={"t": bad}, timeout=10)
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("text/html")


def test_portfolio_sorts_by_the_clicked_header(browser, server: str, world: World):  # noqa: ANN001
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    token = sign_portfolio_link(SECRET, CSM_EMAIL, now=world.now)
    browser.get(f"{server}/ui/portfolio?csm={quote(CSM_EMAIL)}&t={token}")
    rows = browser.find_elements(By.CSS_SELECTOR, "#portfolio tbody tr[data-account]")
    assert sorted(r.get_attribute("data-account") for r in rows) == world.csm_accounts
    screenshot(browser, "portfolio")

    def arrs() -> list[float]:
        cells = browser.find_elements(By.CSS_SELECTOR, "#portfolio tbody td[data-arr]")
        return [float(c.get_attribute("data-arr")) for c in cells if c.get_attribute("data-arr")]

    browser.find_element(By.CSS_SELECTOR, "#portfolio thead a[data-sort=arr]").click()
    WebDriverWait(browser, 10).until(ec.url_contains("sort=arr"))
    largest_first = arrs()
    assert len(largest_first) == len(world.csm_accounts)
    assert largest_first == sorted(largest_first, reverse=True)
    header = browser.find_element(By.CSS_SELECTOR, "#portfolio thead th[aria-sort]")
    assert header.get_attribute("aria-sort") == "descending" and header.text.startswith("ARR")
    screenshot(browser, "portfolio-by-arr")

    browser.find_element(By.CSS_SELECTOR, "#portfolio thead a[data-sort=arr]").click()
    WebDriverWait(browser, 10).until(ec.url_contains("dir=asc"))
    assert arrs() == sorted(largest_first)

    # An account of the portfolio opens from it (the link is signed for the same receiver).
    first = browser.find_element(By.CSS_SELECTOR, "#portfolio tbody th[scope=row] a")
    expected = first.text
    first.click()
    WebDriverWait(browser, 10).until(ec.url_contains("/ui/accounts/"))
    assert browser.find_element(By.TAG_NAME, "h1").text == expected
