"""docs/api.md documents exactly the endpoints the three apps serve.

Each app is built as the tests build it (in-process bus, a SQLite URL that is never opened, no lifespan):
its endpoints are the operations of its OpenAPI document plus the routes it keeps out of that document
(health, readiness, metrics, the OpenAPI/Swagger pages). In the doc, each endpoint is a heading
"### `METHOD /path`" under its service's "## <service> (...)" section, or under "## Every service" when all
three serve it. The HTML web pages (services/ui) have their own section, "## Web pages (...)", checked
against the routes of `ui_router`; alerts serves them once they are mounted there, and they are not counted
as alerts endpoints of its own section.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.routing import Route

from services.alerts.bootstrap import create_app as alerts_app
from services.ingest.bootstrap import create_app as ingest_app
from services.scoring.bootstrap import create_app as scoring_app
from services.ui.router import ui_router
from shared.bus.memory import MemoryBus
from shared.http import KeyRing
from shared.settings import ApiKey, Settings, hash_key

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
COMMON = "Every service"
PAGES = "Web pages"
FACTORIES: dict[str, Callable[..., FastAPI]] = {"ingest": ingest_app, "scoring": scoring_app,
                                                 "alerts": alerts_app}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_SECTION = re.compile(r"^## (.+?)\s*$")
_ENDPOINT = re.compile(r"^### `([A-Z]+) (/\S*)`\s*$")

Endpoint = tuple[str, str]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(kafka_bootstrap_servers="", database_url=f"sqlite+aiosqlite:///{tmp_path / 'api-doc.db'}",
                    api_keys=[ApiKey(name="doc", sha256=hash_key("doc-key"), scopes=["admin"])],
                    outbox_dir=str(tmp_path / "outbox"))


def served(app: FastAPI) -> set[Endpoint]:
    """Every (method, path) the app answers: its OpenAPI operations and the routes left out of them."""
    out = {(method.upper(), path) for path, operations in app.openapi()["paths"].items()
           for method in operations if method.upper() in METHODS}
    out.update(_hidden(app.routes))
    return out


def _hidden(routes: list[Any]) -> set[Endpoint]:
    """Routes left out of the OpenAPI document, in included routers too (FastAPI keeps an included
    router as one entry holding the original router's routes, whose paths carry the router's prefix)."""
    out: set[Endpoint] = set()
    for route in routes:
        if isinstance(route, Route) and not route.include_in_schema:
            out.update((method, route.path) for method in route.methods or () if method in METHODS)
        included = getattr(route, "original_router", None)
        if included is not None:
            out.update(_hidden(included.routes))
    return out


def documented() -> dict[str, set[Endpoint]]:
    """Endpoint headings of docs/api.md by section ("ingest", "scoring", "alerts", COMMON)."""
    sections: dict[str, set[Endpoint]] = {}
    current: str | None = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        section = _SECTION.match(line)
        if section:
            title = section.group(1)
            current = title if title == COMMON else PAGES if title.startswith(PAGES) else title.split()[0].lower()
            continue
        endpoint = _ENDPOINT.match(line)
        if endpoint:
            assert current is not None, f"endpoint heading outside a section: {line}"
            sections.setdefault(current, set()).add((endpoint.group(1), endpoint.group(2)))
        elif line.startswith("### ") and "/" in line:
            pytest.fail(f"endpoint heading not in the form ### `METHOD /path`: {line}")
    return sections


@pytest.fixture
def apps(settings: Settings) -> dict[str, set[Endpoint]]:
    return {name: served(factory(settings, bus=MemoryBus(6))) for name, factory in FACTORIES.items()}


def pages_served() -> set[Endpoint]:
    """The web pages' endpoints: the routes of `ui_router` (to be mounted on the alerts app)."""
    router = ui_router(lambda: None, link_secret=b"x" * 32, keyring=KeyRing([]),  # type: ignore[arg-type]
                       public_url="http://localhost")
    return _hidden(router.routes)


def test_doc_sections_are_the_services() -> None:
    assert set(documented()) == {*FACTORIES, COMMON, PAGES}


def test_doc_lists_exactly_the_web_pages() -> None:
    assert documented()[PAGES] == pages_served()


def test_common_endpoints_are_served_by_every_service(apps: dict[str, set[Endpoint]]) -> None:
    common = documented()[COMMON]
    assert {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")} <= common
    for name, endpoints in apps.items():
        assert common <= endpoints, f"{name} does not serve {sorted(common - endpoints)}"


@pytest.mark.parametrize("service", list(FACTORIES))
def test_doc_lists_exactly_the_served_endpoints(service: str, apps: dict[str, set[Endpoint]]) -> None:
    doc = documented()
    in_doc = doc[service] | doc[COMMON]
    endpoints = apps[service] - doc[PAGES]     # the web pages have their own section
    assert endpoints - in_doc == set(), f"{service} serves endpoints docs/api.md does not document"
    assert in_doc - endpoints == set(), f"docs/api.md documents endpoints {service} does not serve"
    # The service's own section does not repeat a common endpoint.
    assert doc[service].isdisjoint(doc[COMMON])


def test_ingest_events_endpoint_is_part_of_its_openapi(apps: dict[str, set[Endpoint]]) -> None:
    # POST /v1/events is a plain ASGI endpoint, only declared in the OpenAPI document: it must stay there.
    assert ("POST", "/v1/events") in apps["ingest"]
