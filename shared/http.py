"""HTTP plumbing shared by the three services: auth, error mapping, health/readiness/metrics routes."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.errors import BadRequest, ChurnsignalError, Forbidden, Unauthorized
from shared.events import NUL, NUL_MESSAGE
from shared.settings import ApiKey, hash_key


class KeyRing:
    """API keys by SHA-256; the plain key is never stored nor logged."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self._by_hash = {k.sha256: k for k in keys}

    def authenticate(self, authorization: str | None) -> ApiKey:
        if not authorization:
            raise Unauthorized("missing Authorization header (expected 'Bearer <api key>')")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization header must be 'Bearer <api key>'")
        digest = hash_key(token.strip())
        for known, key in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                return key
        raise Unauthorized("unknown API key")

    @staticmethod
    def has_scope(key: ApiKey, scope: str) -> bool:
        if scope in key.scopes or "admin" in key.scopes:
            return True
        # "ingest" covers every "ingest:<type>"
        base = scope.split(":", 1)[0]
        return base != scope and base in key.scopes

    def require(self, authorization: str | None, scope: str) -> ApiKey:
        key = self.authenticate(authorization)
        if not self.has_scope(key, scope):
            raise Forbidden(f"API key '{key.name}' lacks the '{scope}' scope")
        return key


def scope_dependency(keyring: KeyRing, scope: str) -> Callable[[Request], ApiKey]:
    def dependency(request: Request) -> ApiKey:
        return keyring.require(request.headers.get("authorization"), scope)

    return dependency


def error_response(exc: ChurnsignalError) -> JSONResponse:
    """The HTTP answer to an error of the family (also usable as a plain ASGI app)."""
    headers = {}
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if exc.status_code == 503 and "retry_after" in exc.details:
        headers["Retry-After"] = str(exc.details["retry_after"])
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)


async def _churnsignal_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ChurnsignalError)
    return error_response(exc)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
    return JSONResponse({"error": "invalid request", "errors": errors}, status_code=422)


class RejectNul:
    """ASGI middleware: 400 for a request whose path or query string holds U+0000 (`%00` included),
    before any handler runs. Path and query parameters reach PostgreSQL, whose text cannot hold it:
    without this, such a request would be a 500 from deep inside a query."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            where = _nul_in_request(scope)
            if where is not None:
                await error_response(BadRequest(f"the request {where} {NUL_MESSAGE}"))(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _nul_in_request(scope: Scope) -> str | None:
    """'path' or 'query string' when that part of the request holds U+0000: the path as decoded by the
    server, the query string raw (percent-encoded, as every parser of it decodes `%00` to U+0000)."""
    if NUL in scope["path"]:
        return "path"
    query = scope.get("query_string") or b""
    if b"%00" in query or b"\x00" in query:
        return "query string"
    return None


def install_common(app: FastAPI, *, registry: CollectorRegistry,
                   readiness: Callable[[], Awaitable[dict[str, bool]]]) -> None:
    """Error mapping, the U+0000 check of paths and query strings, /healthz, /readyz (503 with the
    failing checks) and /metrics."""
    app.add_middleware(RejectNul)
    app.add_exception_handler(ChurnsignalError, _churnsignal_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        checks = await readiness()
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
