"""The HTTP adapter of every source: one explicit route per vendor, `POST /v1/sources/<source>`.

A request is answered in this order: 503 when the source has no secret (`CHURNSIGNAL_SOURCE_SECRETS`);
413 over the body limit; 401 when the signature (or token) does not match the raw body, or its timestamp is
stale; 400 when the body is not JSON; 422 naming what the payload lacks; then the mapped events go through
`Intake.accept` exactly like `POST /v1/events` (validation, all or nothing, 503 while Kafka is away) under a
synthetic key `source:<name>` with scope `ingest` (the signature authenticates the request, not an API key).
202 `{"accepted", "ignored"}` when events were published, 200 when every vendor event was ignored.

Metrics: `churnsignal_ingest_source_requests_total{source, status}` and
`churnsignal_ingest_source_events_total{source, outcome}` (`published`, `ignored`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from services.ingest.api import read_body
from services.ingest.body import Encoding, content_encoding, json_document
from services.ingest.intake import Intake
from services.ingest.sources import SOURCES, Source
from services.ingest.sources.delivery import Delivery
from services.ingest.sources.options import SourceOptions, load_options
from shared.errors import ChurnsignalError, UnsupportedMediaType
from shared.metrics import SourceMetrics
from shared.settings import ApiKey, Settings

_EMPTY = "request body is empty: a webhook posts a JSON payload"

PREFIX = "/v1/sources/"


class SourceNotConfigured(ChurnsignalError):
    status_code = 503


class SourceEndpoint:
    """`POST /v1/sources/<source>` for one source."""

    def __init__(self, source: Source, intake: Intake, metrics: SourceMetrics, *, secret: SecretStr | None,
                 options: SourceOptions, public_url: str | None, max_body_bytes: int,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._source = source
        self._intake = intake
        self._metrics = metrics
        self._secret = secret
        self._options = options
        self._public_url = public_url.rstrip("/") if public_url else None
        self._max_body_bytes = max_body_bytes
        self._clock = clock
        self._key = ApiKey(name=f"source:{source.name}", sha256="0" * 64, scopes=["ingest"])

    async def __call__(self, request: Request) -> JSONResponse:
        status = "500"  # unless answered below: the ASGI server logs the error and answers 500
        try:
            response = await self._answer(request)
            status = str(response.status_code)
            return response
        except ChurnsignalError as exc:
            status = str(exc.status_code)
            raise
        finally:
            self._metrics.requests.labels(self._source.name, status).inc()

    async def _answer(self, request: Request) -> JSONResponse:
        name = self._source.name
        if self._secret is None:
            raise SourceNotConfigured(
                f"source '{name}' is not configured: set its secret in CHURNSIGNAL_SOURCE_SECRETS, e.g. "
                f"{{\"{name}\": \"<the secret shared with {self._source.title}>\"}}", source=name)
        if content_encoding(request.headers.get("content-encoding")) is not Encoding.IDENTITY:
            raise UnsupportedMediaType(f"{self._source.title} webhooks are read uncompressed (their signature "
                                       "is over the body as sent)")
        body = await read_body(request.receive, request.headers.get("content-length"), self._max_body_bytes)
        delivery = Delivery(method=request.method, uri=self._uri(request), headers=request.headers,
                            query=dict(request.query_params), body=body)
        self._source.verify(delivery, self._secret.get_secret_value(), self._clock())
        mapped = self._source.parse(json_document(body, _EMPTY), delivery.query, self._options)
        ignored = len(mapped.ignored)
        if ignored:
            self._metrics.events.labels(name, "ignored").inc(ignored)
        accepted = 0
        if mapped.events:
            accepted = await self._intake.accept(self._key, mapped.events)
            self._metrics.events.labels(name, "published").inc(accepted)
        return JSONResponse({"accepted": accepted, "ignored": ignored}, status_code=202 if accepted else 200)

    def _uri(self, request: Request) -> str:
        """The URI the vendor called: the configured public base with this path and query, else the request's."""
        if self._public_url is None:
            return str(request.url)
        query = request.url.query
        return self._public_url + request.url.path + (f"?{query}" if query else "")


def install_sources(app: FastAPI, intake: Intake, settings: Settings, registry: CollectorRegistry, *,
                    clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
    """One explicit route per source (`POST /v1/sources/zendesk`, ...), kept out of the OpenAPI document:
    vendors, not people, call them (docs/integrations.md describes them)."""
    options = load_options(settings.sources_file)
    metrics = SourceMetrics(registry)
    for source in SOURCES.values():
        endpoint = SourceEndpoint(source, intake, metrics, secret=settings.source_secrets.get(source.name),
                                  options=options, public_url=settings.ingest_public_url,
                                  max_body_bytes=settings.ingest_max_body_bytes, clock=clock)
        app.add_api_route(PREFIX + source.name, _route(endpoint), methods=["POST"], include_in_schema=False,
                          name=f"source_{source.name}")


def _route(endpoint: SourceEndpoint) -> Callable[[Request], Any]:
    async def receive_webhook(request: Request) -> JSONResponse:
        return await endpoint(request)

    return receive_webhook
