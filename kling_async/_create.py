"""Creating a task exactly once: an unknown outcome is reconciled, never resent blindly."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from ._body import CreateBody
from ._errors import (
    BadRequestError,
    ConcurrencyLimitError,
    KlingError,
    RateLimitError,
    is_no_such_task,
)
from ._events import EventHook, TaskSubmitted, emit
from ._http import HttpLayer
from ._images import EncodingCache
from ._retry import Retries, is_ambiguous_create
from .models import MultiImageToVideoRequest, Task, TaskInfo, read_task

__all__ = ["CREATE_PATH", "create_task", "new_external_id", "prepared", "task_path"]

CREATE_PATH = "/v1/videos/multi-image2video"


def task_path(ident: str) -> str:
    """The query path of one task; the id is percent-encoded, so "?", "#", "%" stay in it."""
    return f"{CREATE_PATH}/{quote(ident, safe='', errors='surrogatepass')}"


def new_external_id() -> str:
    """A fresh idempotency key for a create that has none."""
    return f"ka-{uuid.uuid4().hex}"


def prepared(
    request: MultiImageToVideoRequest, external_task_id: str | None, callback_url: str | None
) -> tuple[MultiImageToVideoRequest, bool]:
    """The request as sent: under `external_task_id` (or a key of our own: then True) and with
    `callback_url` when it has none."""
    if external_task_id is not None:
        request = request.with_external_id(external_task_id)
    # A key we make up ourselves can name no one else's task: after a refused (1303) attempt,
    # a task found under it is our own earlier attempt's, safe to adopt. A caller's key may
    # name a task made elsewhere: adopted only when asked.
    own_key = request.external_task_id is None
    if own_key:
        request = request.with_external_id(new_external_id())
    if callback_url and request.callback_url is None:
        # Re-built so the URL is validated; it is not part of a batch job's fingerprint.
        request = type(request)(**{**dict(request), "callback_url": callback_url})
    return request, own_key


async def _encode(request: MultiImageToVideoRequest, cache: EncodingCache | None) -> CreateBody:
    # Streamed from the image sources on every send: no create holds its body in memory.
    return await CreateBody.build(request, cache)


async def _lookup(http: HttpLayer, external_task_id: str, hook: EventHook | None) -> Task | None:
    """The task created under this key, or None if Kling has none (1203)."""
    try:
        data: Any = await http.call("GET", task_path(external_task_id))
    except BadRequestError as exc:
        if is_no_such_task(exc):
            return None
        raise
    return _validate(data, "lookup", external_task_id, hook)


def _validate(data: Any, what: str, external_task_id: str, hook: EventHook | None) -> Task:
    """Read the task; it keeps the key we sent, whatever task_info the answer echoes.

    Kling's create answer has no task_info; look-alikes echo `{}` or `{"external_task_id":
    null}`. Either way the task is the one created (or found) under our key. A malformed answer
    raises ResponseValidationError: an unknown outcome, reconciled by the caller.
    """
    task = read_task(data, what, hook=hook)
    if task.external_task_id == external_task_id:
        return task
    return task.model_copy(update={"task_info": TaskInfo(external_task_id=external_task_id)})


async def create_task(
    http: HttpLayer,
    request: MultiImageToVideoRequest,
    *,
    retries: Retries | None = None,
    cache: EncodingCache | None = None,
    adopt_existing: bool = False,
) -> Task:
    """POST the request once; on an unknown outcome ask by external id before sending again.

    1303 is the caller's to handle (the slot gate decides when to try again);
    `adopt_existing=True` treats "external_task_id already exists" as success (resuming a batch).
    `retries` defaults to the HTTP layer's.
    """
    retries = retries or http.retries
    hook = retries.hook
    if request.external_task_id is None:
        request = request.with_external_id(new_external_id())
    key = request.external_task_id
    assert key is not None
    body = await _encode(request, cache)
    ambiguous = False
    async for attempt in retries.attempts("POST", CREATE_PATH):
        try:
            data = await http.call("POST", CREATE_PATH, body=body, retry=False, lane="create")
            task = _validate(data, "create", key, hook)
        except KlingError as error:
            if isinstance(error, BadRequestError) and (ambiguous or adopt_existing):
                # 1201 for a key we may have used already: the earlier attempt did create it.
                found = await _lookup(http, key, hook)
                if found is not None:
                    return found
                raise
            if is_ambiguous_create(error):
                ambiguous = True
                found = await _lookup(http, key, hook)  # reads are retried inside
                if found is not None:
                    emit(hook, TaskSubmitted(found.task_id, key))
                    return found
            elif isinstance(error, ConcurrencyLimitError) or not isinstance(error, RateLimitError):
                raise
            attempt.retry(error)  # a 1302, or a create that did not happen: send it again
    emit(hook, TaskSubmitted(task.task_id, key))
    return task
