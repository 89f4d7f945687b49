"""What became of a job, in words: the labels of per-job lines, the run's summary and `status`.

The journal keeps its states as stored (older folders stay readable); a label also reads the
error and the task id, because one stored state can mean several things. A `submitting` row is
an intent on record: with no error, a create sent or about to be (the next run asks Kling by
external id before sending again); with Kling's error answer, or stopped before it was sent, a
job that was *not submitted*; with a transport error, a create whose *outcome is unknown*; with a
task id, a submitted task whose *status is unknown* (following it failed). A `succeeded` row is
a video still *to download*, or one whose *download failed*. A job finished in an earlier run
and only reported again is *already done*; a job of the jobs file that no run has reached has no
row at all: *not reached*.
"""

from __future__ import annotations

from ._errors import APIError
from ._journal import JobState
from ._records import NOT_SENT, OVER_BUDGET, JobError

__all__ = [
    "ALREADY_DONE",
    "LABELS",
    "NOT_REACHED",
    "NOT_SUBMITTED",
    "OUTCOME_UNKNOWN",
    "OVER_BUDGET_LABEL",
    "PROBLEM_CAUSES",
    "cause",
    "label",
]

ALREADY_DONE = "already done"
NOT_REACHED = "not reached"
NOT_SUBMITTED = "not submitted"
OUTCOME_UNKNOWN = "outcome unknown"
OVER_BUDGET_LABEL = "over budget"
STATUS_UNKNOWN = "status unknown"
TO_DOWNLOAD = "to download"
UNCONFIRMED = "unconfirmed"
DOWNLOAD_FAILED = "download failed"
#: Every label, in the order a summary lists them: done, under way, not done.
LABELS = (
    JobState.DOWNLOADED,
    ALREADY_DONE,
    TO_DOWNLOAD,
    JobState.SUBMITTED,
    UNCONFIRMED,
    STATUS_UNKNOWN,
    DOWNLOAD_FAILED,
    JobState.FAILED,
    JobState.REJECTED,
    JobState.EXPIRED,
    JobState.PENDING,
    OVER_BUDGET_LABEL,
    NOT_SUBMITTED,
    OUTCOME_UNKNOWN,
    NOT_REACHED,
)
#: Labels whose jobs usually share one cause, worth naming in a summary ("5 not submitted
#: (AuthenticationError)"); a failed or rejected job's reason is its own.
PROBLEM_CAUSES = frozenset(
    {NOT_SUBMITTED, OUTCOME_UNKNOWN, STATUS_UNKNOWN, DOWNLOAD_FAILED, JobState.PENDING}
)


def _api_error_names() -> frozenset[str]:
    """Error types of an answer from Kling: it refused the request, so no task was made."""
    found: list[type[APIError]] = [APIError]
    for cls in found:
        found.extend(cls.__subclasses__())
    return frozenset(cls.__name__ for cls in found)


_KLING_ANSWERED = _api_error_names()


def label(
    state: str,
    error: JobError | None = None,
    task_id: str | None = None,
    *,
    earlier: bool = False,
) -> str:
    """The label of a job in `state` (with its error and task id, as the journal holds them);
    `earlier`: reported again after an earlier run finished it."""
    if state == JobState.SUBMITTING:
        if task_id:
            return STATUS_UNKNOWN
        if not error:
            return UNCONFIRMED
        if error.type == NOT_SENT or error.type in _KLING_ANSWERED:
            return NOT_SUBMITTED
        return OUTCOME_UNKNOWN
    if state == JobState.SUCCEEDED:
        return DOWNLOAD_FAILED if error else TO_DOWNLOAD
    if state == JobState.PENDING and error and error.type == OVER_BUDGET:
        return OVER_BUDGET_LABEL
    if state == JobState.DOWNLOADED and earlier:
        return ALREADY_DONE
    return state


def cause(error: JobError | None) -> str:
    """A short name for why a job is where it is: its error's type ("batch stopped" for a job
    the batch stopped before sending)."""
    if not error:
        return "unknown"
    if error.type == NOT_SENT:
        return "batch stopped"
    if error.type == OVER_BUDGET:
        return "units budget"
    return error.type or "error"
