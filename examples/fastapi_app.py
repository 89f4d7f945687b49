"""A web backend on FastAPI that shares ONE Kling client across all requests.

    POST /videos   multipart: 1-4 `images` files and a `prompt`  -> 202 {"task_id", "status"}
    GET  /videos/{task_id}                                       -> {"status", "videos", ...}

    pip install -e ".[examples]"        # this one needs FastAPI, uvicorn, python-multipart
    python examples/fastapi_app.py --simulate --port 8000
    curl -F images=@examples/images/forest.png -F images=@examples/images/ocean.png \\
         -F prompt="Mist drifts over the sea" localhost:8000/videos

Design: the client is made in the lifespan (startup) and closed when it ends (shutdown), and
handlers get it through a dependency, so every request shares its session, its token and its
slot gate. POST awaits `client.submit()`, which returns as soon as Kling has accepted the task
(it never waits for the video) but first waits for a free slot of the account's concurrency:
under load POSTs queue inside the client instead of going over the account's limit. That wait is
bounded by --queue-timeout; past it POST answers 503 with Retry-After, and the cancelled submit
leaves nothing behind. GET is a plain status query (queries take no slot); the client also keeps
polling each task itself, so slots come back even if nobody asks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Annotated, Any

try:
    import uvicorn
    from fastapi import Depends, FastAPI, Form, HTTPException, Request, Response, UploadFile
except ImportError as missing:  # not dependencies of kling-async itself
    raise SystemExit(
        f"this example needs FastAPI and uvicorn ({missing.name} is not installed): "
        'pip install -e ".[examples]"'
    ) from None

import kling_async as kling


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


def get_client(request: Request) -> kling.Client:
    """The one client, made in the lifespan."""
    client: kling.Client = request.app.state.client
    return client


ClientDep = Annotated[kling.Client, Depends(get_client)]


def view(task: kling.Task) -> dict[str, Any]:
    """What our API tells its users about a task."""
    return {
        "task_id": task.task_id,
        "status": task.task_status.value,
        "message": task.task_status_msg,
        "videos": [video.url for video in task.videos],
    }


def make_app(simulate: bool, concurrency: int, queue_timeout: float) -> FastAPI:
    """The app: one client for its whole life, two routes."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with connect(simulate, concurrency) as client:
            app.state.client = client
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/videos", status_code=202)
    async def create_video(
        images: list[UploadFile],
        prompt: Annotated[str, Form()],
        client: ClientDep,
        response: Response,
    ) -> dict[str, Any]:
        """Submit one task from uploaded images and a prompt; answer with its id at once."""
        try:
            job = kling.MultiImageToVideoRequest(
                images=[await image.read() for image in images], prompt=prompt
            )
        except kling.InvalidRequestError as exc:
            raise HTTPException(400, str(exc)) from None
        try:
            async with asyncio.timeout(queue_timeout):
                task = await client.submit(job)
        except kling.KlingError as exc:  # before TimeoutError: a request timeout is both
            raise HTTPException(502, str(exc)) from None
        except TimeoutError:
            busy = "every generation slot is busy; try again later"
            raise HTTPException(503, busy, headers={"Retry-After": "30"}) from None
        response.headers["Location"] = f"/videos/{task.task_id}"
        return view(task)

    @app.get("/videos/{task_id}")
    async def video_status(task_id: str, client: ClientDep) -> dict[str, Any]:
        """The task's current state, straight from Kling."""
        try:
            return view(await client.get_task(task_id))
        except kling.BadRequestError as exc:  # 1203: no such task
            raise HTTPException(404, str(exc)) from None
        except kling.KlingError as exc:
            raise HTTPException(502, str(exc)) from None

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulate", action="store_true", help="use a local simulator")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--concurrency", type=int, default=5, help="the account's task slots")
    parser.add_argument("--queue-timeout", type=float, default=60.0, help="seconds POST may wait")
    args = parser.parse_args()
    app = make_app(args.simulate, args.concurrency, args.queue_timeout)
    sock = socket.create_server(("127.0.0.1", args.port))
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after shutting down
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
