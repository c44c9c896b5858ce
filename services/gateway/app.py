"""The REST edge as an aiohttp application: every `google.api.http` rule of
the services transcoded to its RPC, the OCR upload route, the OAuth2 token
endpoint, health, the OpenAPI document and its docs page, and the public
certificate verification page."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import orjson
import structlog
from aiohttp import web
from google.api import httpbody_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from opentelemetry import trace

from services.gateway import pages
from services.gateway.oauth import ClientRegistry
from services.gateway.openapi import Generator
from services.gateway.routes import Route, RouteTable, routes_of
from services.gateway.status import gateway_status, http_status, status_json, status_of
from services.gateway.token_endpoint import TokenLimits, token_endpoint, token_paths
from services.gateway.transcoding import TranscodeError, build_request, stream_requests, to_json
from services.gateway.upload import UPLOAD_PATH, upload_paths, upload_requests
from services.gateway.upstream import Upstream, call_metadata, deadline_of
from services.kit.clients import keyed
from services.kit.metrics import HTTP_REQUESTS, HTTP_SECONDS
from services.kit.settings import Settings
from services.kit.telemetry import REQUEST_ID_HEADER, recorded_only, request_id_var
from services.kit.topology import SERVICES

log = structlog.get_logger("bmc.gateway")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RPC_HEADER = "X-Bmc-Rpc"  # which RPC served the request, for operators and tests
CORS_HEADERS = "Authorization, Content-Type, Grpc-Timeout, X-Request-Id, traceparent, tracestate"

SETTINGS = web.AppKey("settings", Settings)
UPSTREAM = web.AppKey("upstream", Upstream)
ROUTES = web.AppKey("routes", RouteTable)
OPENAPI = web.AppKey("openapi", dict)
CLIENTS = web.AppKey("clients", ClientRegistry)
DOCS = web.AppKey("docs", str)
TOKEN_LIMITS = web.AppKey("token_limits", TokenLimits)
ROUTE_TEMPLATE = "bmc.route_template"  # the transcoded route a request matched (its metrics' label)


class GatewayError(Exception):
    """An error the gateway answers itself, as a `google.rpc.Status`."""

    def __init__(self, status: status_pb2.Status, http: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(status.message)
        self.status, self.http, self.headers = status, http, headers or {}


def error_response(
    status: status_pb2.Status, http: int | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    response = web.Response(
        body=status_json(status), status=http or http_status(status.code), content_type="application/json"
    )
    if status.code == code_pb2.UNAUTHENTICATED:
        description = status.message.replace('"', "'")
        response.headers["WWW-Authenticate"] = f'Bearer error="invalid_token", error_description="{description}"'
    response.headers.update(headers or {})
    return response


def transcode_failure(exc: TranscodeError) -> GatewayError:
    if exc.reason == "FILE_TOO_LARGE":
        status = gateway_status(code_pb2.RESOURCE_EXHAUSTED, exc.message, exc.reason, field=exc.field)
        return GatewayError(status, http=413, headers={"Connection": "close"})
    if exc.reason == "SLOW_UPLOAD":
        status = gateway_status(code_pb2.DEADLINE_EXCEEDED, exc.message, exc.reason, field=exc.field)
        return GatewayError(status, http=408, headers={"Connection": "close"})
    return GatewayError(gateway_status(code_pb2.INVALID_ARGUMENT, exc.message, exc.reason, field=exc.field))


# ------------------------------------------------------------ middlewares


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, one log line, and every failure answered as a
    `google.rpc.Status`, never a bare 500. (The server span, continuing the
    caller's trace, is OpenTelemetry's aiohttp middleware, outside this one.)"""
    request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
    token = request_id_var.set(request_id[:128])
    started = time.perf_counter()
    status_code = 500
    try:
        try:
            with recorded_only():
                response = await handler(request)
        except GatewayError as exc:
            response = error_response(exc.status, exc.http, exc.headers)
        except web.HTTPRequestEntityTooLarge:
            limit = request.app[SETTINGS].gateway_max_body_bytes
            response = error_response(
                gateway_status(
                    code_pb2.RESOURCE_EXHAUSTED,
                    f"the request body is larger than the limit of {limit:,} bytes",
                    "BODY_TOO_LARGE",
                    metadata={"limit_bytes": str(limit)},
                ),
                http=413,
            )
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = code_pb2.NOT_FOUND if exc.status == 404 else code_pb2.INVALID_ARGUMENT
            response = error_response(gateway_status(code, exc.reason, "HTTP_ERROR"), http=exc.status)
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception("gateway failure", incident=incident, path=request.path)
            response = error_response(
                gateway_status(code_pb2.INTERNAL, f"internal error; incident {incident}", "GATEWAY_FAILURE")
            )
        status_code = response.status
        response.headers[REQUEST_ID_HEADER] = request_id_var.get()
        return response
    finally:
        elapsed = time.perf_counter() - started
        log.info(
            "http",
            method=request.method,
            path=request.path,
            status=status_code,
            duration_ms=round(elapsed * 1000, 2),
            remote=request.remote,
        )
        # By route template, never by path: a path carries ids.
        resource = request.match_info.route.resource
        route = request.get(ROUTE_TEMPLATE) or (resource.canonical if resource is not None else "unmatched")
        HTTP_REQUESTS.labels(route, request.method, str(status_code)).inc()
        HTTP_SECONDS.labels(route, request.method).observe(elapsed)
        request_id_var.reset(token)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No content sniffing anywhere; pages may not be framed, leak their
    address, or load anything but their own stylesheet and images."""
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.content_type == "text/html":
        response.headers.update(pages.PAGE_HEADERS)
    return response


def cors(origins: list[str]) -> Callable[..., Awaitable[web.StreamResponse]]:
    allowed = set(origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        permitted = origin is not None and ("*" in allowed or origin in allowed)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204)
            if permitted:
                response.headers.update(
                    {
                        "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE",
                        "Access-Control-Allow-Headers": CORS_HEADERS,
                        "Access-Control-Max-Age": "600",
                    }
                )
        else:
            response = await handler(request)
        if permitted:
            assert origin is not None
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed else origin
            response.headers["Access-Control-Expose-Headers"] = f"X-Request-Id, {RPC_HEADER}"
            if "*" not in allowed:
                response.headers["Vary"] = "Origin"
        return response

    return middleware


# ---------------------------------------------------------------- RPCs


async def _body(request: web.Request) -> bytes:
    if not request.can_read_body:
        return b""
    limit = request.app[SETTINGS].gateway_read_timeout_seconds
    try:
        async with asyncio.timeout(limit * 3):  # a whole JSON body: a few reads' worth of time
            return await request.read()
    except TimeoutError as exc:
        raise GatewayError(
            gateway_status(code_pb2.DEADLINE_EXCEEDED, "the request body arrived too slowly", "SLOW_REQUEST_BODY"),
            http=408,
            headers={"Connection": "close"},
        ) from exc


# No upstream call completes in less: a shorter deadline is already over
# (gRPC itself may still let a fast answer through such a deadline, by a race).
_SHORTEST_DEADLINE = 0.001


def _deadline(request: web.Request) -> float:
    settings = request.app[SETTINGS]
    try:
        seconds = deadline_of(request.headers, settings.gateway_deadline_seconds, settings.gateway_max_deadline_seconds)
    except TranscodeError as exc:
        raise transcode_failure(exc) from exc
    if seconds < _SHORTEST_DEADLINE:
        status = gateway_status(
            code_pb2.DEADLINE_EXCEEDED, "Grpc-Timeout expired before the call could be made", "DEADLINE_TOO_SHORT"
        )
        raise GatewayError(status, http=504)
    return seconds


async def _invoke(request: web.Request, route: Route, message: Any, streaming: bool = False) -> Any:
    call = request.app[UPSTREAM].callable(route)(
        message, metadata=[*call_metadata(request.headers, request.remote), *keyed(message)], timeout=_deadline(request)
    )
    return call if streaming else await call


async def dispatch(request: web.Request) -> web.StreamResponse:
    route, found = request.app[ROUTES].match(request.method, request.rel_url.raw_path)
    if route is None:
        assert isinstance(found, list)
        if found:
            # grpc-gateway answers 501 here; HTTP says 405 with Allow, and clients retry on 5xx.
            raise GatewayError(
                gateway_status(code_pb2.UNIMPLEMENTED, "Method Not Allowed", "METHOD_NOT_ALLOWED"),
                http=405,
                headers={"Allow": ", ".join(found)},
            )
        raise GatewayError(gateway_status(code_pb2.NOT_FOUND, "Not Found", "NO_ROUTE"))
    assert isinstance(found, dict)
    # The span and the metrics name the route template, never the path (a path carries ids).
    request[ROUTE_TEMPLATE] = route.template.text
    span = trace.get_current_span()
    span.update_name(f"{route.http_method} {route.template.text}")
    span.set_attribute("http.route", route.template.text)
    try:
        body = await _body(request)
        if route.streams_request:
            messages = stream_requests(route, found, body)
        else:
            message = build_request(route, found, list(request.query.items()), body)
    except TranscodeError as exc:
        raise transcode_failure(exc) from exc
    try:
        if route.streams_request:
            response = await _invoke(request, route, _iterate(messages))
        elif route.streams_response:
            return await _stream_response(request, route, await _invoke(request, route, message, streaming=True))
        else:
            response = await _invoke(request, route, message)
    except grpc.aio.AioRpcError as exc:
        raise GatewayError(status_of(exc), headers={RPC_HEADER: route.grpc_path}) from exc
    return _unary_response(route, response)


async def _iterate(messages: list[Message]) -> AsyncIterator[Message]:
    for message in messages:
        yield message


def _unary_response(route: Route, response: Message) -> web.Response:
    if isinstance(response, httpbody_pb2.HttpBody):
        result = web.Response(body=response.data)
        result.headers["Content-Type"] = response.content_type or "application/octet-stream"
    else:
        result = web.Response(body=to_json(response, route.response_body), content_type="application/json")
    result.headers[RPC_HEADER] = route.grpc_path
    return result


async def _stream_response(request: web.Request, route: Route, call: Any) -> web.StreamResponse:
    """HttpBody chunks as one download; other messages as JSON lines."""
    iterator = call.__aiter__()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        first = None
    except grpc.aio.AioRpcError as exc:
        raise GatewayError(status_of(exc), headers={RPC_HEADER: route.grpc_path}) from exc
    response = web.StreamResponse()
    response.headers[RPC_HEADER] = route.grpc_path
    http_body = route.returns_http_body
    if http_body:
        response.headers["Content-Type"] = (
            first.content_type if first is not None and first.content_type else "application/octet-stream"
        )
    else:
        response.headers["Content-Type"] = "application/x-ndjson"
    await response.prepare(request)
    message = first
    while message is not None:
        if http_body:
            await response.write(message.data)
        else:
            await response.write(b'{"result":' + to_json(message) + b"}\n")
        try:
            message = await iterator.__anext__()
        except StopAsyncIteration:
            message = None
        except grpc.aio.AioRpcError as exc:
            # Headers are gone: JSON lines carry the error; a download is cut short.
            if not http_body:
                await response.write(b'{"error":' + status_json(status_of(exc)) + b"}\n")
            else:
                log.warning("download interrupted", rpc=route.grpc_path, code=exc.code().name)
                if request.transport is not None:
                    request.transport.close()  # the client sees a cut download, never a short "complete" file
            break
    await response.write_eof()
    return response


async def upload(request: web.Request) -> web.StreamResponse:
    """A file posted as the raw body or as multipart/form-data, streamed to
    `StreamExtractInvoice` in chunks (REST clients cannot stream gRPC)."""
    routes = request.app[ROUTES]
    route, _ = routes.match("POST", "/v1/extractions:stream")
    assert route is not None
    settings = request.app[SETTINGS]
    try:
        upload = await upload_requests(request, settings.ocr_max_bytes, settings.gateway_read_timeout_seconds)
        try:
            response = await _invoke(request, route, upload.messages())
        finally:
            upload.check()  # an upload cut short here answers for itself (413, 408), whatever gRPC made of it
    except TranscodeError as exc:
        raise transcode_failure(exc) from exc
    except grpc.aio.AioRpcError as exc:
        raise GatewayError(status_of(exc)) from exc
    return _unary_response(route, response)


# -------------------------------------------------------- the rest


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    services = await request.app[UPSTREAM].readiness()
    ready = all(v == "SERVING" for v in services.values())
    return web.json_response(
        {"status": "ready" if ready else "not ready", "services": services}, status=200 if ready else 503
    )


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(request.app[OPENAPI]), content_type="application/json")


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=request.app[DOCS], content_type="text/html")


async def verify(request: web.Request) -> web.Response:
    code = request.match_info.get("code") or request.query.get("codigo") or request.query.get("code") or ""
    outcome = (
        await pages.verification(request.app[UPSTREAM], request.app[ROUTES], code.strip()) if code.strip() else None
    )
    return web.Response(text=pages.verify_page(code.strip(), outcome), content_type="text/html")


async def oauth_token(request: web.Request) -> web.Response:
    return await token_endpoint(request, request.app[SETTINGS], request.app[CLIENTS], request.app[TOKEN_LIMITS])


def build_app(settings: Settings, upstream: Upstream) -> web.Application:
    routes = [r for name, spec in SERVICES.items() for r in routes_of(spec.descriptor, name)]
    table = RouteTable(routes)
    middlewares: list[Any] = [security_headers, request_context]
    origins = [o.strip() for o in settings.gateway_cors_origins.split(",") if o.strip()]
    if origins:
        middlewares.insert(0, cors(origins))
    app = web.Application(client_max_size=settings.gateway_max_body_bytes, middlewares=middlewares)
    app[SETTINGS] = settings
    app[UPSTREAM] = upstream
    app[ROUTES] = table
    app[CLIENTS] = ClientRegistry(settings.auth_dir / "clients.json")
    app[TOKEN_LIMITS] = TokenLimits(settings.gateway_token_limit_per_client, settings.gateway_token_limit_per_address)
    generator = Generator(routes, "BMC Registry API", "v1")
    extra = upload_paths() | pages.extra_paths() | token_paths()
    app[OPENAPI] = generator.document(extra, [spec.descriptor for spec in SERVICES.values()])
    app[DOCS] = pages.docs_page(app[OPENAPI])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/docs", docs)
    app.router.add_get("/verify", verify)
    app.router.add_get("/verify/{code}", verify)
    app.router.add_post("/oauth/token", oauth_token)
    app.router.add_post(UPLOAD_PATH, upload)
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app
