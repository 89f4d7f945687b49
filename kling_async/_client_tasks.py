"""Task operations of the Client: submit, follow, query, wait for and download tasks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from ._config import PollPolicy, Timeouts
from ._create import create_task, prepared
from ._download_retry import ProgressCallback, save_video, video_filename
from ._download_stream import DownloadResult
from ._errors import ClientClosedError, DownloadError, TaskFailedError, TaskTimeoutError
from ._events import Event, EventHook
from ._http import HttpLayer
from ._images import EncodingCache
from ._poll import TaskTracker
from ._queries import check_page, check_task_id, list_raw, query_raw
from ._server_time import ServerClock
from ._slots import Slots
from ._types import PathLike
from .models import MultiImageToVideoRequest, Task, TaskPage, read_page, read_task

__all__ = ["TaskOperations"]


class TaskOperations:
    """What a Client does with tasks, given the parts its constructor wired together."""

    # Set by Client.__init__ (the construction and lifecycle live in _client).
    event_hook: EventHook | None
    callback_url: str | None
    timeouts: Timeouts
    poll: PollPolicy
    server_clock: ServerClock
    encodings: EncodingCache
    _http: HttpLayer
    _tracker: TaskTracker
    _slots: Slots

    def _emit(self, event: Event) -> None:
        # Looked up at each event: a hook set later (`client.event_hook = fn`) gets them all.
        if self.event_hook is not None:
            self.event_hook(event)

    def _check_open(self) -> None:
        if self._http.closed:
            raise ClientClosedError("this client was closed (aclose()); make a new Client")

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
        task, _ = await self._submit_followed(
            request, external_task_id=external_task_id, adopt_existing=adopt_existing
        )
        return task

    async def _submit_followed(
        self,
        request: MultiImageToVideoRequest,
        *,
        external_task_id: str | None = None,
        adopt_existing: bool = False,
    ) -> tuple[Task, asyncio.Future[Task]]:
        """`submit`, plus the future `follow()` would give, taken before the task can end.

        For run_batch, which awaits its journal between the create and following the task: a
        task seen finished meanwhile would otherwise be followed afresh from its `submitted`
        view (one more query, and a second `task_finished` event).
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
