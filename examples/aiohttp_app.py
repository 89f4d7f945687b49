"""A web backend on aiohttp that shares ONE Kling client across all requests.

    POST /videos   multipart: 1-4 `images` files and a `prompt`  -> 202 {"task_id", "status"}
    GET  /videos/{task_id}                                       -> {"status", "videos", ...}

    pip install -e .                    # aiohttp comes with kling-async: nothing more
    python examples/aiohttp_app.py --simulate --port 8080
    curl -F images=@examples/images/forest.png -F images=@examples/images/ocean.png \\
         -F prompt="Mist drifts over the sea" localhost:8080/videos

Design: the client is made at startup and closed at shutdown (`cleanup_ctx`), so every request
shares its session, its token and its slot gate. POST awaits `client.submit()`, which returns as
soon as Kling has accepted the task (it never waits for the video) but first waits for a free
slot of the account's concurrency: under load POSTs queue inside the client instead of going over
the account's limit. That wait is bounded by --queue-timeout; past it POST answers 503 with
Retry-After, and the cancelled submit leaves nothing behind. GET is a plain status query (queries
take no slot); the client also keeps polling each task itself, so slots come back even if nobody
asks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

import kling_async as kling

CLIENT = web.AppKey("client", kling.Client)
QUEUE_TIMEOUT = web.AppKey("queue_timeout", float)


@contextlib.asynccontextmanager
async def connect(simulate: bool, concurrency: int) -> AsyncIterator[kling.Client]:
    """A client for your account (KLING_* variables), or for a built-in simulator."""
    limits = kling.Limits(concurrency=concurrency)
    if not simulate:
        async with kling.Client(limits=limits) as client:
            yield client
        return
    from kling_async.simulator import Simulator

    async with (
        Simulator(concurrency=concurrency, gen_seconds=2.0) as sim,
        kling.Client(
            access_key=sim.access_key, secret_key=sim.secret_key, base_url=sim.url, limits=limits
        ) as client,
    ):
        yield client


def view(task: kling.Task) -> dict[str, Any]:
    """What our API tells its users about a task."""
    return {
        "task_id": task.task_id,
        "status": task.task_status.value,
        "message": task.task_status_msg,
        "videos": [video.url for video in task.videos],
    }


async def create_video(request: web.Request) -> web.Response:
    """Submit one task from uploaded images and a prompt; answer with its id at once."""
    form = await request.post()
    images = [f.file.read() for f in form.getall("images", []) if isinstance(f, web.FileField)]
    try:
        job = kling.MultiImageToVideoRequest(images=images, prompt=str(form.get("prompt", "")))
    except kling.InvalidRequestError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    try:
        async with asyncio.timeout(request.app[QUEUE_TIMEOUT]):
            task = await request.app[CLIENT].submit(job)
    except kling.KlingError as exc:  # before TimeoutError: a request timeout is both
        return web.json_response({"error": str(exc)}, status=502)
    except TimeoutError:
        busy = {"error": "every generation slot is busy; try again later"}
        return web.json_response(busy, status=503, headers={"Retry-After": "30"})
    location = {"Location": f"/videos/{task.task_id}"}
    return web.json_response(view(task), status=202, headers=location)


async def video_status(request: web.Request) -> web.Response:
    """The task's current state, straight from Kling."""
    try:
        task = await request.app[CLIENT].get_task(request.match_info["task_id"])
    except kling.BadRequestError as exc:  # 1203: no such task
        return web.json_response({"error": str(exc)}, status=404)
    except kling.KlingError as exc:
        return web.json_response({"error": str(exc)}, status=502)
    return web.json_response(view(task))


def make_app(simulate: bool, concurrency: int, queue_timeout: float) -> web.Application:
    """The app: one client for its whole life, two routes."""

    async def kling_client(app: web.Application) -> AsyncIterator[None]:
        async with connect(simulate, concurrency) as client:
            app[CLIENT] = client
            yield

    app = web.Application(client_max_size=45 * 2**20)  # 4 images of up to 10 MB each
    app[QUEUE_TIMEOUT] = queue_timeout
    app.cleanup_ctx.append(kling_client)
    app.router.add_post("/videos", create_video)
    app.router.add_get("/videos/{task_id}", video_status)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulate", action="store_true", help="use a local simulator")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--concurrency", type=int, default=5, help="the account's task slots")
    parser.add_argument("--queue-timeout", type=float, default=60.0, help="seconds POST may wait")
    args = parser.parse_args()
    sock = socket.create_server(("127.0.0.1", args.port))
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    web.run_app(
        make_app(args.simulate, args.concurrency, args.queue_timeout), sock=sock, print=None
    )
