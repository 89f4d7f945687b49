"""FastAPI under `uvicorn --workers 4`: four processes, one Kling account, one budget in Redis.

    pip install -e ".[examples]"
    export KLING_ACCESS_KEY=... KLING_SECRET_KEY=...
    export KLING_COORDINATOR=redis://localhost:6379/0   # every worker shares it
    export KLING_CONCURRENCY=5                            # your account's concurrent tasks
    uvicorn fastapi_workers:app --app-dir examples --workers 4 --port 8000

    curl -H 'Content-Type: application/json' localhost:8000/videos \\
         -d '{"images": ["https://example.com/a.png"], "prompt": "Mist over the sea"}'
    curl localhost:8000/videos/TASK_ID

Each worker process imports this module and makes its own client in the lifespan. With
KLING_COORDINATOR set, the four clients share the account's concurrency slots (leases in Redis,
one fair queue for every worker's POSTs, one learned limit), its request rate, and status
tracking (one worker, elected, sweeps the task list for all four). Without it each worker would
believe it had all KLING_CONCURRENCY slots, and four of them would be refused (1303) or wait.

POST waits in the account-wide queue for at most QUEUE_TIMEOUT seconds, then answers 503 with
Retry-After. If Redis goes away, POSTs wait (no create goes out unchecked) and GETs go on; when
Redis is back, the queue moves again.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

try:
    from fastapi import FastAPI, HTTPException, Request, Response
    from pydantic import BaseModel
except ImportError as missing:  # not dependencies of kling-async itself
    raise SystemExit(
        f"this example needs FastAPI and uvicorn ({missing.name} is not installed): "
        'pip install -e ".[examples]"'
    ) from None

import kling_async as kling

QUEUE_TIMEOUT = float(os.environ.get("QUEUE_TIMEOUT", "30"))


class NewVideo(BaseModel):
    """POST /videos: 1-4 image URLs and a prompt."""

    images: list[str]
    prompt: str = ""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One client per worker process; the coordinator (KLING_COORDINATOR) joins them up."""
    limits = kling.Limits(concurrency=int(os.environ.get("KLING_CONCURRENCY", "5")))
    async with kling.Client(limits=limits) as client:  # Redis unreachable: the worker won't start
        app.state.client = client
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/videos", status_code=202)
async def create_video(body: NewVideo, request: Request, response: Response) -> dict[str, Any]:
    """Create a task once a slot of the account is free (account-wide queue, bounded wait)."""
    client: kling.Client = request.app.state.client
    try:
        job = kling.MultiImageToVideoRequest(images=body.images, prompt=body.prompt)
    except kling.KlingError as exc:
        raise HTTPException(422, str(exc)) from None
    try:
        async with asyncio.timeout(QUEUE_TIMEOUT):
            task = await client.submit(job)
    except TimeoutError:
        response.headers["Retry-After"] = "10"
        raise HTTPException(503, "the account is busy; try again", {"Retry-After": "10"}) from None
    return {"task_id": task.task_id, "status": task.task_status.value, "worker": os.getpid()}


@app.get("/videos/{task_id}")
async def get_video(task_id: str, request: Request) -> dict[str, Any]:
    """The task's status and, once it succeeded, its video URLs."""
    client: kling.Client = request.app.state.client
    try:
        task = await client.get_task(task_id)
    except kling.KlingError as exc:
        raise HTTPException(404, str(exc)) from None
    return {
        "status": task.task_status.value,
        "videos": [video.url for video in task.videos],
        "worker": os.getpid(),
    }


@app.get("/")
async def which_worker() -> dict[str, Any]:
    """Which worker process answered (uvicorn spreads connections over them)."""
    return {"worker": os.getpid()}
