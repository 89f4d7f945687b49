"""Client: the public entry point. Submit, follow and download tasks, one shared session/gate."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp

from ._auth import Credentials, JwtSigner, base_url_from_env
from ._config import (
    DEFAULT_LIMITS,
    DEFAULT_POLL,
    DEFAULT_RETRY,
    DEFAULT_TIMEOUTS,
    Limits,
    PollPolicy,
    RetryPolicy,
    Timeouts,
)
from ._create import CREATE_PATH, create_task, new_external_id, task_path
from ._errors import (
    ConcurrencyLimitError,
    InvalidRequestError,
    ResponseValidationError,
    TaskFailedError,
    TaskTimeoutError,
)
from ._events import EventHook, emit
from ._fetch import ProgressCallback, save_videos
from ._http import HttpLayer
from ._images import EncodingCache
from ._limits import SlotGate
from ._poll import TaskTracker
from ._types import Clock, PathLike, Sleep
from .models import MultiImageToVideoRequest, Task, TaskPage, read_page, read_task

__all__ = ["Client"]


class Client:
    """An async Kling client; use as `async with Client(...) as client:` and share it widely."""

    def __init__(
        self,
        credentials: Credentials | None = None,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        retry: RetryPolicy = DEFAULT_RETRY,
        poll: PollPolicy = DEFAULT_POLL,
        limits: Limits = DEFAULT_LIMITS,
        event_hook: EventHook | None = None,
        callback_url: str | None = None,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.credentials = credentials or Credentials.from_env(
            access_key, secret_key, api_key, environ=environ
        )
        self.base_url = (base_url or base_url_from_env(environ)).rstrip("/")
        self.timeouts, self.retry, self.poll, self.limits = timeouts, retry, poll, limits
        self.event_hook = event_hook
        #: Given to every submitted request that has none (e.g. a CallbackReceiver's url).
        self.callback_url = callback_url
        self._clock, self._monotonic, self._sleep = clock, monotonic, sleep
        self._rng = random.Random()
        self.http = HttpLayer(
            base_url=self.base_url,
            signer=JwtSigner(self.credentials, clock=clock),
            session=session,
            timeouts=timeouts,
            retry=retry,
            rps=limits.rps,
            sleep=sleep,
            monotonic=monotonic,
            event_hook=event_hook,
            rng=self._rng,
        )
        self.gate = SlotGate(
            limits.concurrency,
            probe_interval=limits.probe_interval or 30.0,
            # 1303 with nothing of ours running: the documented back-off (≥ 1 s) comes first.
            first_wait=min(retry.concurrency_wait_initial, limits.probe_interval or 30.0),
            slow_start=True,
            monotonic=monotonic,
            rng=self._rng,
        )
        self.tracker = TaskTracker(
            list_page=self._list_raw,
            get_one=self._query_raw,
            policy=poll,
            page_size=limits.page_size,
            sleep=sleep,
            monotonic=monotonic,
            event_hook=event_hook,
            retake=self._retake_slot,
        )
        self.encodings = EncodingCache()

    @classmethod
    def from_env(cls, **options: Any) -> Client:
        """Credentials and base URL from KLING_* variables; keyword options as for `Client`."""
        return cls(**options)

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r}, credentials={self.credentials!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop background polling and close our session (never a borrowed one)."""
        await self.tracker.aclose()
        await self.http.aclose()

    async def submit(
        self,
        request: MultiImageToVideoRequest,
        *,
        external_task_id: str | None = None,
        adopt_existing: bool = False,
    ) -> Task:
        """Create a task once, waiting for a free concurrency slot first; returns it `submitted`.

        The slot stays held until the task is seen finished (the client keeps polling for it).
        `adopt_existing=True` returns the task already created under this external_task_id
        (resuming after a crash) instead of raising Kling's duplicate-id error.
        """
        if external_task_id is not None:
            request = request.with_external_id(external_task_id)
        # A key we make up ourselves can name no one else's task: after a refused (1303)
        # attempt, a task found under it is our own earlier attempt's, safe to adopt. A
        # caller's key may name a task made elsewhere: adopted only when asked.
        own_key = request.external_task_id is None
        if own_key:
            request = request.with_external_id(new_external_id())
        if self.callback_url and request.callback_url is None:
            # Re-built so the URL is validated; it is not part of a batch job's fingerprint.
            request = type(request)(**{**dict(request), "callback_url": self.callback_url})
        attempt = 0
        while True:
            # 1303 (under HTTP 429 or 200 alike) comes back here: the gate, not a retry loop,
            # decides when to try again, one probe at a time, however long the account is full.
            probe = await self.gate.acquire()
            try:
                task = await create_task(
                    self.http,
                    request,
                    policy=self.retry,
                    sleep=self._sleep,
                    monotonic=self._monotonic,
                    cache=self.encodings,
                    retry_concurrency=False,
                    adopt_existing=adopt_existing or (own_key and attempt > 0),
                    event_hook=self.event_hook,
                    rng=self._rng,
                )
            except ConcurrencyLimitError:
                held = self.gate.rejected(probe)
                emit(self.event_hook, "concurrency_backoff", limit=self.gate.limit, held=held)
                attempt += 1
                continue
            except BaseException:
                self.gate.release(probe)
                raise
            self.gate.accepted(probe)
            self.tracker.track(task)
            self.tracker.ended(task).add_done_callback(self._release_slot)
            return task

    def _release_slot(self, _: asyncio.Future[Any]) -> None:
        # Runs however following ended (finished, lost, given up, cancelled): the slot is back.
        self.gate.release()
        typical = self.tracker.typical_duration()
        if self.limits.probe_interval is None and typical is not None:
            self.gate.probe_interval = max(0.05, 1.5 * typical)

    def _retake_slot(self, _: Task, ended: asyncio.Future[None]) -> None:
        # A callback's claim freed this task's slot, but a query shows it still running.
        self.gate.hold()
        ended.add_done_callback(self._release_slot)

    async def _query_raw(self, task_id: str) -> Any:
        return await self.http.call("GET", task_path(task_id))

    async def get_task(self, task_id: str) -> Task:
        """The task's current state, by Kling's task_id or by your external_task_id."""
        if not task_id or "/" in task_id or task_id in (".", ".."):
            raise InvalidRequestError(f"task_id: invalid id {task_id!r}", field="task_id")
        task = read_task(await self._query_raw(task_id), "query", hook=self.event_hook)
        self.tracker.observe(task)
        return task

    async def list_tasks(self, page_num: int = 1, page_size: int = 30) -> TaskPage:
        """One page of the account's tasks (newest first, as far as Kling documents).

        An item that cannot be read does not fail the page: the page (a list of Task) holds
        every readable task, `page.unreadable` a ResponseValidationError per other item, and
        each is also logged and reported as a `task_unreadable` event.
        """
        for name, value, high in (("page_num", page_num, 1000), ("page_size", page_size, 500)):
            if not 1 <= value <= high:
                raise InvalidRequestError(
                    f"{name} must be in [1, {high}], got {value}",
                    field=name,
                    limit=f"[1, {high}]",
                    value=value,
                )
        return read_page(await self._list_raw(page_num, page_size), "list", hook=self.event_hook)

    async def _list_raw(self, page_num: int, page_size: int) -> list[Any]:
        params = {"pageNum": page_num, "pageSize": page_size}
        data = await self.http.call("GET", CREATE_PATH, params=params)
        if not isinstance(data, list):
            raise ResponseValidationError(f"list: expected an array, got {type(data).__name__}")
        return data

    async def iter_tasks(
        self, *, page_size: int = 500, max_pages: int = 1000
    ) -> AsyncIterator[Task]:
        """Every task the list endpoint reports, page by page (up to `max_pages`).

        Items that cannot be read are skipped; each is logged and reported as a
        `task_unreadable` event (the Client's `event_hook`), so one odd task never ends the walk.
        """
        for page in range(1, min(max_pages, 1000) + 1):
            tasks = await self.list_tasks(page, page_size)
            for task in tasks:
                yield task
            if tasks.items < page_size:
                return

    async def wait(
        self, task: Task | str, *, timeout: float | None = None, raise_on_failure: bool = True
    ) -> Task:
        """Wait until the task ends; raises TaskFailedError / TaskTimeoutError (task may go on).

        Raises ResponseValidationError (naming the field and the value) after
        `PollPolicy.unreadable_limit` answers in a row about the task could not be read; the
        client still follows the task, holding its concurrency slot, until it is seen finished
        or `PollPolicy.timeout` has passed.
        """
        if isinstance(task, str):
            task = await self.get_task(task)
        done = self.tracker.track(task, urgent=True)  # a callback's claim is confirmed at once
        limit = self.poll.timeout if timeout is None else timeout
        try:
            final = await asyncio.wait_for(asyncio.shield(done), timeout=limit)
        except TimeoutError:
            raise TaskTimeoutError(
                f"task {task.task_id} did not finish within {limit:g} s", task=task
            ) from None
        if raise_on_failure and final.task_status == "failed":
            raise TaskFailedError(final)
        return final

    def notify(self, task_id: str | None = None, status: str | None = None) -> None:
        """A callback's hint that a task changed; unconfirmed (a query decides).

        A terminal `status` claimed for a task we follow frees its concurrency slot at once
        (Kling frees it when the task ends; a false claim costs at most one refused create) and
        a later sweep confirms it; a running status changes nothing; anything else, or no
        task id, makes the client sweep now.
        """
        if task_id is None:
            self.tracker.hint()
        else:
            self.tracker.claim(task_id, status)

    async def download(
        self,
        task: Task,
        out_dir: PathLike,
        *,
        name: str | None = None,
        watermarked: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> list[Path]:
        """Stream every video of a finished task into `out_dir`; returns the files written."""
        results = await save_videos(
            self.http.session,
            task,
            Path(out_dir),
            refresh=self.get_task,
            name=name,
            watermarked=watermarked,
            timeouts=self.timeouts,
            retry=self.retry,
            clock=self._clock,
            sleep=self._sleep,
            on_progress=on_progress,
            event_hook=self.event_hook,
        )
        return [r.path for r in results]

    async def generate(
        self, request: MultiImageToVideoRequest, out_dir: PathLike, *, timeout: float | None = None
    ) -> list[Path]:
        """Submit, wait and download in one call."""
        task = await self.wait(await self.submit(request), timeout=timeout)
        return await self.download(task, out_dir)
