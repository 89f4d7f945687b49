"""Client: the public entry point. Submit, follow and download tasks, one shared session/gate."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Mapping
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

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
from ._coordinator import Coordinator, coordinator_url
from ._create import create_task, prepared
from ._download_retry import ProgressCallback, save_video, video_filename
from ._download_stream import DownloadResult
from ._errors import (
    ClientClosedError,
    DownloadError,
    TaskFailedError,
    TaskTimeoutError,
)
from ._events import Event, EventHook
from ._gate import Gate
from ._health import ApiHealth, check_base_url
from ._http import HttpLayer
from ._images import EncodingCache
from ._limits import SlotGate
from ._poll import TaskTracker
from ._queries import check_page, check_task_id, list_raw, query_raw
from ._request_rate import RequestRate
from ._server_time import ServerClock
from ._shared_tracker import SharedTracker
from ._slots import Slots
from ._stats import ClientStats
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
        coordinator: str | None = None,
    ) -> None:
        self.credentials = credentials or Credentials.from_env(
            access_key, secret_key, api_key, environ=environ
        )
        self.base_url = check_base_url(
            base_url or base_url_from_env(environ),
            what="base_url" if base_url else "KLING_BASE_URL",
        ).rstrip("/")
        self.timeouts, self.retry, self.poll, self.limits = timeouts, retry, poll, limits
        self.event_hook = event_hook
        #: Given to every submitted request that has none (e.g. a CallbackReceiver's url).
        self.callback_url = callback_url
        self._clock = clock
        rng = random.Random()
        #: The server's time, learnt from the `Date` of every answer: tokens are signed by it
        #: and video expiry is judged by it, so a machine whose clock is off still works.
        self.server_clock = ServerClock(wall=clock)
        self._http = HttpLayer(
            base_url=self.base_url,
            signer=JwtSigner(self.credentials, clock=self.server_clock.server_now),
            session=session,
            timeouts=timeouts,
            retry=retry,
            rps=limits.rps,
            sleep=sleep,
            monotonic=monotonic,
            event_hook=self._emit,
            rng=rng,
            server_clock=self.server_clock,
            wall=clock,
        )
        url = coordinator_url(coordinator, environ)  # several processes, one budget in Redis
        tracker_type = TaskTracker if url is None else SharedTracker
        self._tracker = tracker_type(
            list_page=partial(list_raw, self._http),
            get_one=partial(query_raw, self._http),
            policy=poll,
            page_size=limits.page_size,
            sleep=sleep,
            monotonic=monotonic,
            event_hook=self._emit,
            creates_queued=partial(self._http.rate.queue_time, "create"),
        )
        self._coordinator = (
            None
            if url is None
            else Coordinator(
                url,
                self.credentials,
                self._http,
                cast(SharedTracker, self._tracker),
                maximum=limits.concurrency,
                probe_interval=limits.probe_interval or 30.0,
                rps=limits.rps,
                event_hook=self._emit,
            )
        )
        self._gate: Gate = (
            self._coordinator.gate
            if self._coordinator
            else SlotGate(
                limits.concurrency,
                probe_interval=limits.probe_interval or 30.0,
                # 1303 with nothing of ours running: the documented back-off (≥ 1 s) comes first.
                first_wait=min(retry.concurrency_wait_initial, limits.probe_interval or 30.0),
                slow_start=True,
                monotonic=monotonic,
                rng=rng,
            )
        )
        self._http.rate.on_drained = self._drained
        self._slots = Slots(
            self._gate, self._tracker, self._http.retries, probe_interval=limits.probe_interval
        )
        self.encodings = EncodingCache()

    def _drained(self, lane: str) -> None:
        if lane == "create":  # sweeps were spaced out behind queued creates: plan anew
            self._tracker.replan()

    def _emit(self, event: Event) -> None:
        # Looked up at each event: a hook set later (`client.event_hook = fn`) gets them all.
        if self.event_hook is not None:
            self.event_hook(event)

    @classmethod
    def from_env(cls, **options: Any) -> Client:
        """Credentials and base URL from KLING_* variables; keyword options as for `Client`."""
        return cls(**options)

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r}, credentials={self.credentials!r})"

    async def __aenter__(self) -> Self:
        self._check_open()
        if self._coordinator is not None:
            try:  # unreachable: CoordinatorUnreachableError now, not at the first create
                await self._coordinator.connect()
            except BaseException:
                await self.aclose()
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop following tasks and close our session (never a borrowed one); the client
        cannot be used afterwards (`ClientClosedError`)."""
        await self._tracker.aclose()
        if self._coordinator is not None:
            await self._coordinator.aclose()
        await self._http.aclose()

    @property
    def closed(self) -> bool:
        """True once `aclose()` was called."""
        return self._http.closed

    def _check_open(self) -> None:
        if self._http.closed:
            raise ClientClosedError("this client was closed (aclose()); make a new Client")

    @property
    def health(self) -> ApiHealth:
        """The API's health as this client sees it: never answered, up, down, or given up."""
        return self._http.health

    @property
    def request_rate(self) -> RequestRate:
        """The adaptive request rate all this client's API requests share (`.state()`)."""
        return self._http.rate

    @property
    def slot_limit(self) -> int:
        """How many concurrency slots may be held now (lowered by 1303, raised by probes)."""
        return self._gate.limit

    @property
    def stats(self) -> ClientStats:
        """What the client has done so far: requests, sweeps, the slot gate, encodings."""
        gate, tracker = self._gate, self._tracker
        return ClientStats(
            requests_sent=self._http.requests_sent,
            sweeps=tracker.sweeps,
            list_calls=tracker.list_calls,
            get_calls=tracker.get_calls,
            following=len(tracker),
            slots_in_use=gate.in_use,
            slot_limit=gate.limit,
            slot_peak=gate.peak,
            rejections=gate.rejections,
            probes=gate.probes,
            encoding_hits=self.encodings.hits,
            encoding_misses=self.encodings.misses,
        )

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
        self._check_open()
        request, own_key = prepared(request, external_task_id, self.callback_url)
        return await self._slots.create(
            lambda refused: create_task(
                self._http,
                request,
                cache=self.encodings,
                adopt_existing=adopt_existing or (own_key and refused),
            )
        )

    def follow(self, task: Task, *, hold_slot: bool = False) -> asyncio.Future[Task]:
        """Follow a task until it ends; the future resolves with its final view (as `wait`).

        `hold_slot`: the task was created elsewhere (an earlier run) and runs on the account,
        so it holds a concurrency slot until it is seen finished, as a `submit`ted one does.
        """
        self._check_open()
        return self._slots.follow(task, hold_slot=hold_slot)

    async def get_task(self, task_id: str) -> Task:
        """The task's current state, by Kling's task_id or by your external_task_id."""
        check_task_id(task_id)
        task = read_task(await query_raw(self._http, task_id), "query", hook=self._emit)
        self._tracker.observe(task)
        return task

    async def list_tasks(self, page_num: int = 1, page_size: int = 30) -> TaskPage:
        """One page of the account's tasks (newest first, as far as Kling documents).

        An item that cannot be read does not fail the page: the page (a list of Task) holds
        every readable task, `page.unreadable` a ResponseValidationError per other item, and
        each is also logged and reported as a `task_unreadable` event.
        """
        check_page(page_num, page_size)
        items = await list_raw(self._http, page_num, page_size)
        return read_page(items, "list", hook=self._emit)

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
        self._check_open()
        if isinstance(task, str):
            task = await self.get_task(task)
        done = self._tracker.track(task, urgent=True)  # a callback's claim is confirmed at once
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
            self._tracker.hint()
        else:
            self._tracker.claim(task_id, status)

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
        self._check_open()
        if not task.videos:
            raise DownloadError(f"task {task.task_id} ({task.task_status.value}) has no videos")
        paths = []
        for index in range(len(task.videos)):
            file = video_filename(task, index, name=name, watermarked=watermarked)
            saved = await self.save_video(
                task, index, Path(out_dir) / file, watermarked=watermarked, on_progress=on_progress
            )
            paths.append(saved.path)
        return paths

    async def save_video(
        self,
        task: Task,
        index: int,
        dest: PathLike,
        *,
        watermarked: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> DownloadResult:
        """Stream video `index` of a finished task to the file `dest` (through `dest.part`:
        verified, atomic, resumed), with the client's retries, clocks and events."""
        return await save_video(
            self._http.session,
            task,
            index,
            Path(dest),
            refresh=self.get_task,
            watermarked=watermarked,
            timeouts=self.timeouts,
            retries=self._http.retries,
            server_clock=self.server_clock,
            on_progress=on_progress,
        )

    async def generate(
        self, request: MultiImageToVideoRequest, out_dir: PathLike, *, timeout: float | None = None
    ) -> list[Path]:
        """Submit, wait and download in one call."""
        task = await self.wait(await self.submit(request), timeout=timeout)
        return await self.download(task, out_dir)
