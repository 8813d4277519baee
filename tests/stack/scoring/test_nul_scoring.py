"""U+0000 never reaches scoring's database: an input record carrying one is dead-lettered (whoever
produced it) and the partition goes on; a read API request carrying one is a 400. On the embedded stack
and on the real Kafka + PostgreSQL, whose text cannot hold U+0000 at all."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx

from services.scoring.adapters import tables as t
from services.scoring.bootstrap import create_app
from shared.bus.port import OutMessage
from shared.codec import encode_input, loads
from tests.conftest import READ_KEY
from tests.stack.scoring.events import T0, account, days, event
from tests.stack.scoring.harness import Stack, fetch_all, produce, read_topic, records_for, running, wait_caught_up

READ = {"Authorization": f"Bearer {READ_KEY}"}
NUL_MESSAGE = "must not contain a NUL character (U+0000)"


async def test_a_record_with_a_nul_is_dead_lettered_and_the_account_goes_on(stack: Stack):
    topics = stack.topics
    before = [account("acme", T0, name="Acme"),
              event("contact", "acme", T0 + days(1), {"contact_id": "c1", "name": "Ada", "role": "champion",
                                                     "status": "active"})]
    poisoned = event("contact", "acme", T0 + days(2), {"contact_id": "c1", "name": "A\u0000B",
                                                       "role": "champion", "status": "left"})
    after = [event("contact", "acme", T0 + days(3), {"contact_id": "c2", "name": "Bo", "role": "admin",
                                                    "status": "active"}),
             account("acme", T0 + days(4), name="Acme Rockets")]
    # Produced straight to the input topic (not through ingest), between good events of the same account.
    bad = OutMessage(topics.accounts, b"acme", encode_input(poisoned, T0))
    await produce(stack.bus, [*records_for(topics, before), bad, *records_for(topics, after)])

    async with running(stack) as rt:
        await wait_caught_up(stack, rt)
        assert rt.consumer.running
        dead_count = rt.registry.get_sample_value("churnsignal_dead_letters_total",
                                                  {"service": "scoring", "reason": "schema"})
        assert dead_count == 1

    [dead] = [loads(v) for v in await read_topic(stack.bus, topics.deadletter)]
    assert dead["reason"] == f"data.name: {NUL_MESSAGE}"
    assert dead["source_topic"] == topics.accounts
    assert loads(dead["value"])["data"]["name"] == "A\u0000B"  # the original bytes, for whoever looks
    url = stack.settings.database_url
    processed = {r["event_id"] for r in await fetch_all(url, t.processed_events, t.processed_events.c.event_id)}
    assert processed == {e["id"] for e in [*before, *after]}
    [acme] = await fetch_all(url, t.accounts, t.accounts.c.account_id)
    assert acme["account_id"] == "acme"


@contextlib.asynccontextmanager
async def serving(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(stack.settings, bus=stack.bus)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://scoring",
                                     headers=READ) as client:
            yield client


async def test_a_nul_in_an_account_path_or_a_query_is_a_400_not_a_database_error(stack: Stack):
    await produce(stack.bus, records_for(stack.topics, [account("acme", T0, name="Acme")]))
    async with serving(stack) as client:
        for _ in range(300):
            if (await client.get("/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        await wait_caught_up(stack, None)
        assert (await client.get("/v1/accounts/acme/health")).status_code == 200
        assert (await client.get("/v1/accounts/nobody/health")).status_code == 404

        for url, part in [("/v1/accounts/acme%00/health", "path"), ("/v1/accounts/%00/history", "path"),
                          ("/v1/risks?account_id=acme%00", "query string"),
                          ("/v1/accounts?cursor=%00", "query string")]:
            resp = await client.get(url)
            assert resp.status_code == 400, (url, resp.status_code, resp.text)
            assert resp.json() == {"error": f"the request {part} {NUL_MESSAGE}"}
        # the service is unharmed
        assert (await client.get("/v1/accounts/acme/health")).json()["account_id"] == "acme"
