"""The web pages over HTTP (no browser): access by signed link or API key, HTML errors, what they show."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import quote

import httpx
import pytest

from shared.links import sign_account_link, sign_portfolio_link
from tests.conftest import INGEST_KEY, READ_KEY
from tests.service.ui.conftest import SECRET, pages_app
from tests.service.ui.world import CSM_EMAIL, CSM_NAME, CSM_SLACK, World


@pytest.fixture
async def client(world: World) -> AsyncIterator[httpx.AsyncClient]:
    app = pages_app(world)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pages") as c:
            yield c


def _html(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "<script" not in response.text
    assert '<html lang="en">' in response.text
    return response.text


def _account_url(world: World, account_id: str, **kw) -> str:
    token = sign_account_link(SECRET, account_id, "U01MAYAPATEL", now=kw.pop("now", world.now), **kw)
    return f"/ui/accounts/{quote(account_id, safe='')}?t={token}"


async def test_account_link_shows_the_account(client: httpx.AsyncClient, world: World):
    text = _html(await client.get(_account_url(world, world.risky_account)), 200)
    assert world.risky_account in text
    for heading in ("Health", "Why it moved", "Components", "Open risks", "Alerts and notifications",
                    "Contacts"):
        assert f">{heading}</h2>" in text
    assert '<th scope="col">Component</th>' in text and "Usage trend" in text
    assert re.search(r'<svg class="spark" role="img"', text)
    assert 'id="open-risks"' in text and "Opened 2026-" in text
    assert "slack_dm:U01MAYAPATEL" in text and "SMTP 451 try again later" in text   # the delivery log


async def test_links_that_do_not_open_the_page_are_401_html(client: httpx.AsyncClient, world: World):
    account = world.risky_account
    good = _account_url(world, account)
    forged = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    assert "This link is not valid" in _html(await client.get(forged), 401)
    expired = _account_url(world, account, now=world.now - timedelta(days=8))
    assert "This link has expired" in _html(await client.get(expired), 401)
    other = _account_url(world, world.csm_accounts[0] if world.csm_accounts[0] != account
                         else world.csm_accounts[1])
    other_token = other.split("?t=")[1]
    assert "This link is not valid" in _html(await client.get(f"/ui/accounts/{account}?t={other_token}"), 401)
    portfolio = sign_portfolio_link(SECRET, CSM_EMAIL, now=world.now)
    assert "This link is not valid" in _html(await client.get(f"/ui/accounts/{account}?t={portfolio}"), 401)
    response = await client.get(f"/ui/accounts/{account}")
    assert "This link is not valid" in _html(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "This link is not valid" in _html(await client.get(f"/ui/accounts/{account}?t=garbage"), 401)


async def test_an_api_key_with_read_opens_any_page(client: httpx.AsyncClient, world: World):
    account = world.risky_account
    _html(await client.get(f"/ui/accounts/{account}", headers={"X-API-Key": READ_KEY}), 200)
    _html(await client.get(f"/ui/accounts/{account}", headers={"Authorization": f"Bearer {READ_KEY}"}), 200)
    assert "Not allowed" in _html(await client.get(f"/ui/accounts/{account}",
                                                   headers={"X-API-Key": INGEST_KEY}), 403)
    assert "This link is not valid" in _html(await client.get(f"/ui/accounts/{account}",
                                                              headers={"X-API-Key": "nope"}), 401)
    text = _html(await client.get("/ui/portfolio", params={"csm": CSM_SLACK}, headers={"X-API-Key": READ_KEY}),
                 200)
    assert all(f'data-account="{a}"' in text for a in world.csm_accounts)


async def test_unknown_account_is_404_html(client: httpx.AsyncClient, world: World):
    assert "Unknown account" in _html(await client.get(_account_url(world, "no-such-account")), 404)
    assert "Unknown account" in _html(await client.get("/ui/accounts/nope", headers={"X-API-Key": READ_KEY}), 404)


def _rows(text: str) -> list[str]:
    return re.findall(r'<tr data-account="([^"]+)">', text)


async def test_portfolio_link_lists_the_csm_accounts_sorted(client: httpx.AsyncClient, world: World):
    token = sign_portfolio_link(SECRET, CSM_EMAIL, now=world.now)
    text = _html(await client.get("/ui/portfolio", params={"csm": CSM_EMAIL, "t": token}), 200)
    assert sorted(_rows(text)) == world.csm_accounts
    # The token alone names the CSM; and the CSM matched by name or Slack id needs its own link.
    assert sorted(_rows(_html(await client.get(f"/ui/portfolio?t={token}"), 200))) == world.csm_accounts
    assert "This link is not valid" in _html(await client.get("/ui/portfolio", params={"csm": CSM_NAME,
                                                                                       "t": token}), 401)
    by_arr = _html(await client.get("/ui/portfolio", params={"csm": CSM_EMAIL, "t": token, "sort": "arr"}), 200)
    arrs = [float(v) for v in re.findall(r'data-arr="([0-9.]+)"', by_arr)]
    assert arrs == sorted(arrs, reverse=True) and len(arrs) == len(world.csm_accounts)
    ascending = _html(await client.get("/ui/portfolio", params={"csm": CSM_EMAIL, "t": token, "sort": "arr",
                                                                "dir": "asc"}), 200)
    assert [float(v) for v in re.findall(r'data-arr="([0-9.]+)"', ascending)] == sorted(arrs)
    # Header links keep the token and the filters; account links are signed for the same receiver.
    assert f"t={token}" in by_arr and 'href="/ui/portfolio?csm=' in by_arr
    link = re.search(r'<th scope="row"><a href="([^"]+)"', by_arr).group(1).replace("&amp;", "&")
    _html(await client.get(link), 200)


async def test_portfolio_filters(client: httpx.AsyncClient, world: World):
    token = sign_portfolio_link(SECRET, CSM_EMAIL, now=world.now)
    base = {"csm": CSM_EMAIL, "t": token}
    everyone = _rows(_html(await client.get("/ui/portfolio", params=base), 200))
    counted = 0
    for tier in ("green", "yellow", "red", "unknown"):
        counted += len(_rows(_html(await client.get("/ui/portfolio", params={**base, "tier": tier}), 200)))
    assert counted == len(everyone)
    assert _rows(_html(await client.get("/ui/portfolio", params={**base, "renewal_within": "0"}), 200)) == []
    soon = _rows(_html(await client.get("/ui/portfolio", params={**base, "renewal_within": "3650"}), 200))
    assert sorted(soon) == sorted(everyone)
    assert _rows(_html(await client.get("/ui/portfolio", params={**base, "segment": "no-such-segment"}), 200)) == []
    assert "Invalid filter" in _html(await client.get("/ui/portfolio", params={**base, "renewal_within": "x"}), 400)
    assert "Unknown tier" in _html(await client.get("/ui/portfolio", params={**base, "tier": "purple"}), 400)
    assert "Which portfolio?" in _html(await client.get("/ui/portfolio", headers={"X-API-Key": READ_KEY}), 400)
    assert "This link is not valid" in _html(await client.get("/ui/portfolio"), 401)
    account_token = sign_account_link(SECRET, world.csm_accounts[0], "U01MAYAPATEL", now=world.now)
    assert "This link is not valid" in _html(await client.get(f"/ui/portfolio?t={account_token}"), 401)


async def test_filter_form_controls_have_labels(client: httpx.AsyncClient, world: World):
    token = sign_portfolio_link(SECRET, CSM_EMAIL, now=world.now)
    text = _html(await client.get("/ui/portfolio", params={"csm": CSM_EMAIL, "t": token}), 200)
    for control in re.findall(r'<(?:select|input)[^>]*\bid="([^"]+)"', text):
        assert f'<label for="{control}">' in text
    assert text.count('<th scope="col"') >= 5
