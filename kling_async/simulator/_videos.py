"""The video origin: a separate app serving MP4 bodies with Range, expiry and signed links."""

from __future__ import annotations

from aiohttp import web

from ._content import RangeNotSatisfiable, parse_range
from ._core import Core
from ._faults import Fault

__all__ = ["build_video_app"]

_TEXT = "text/plain"


def _abort(request: web.Request) -> web.Response:
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=499)


class _Videos:
    """Handler of the video origin."""

    def __init__(self, core: Core) -> None:
        self.core = core

    async def _fault(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        name = fault.name
        if name == "latency":
            return _abort(request) if await self.core.pause(fault.seconds) else None
        if name == "reset":
            return _abort(request)
        if name == "stall":
            await self.core.pause(self.core.faults.stall_max_seconds)
            return _abort(request)
        if name in ("403", "404"):
            return web.Response(status=int(name), text=f"injected {name}", content_type=_TEXT)
        if name in ("5000", "5001", "5002"):
            status = {"5000": 500, "5001": 503, "5002": 504}[name]
            return web.Response(status=status, text=f"injected {name}", content_type=_TEXT)
        if name == "garbage":
            body = "<html><body>not a video</body></html>"
            return web.Response(status=200, text=body, content_type="text/html")
        return None  # "truncate" is applied while streaming

    async def video(self, request: web.Request) -> web.StreamResponse:
        """GET/HEAD /videos/{name}.mp4, dated by the simulator's clock."""
        response = await self.serve(request)
        if not response.prepared:
            response.headers["Date"] = self.core.date()
        return response

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """Full body, or one byte range (206/416)."""
        core = self.core
        core.stats.requests["video"] += 1
        if "Authorization" in request.headers:
            core.stats.video_auth_headers += 1
        fault = core.faults.pick("video")
        if fault is not None:
            core.stats.faults_injected[str(fault)] += 1
            early = await self._fault(request, fault)
            if early is not None:
                return early
        name = request.match_info["name"]
        if core.resolve_video(name) is None:
            return web.Response(status=404, text="video not found or expired", content_type=_TEXT)
        if not core.link_valid(name, request.query):
            return web.Response(status=403, text="link expired or invalid", content_type=_TEXT)
        size = core.content.size(name)
        headers = {"Accept-Ranges": "bytes", "Content-Type": "video/mp4", "Date": core.date()}
        try:
            span = parse_range(request.headers.get("Range"), size)
        except RangeNotSatisfiable:
            headers["Content-Range"] = f"bytes */{size}"
            return web.Response(status=416, headers=headers)
        status, (start, end) = (200, (0, size - 1)) if span is None else (206, span)
        if span is not None:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1
        headers["Content-Length"] = str(length)
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        if request.method == "HEAD" or length <= 0:
            await response.write_eof()
            return response
        cut = length // 2 if fault is not None and fault.name == "truncate" else None
        sent = 0
        for chunk in core.content.iter_range(name, start, end):
            if cut is not None and sent + len(chunk) > cut:
                chunk = chunk[: cut - sent]
            if chunk:
                await response.write(chunk)
                sent += len(chunk)
                core.stats.video_bytes_served += len(chunk)
            if cut is not None and sent >= cut:
                return _abort_stream(request, response)
        await response.write_eof()
        return response


def _abort_stream(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    # Content-Length promised more than was sent: closing (after flushing) makes the body short.
    if request.transport is not None:
        request.transport.close()
    return response


def build_video_app(core: Core) -> web.Application:
    """The aiohttp application of the video origin."""
    videos = _Videos(core)
    app = web.Application()
    app.router.add_get("/videos/{name}.mp4", videos.video)
    return app
