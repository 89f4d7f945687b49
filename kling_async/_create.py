"""Creating a task exactly once: an unknown outcome is reconciled, never resent blindly."""

from __future__ import annotations

import random
import uuid
from typing import Any
from urllib.parse import quote

from ._body import CreateBody
from ._config import RetryPolicy
from ._errors import (
    BadRequestError,
    ConcurrencyLimitError,
    KlingError,
    RateLimitError,
)
from ._events import EventHook, EventKind, emit
from ._http import HttpLayer
from ._images import EncodingCache
from ._retry import backoff, is_ambiguous_create
from ._types import Clock, Sleep
from .models import MultiImageToVideoRequest, Task, TaskInfo, read_task

__all__ = ["CREATE_PATH", "create_task", "new_external_id", "task_path"]

CREATE_PATH = "/v1/videos/multi-image2video"


def task_path(ident: str) -> str:
    """The query path of one task; the id is percent-encoded, so "?", "#", "%" stay in it."""
    return f"{CREATE_PATH}/{quote(ident, safe='', errors='surrogatepass')}"


def new_external_id() -> str:
    """A fresh idempotency key for a create that has none."""
    return f"ka-{uuid.uuid4().hex}"


async def _encode(request: MultiImageToVideoRequest, cache: EncodingCache | None) -> CreateBody:
    # Streamed from the image sources on every send: no create holds its body in memory.
    return await CreateBody.build(request, cache)


async def _lookup(
    http: HttpLayer, external_task_id: str, event_hook: EventHook | None = None
) -> Task | None:
    """The task created under this key, or None if Kling has none (1203)."""
    try:
        data: Any = await http.call("GET", task_path(external_task_id))
    except BadRequestError as exc:
        if exc.code == 1203 or exc.status == 404:
            return None
        raise
    return _validate(data, "lookup", external_task_id, event_hook)


def _validate(data: Any, what: str, external_task_id: str, event_hook: EventHook | None) -> Task:
    """Read the task; it keeps the key we sent, whatever task_info the answer echoes.

    Kling's create answer has no task_info; look-alikes echo `{}` or `{"external_task_id":
    null}`. Either way the task is the one created (or found) under our key. A malformed answer
    raises ResponseValidationError: an unknown outcome, reconciled by the caller.
    """
    task = read_task(data, what, hook=event_hook)
    if task.external_task_id == external_task_id:
        return task
    return task.model_copy(update={"task_info": TaskInfo(external_task_id=external_task_id)})


async def create_task(
    http: HttpLayer,
    request: MultiImageToVideoRequest,
    *,
    policy: RetryPolicy,
    sleep: Sleep,
    monotonic: Clock,
    cache: EncodingCache | None = None,
    retry_concurrency: bool = True,
    adopt_existing: bool = False,
    event_hook: EventHook | None = None,
    rng: random.Random | None = None,
) -> Task:
    """POST the request once; on an unknown outcome ask by external id before sending again.

    `retry_concurrency=False` hands 1303 to the caller (the batch's slot gate decides then);
    `adopt_existing=True` treats "external_task_id already exists" as success (resuming a batch).
    """
    if request.external_task_id is None:
        request = request.with_external_id(new_external_id())
    key = request.external_task_id
    assert key is not None
    body = await _encode(request, cache)
    deadline = monotonic() + policy.timeout
    attempt = 0
    ambiguous = False
    while True:
        try:
            data = await http.call("POST", CREATE_PATH, body=body, retry=False)
            task = _validate(data, "create", key, event_hook)
            emit(event_hook, "task_submitted", task_id=task.task_id, external_task_id=key)
            return task
        except KlingError as exc:
            error: KlingError = exc
        if isinstance(error, BadRequestError) and (ambiguous or adopt_existing):
            # 1201 for a key we may have used already: the earlier attempt did create it.
            found = await _lookup(http, key, event_hook)
            if found is not None:
                return found
            raise error
        if is_ambiguous_create(error):
            ambiguous = True
            found = await _lookup(http, key, event_hook)  # reads are retried inside
            if found is not None:
                emit(event_hook, "task_submitted", task_id=found.task_id, external_task_id=key)
                return found
        elif isinstance(error, ConcurrencyLimitError):
            if not retry_concurrency:
                raise error
        elif not isinstance(error, RateLimitError):
            raise error
        wait = backoff(attempt, policy, error=error, rng=rng)
        attempt += 1
        if attempt >= policy.attempts or monotonic() + wait > deadline:
            raise error
        kind: EventKind = (
            "concurrency_backoff" if isinstance(error, ConcurrencyLimitError) else "request_retry"
        )
        emit(
            event_hook,
            kind,
            path=CREATE_PATH,
            attempt=attempt,
            delay=round(wait, 3),
            code=getattr(error, "code", None),
            error=type(error).__name__,
        )
        await sleep(wait)
