"""The API origin: create / query / list routes behind faults, rate limit and auth."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from ._body import BodyReader
from ._control import add_control_routes
from ._core import Core
from ._faults import Fault
from ._protocol import SimError, envelope, error_response, json_response
from ._validate import parse_create, parse_page

__all__ = ["API_PATH", "build_api_app"]

API_PATH = "/v1/videos/multi-image2video"
# Documents above this size are validated in a worker thread (base64 decoding of images that
# were not streamed: URLs and short strings stay in the document).
_THREAD_THRESHOLD = 256 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _abort(request: web.Request) -> web.Response:
    """Drop the connection without an answer; the returned response is never sent."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=499)


class _Api:
    """Handlers and middleware of the API origin."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.kinds: dict[object, str] = {
            self.create: "create",
            self.query: "query",
            self.list: "list",
        }

    def error(self, exc: SimError) -> web.Response:
        """Count and answer a business error."""
        self.core.stats.record_error(exc.code)
        status = self.core.shapes.error_status(exc.status)
        return error_response(
            exc if status == exc.status else SimError(exc.code, exc.message, status)
        )

    async def create(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/videos/multi-image2video."""
        cfg = self.core.config
        reader = BodyReader(cfg.max_body_bytes, digest=cfg.record_bodies)
        async for chunk in request.content.iter_any():  # Content-Length or chunked alike
            reader.feed(chunk)
        if reader.sha256 is not None:
            self.core.stats.create_bodies.append(
                {
                    "content_length": request.content_length,
                    "chunked": "chunked" in request.headers.get("Transfer-Encoding", "").lower(),
                    "size": reader.size,
                    "sha256": reader.sha256.hexdigest(),
                }
            )
        doc, streamed = reader.finish()
        if len(doc) > _THREAD_THRESHOLD:
            req = await asyncio.to_thread(parse_create, doc, streamed)
        else:
            req = parse_create(doc, streamed)
        task = self.core.store.create(req)
        data = {
            "task_id": task.task_id,
            "task_status": task.status,
            "created_at": task.created_ms,
            "updated_at": task.updated_ms,
        }
        return json_response(envelope(0, "SUCCEED", self.core.shapes.created(data)))

    async def query(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/videos/multi-image2video/{task_id or external_task_id}."""
        ident = request.match_info["id"]
        task = self.core.store.get(ident)
        if task is None:
            raise SimError(1203, f"task not found: {ident!r}")
        return json_response(envelope(0, "SUCCEED", self.core.task_json(task)))

    async def list(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/videos/multi-image2video?pageNum=&pageSize= (newest first)."""
        page_num, page_size = parse_page(request.query)
        tasks = self.core.store.page(page_num, page_size)
        return json_response(envelope(0, "SUCCEED", [self.core.task_json(t) for t in tasks]))

    async def apply_fault(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        """Answer for the fault, or None to go on with normal processing."""
        code = fault.code
        if code is not None:
            return self.error(SimError(code))
        name = fault.name
        if name == "latency":
            if await self.core.pause(fault.seconds):
                return _abort(request)
            return None
        if name == "reset":
            return _abort(request)
        if name == "stall":
            await self.core.pause(self.core.faults.stall_max_seconds)
            return _abort(request)
        if name == "garbage":
            body = "<html><body><h1>502 Bad Gateway</h1></body></html>"
            return web.Response(status=200, text=body, content_type="text/html")
        if name == "bad_envelope":
            return json_response({"message": "SUCCEED", "request_id": str(uuid.uuid4())})
        if name == "403":
            return self.error(SimError(1103, status=403))
        if name == "404":
            return self.error(SimError(1203, status=404))
        return None  # "lost" is applied after the handler ran

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Outages, then the answer dated by the simulator's clock."""
        outage = self.core.outage
        if outage.down and self.kinds.get(request.match_info.handler) is not None:
            # Down: a request that still reached us (an open connection, or a "hang" outage)
            # gets no answer at all.
            self.core.stats.outage_drops += 1
            if outage.mode == "hang":
                await outage.hold()
            return _abort(request)
        response = await self.route(request, handler)
        if not response.prepared:
            response.headers["Date"] = self.core.date()
        return response

    async def route(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Route errors, counters, faults, rate limit and auth around every API handler."""
        info = request.match_info
        if info.http_exception is not None:
            self.core.stats.requests["other"] += 1
            if info.http_exception.status == 405:
                return self.error(SimError(1202, f"invalid request method {request.method}"))
            return self.error(SimError(1203, f"no such resource: {request.path}"))
        kind = self.kinds.get(info.handler)
        if kind is None:  # control routes: no auth, no counting, no faults
            return await handler(request)
        self.core.stats.requests[kind] += 1
        fault = self.core.faults.pick(kind)
        if fault is not None:
            self.core.stats.faults_injected[str(fault)] += 1
            early = await self.apply_fault(request, fault)
            if early is not None:
                return early
        try:
            self.core.check_rate()
            self.core.authorize(request.headers.get("Authorization"))
            response = await handler(request)
        except SimError as exc:
            response = self.error(exc)
        if fault is not None and fault.name == "lost":
            return _abort(request)
        return response


def build_api_app(core: Core) -> web.Application:
    """The aiohttp application of the API origin."""
    api = _Api(core)
    app = web.Application(middlewares=[api.middleware], client_max_size=core.config.max_body_bytes)
    app.router.add_post(API_PATH, api.create)
    app.router.add_get(API_PATH, api.list, allow_head=False)
    app.router.add_get(API_PATH + "/{id}", api.query, allow_head=False)
    add_control_routes(app, core)
    return app
