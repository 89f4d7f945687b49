"""The words a job's stored state is shown with (`BatchResult.outcome`, the CLI)."""

from __future__ import annotations

from kling_async import BatchResult, JobError, JobState
from kling_async._labels import LABELS, label


def test_a_submitting_row_says_what_it_is() -> None:
    auth = JobError("bad signature", "AuthenticationError", 1002, answered=True)
    assert label("submitting") == "unconfirmed"
    assert label("submitting", auth) == "not submitted"
    account = JobError("", "AccountError", 1102, answered=True)
    assert label("submitting", account) == "not submitted"
    assert label("submitting", JobError("not sent: x", "NotSubmitted")) == "not submitted"
    assert label("submitting", JobError("", "RequestTimeoutError")) == "outcome unknown"
    assert label("submitting", JobError("", "TaskTimeoutError"), "task-1") == "status unknown"


def test_other_states() -> None:
    assert label("succeeded") == "to download"
    assert label("succeeded", JobError("", "DownloadError")) == "download failed"
    assert label("downloaded") == "downloaded"
    assert label("downloaded", earlier=True) == "already done"
    for state in ("failed", "rejected", "expired", "pending", "submitted"):
        assert label(state) == state and label(state, earlier=True) == state
    assert all(word in LABELS for word in ("not reached", "already done", "not submitted"))


def test_batch_result_outcome() -> None:
    error = JobError("bad signature", "AuthenticationError", 1002, answered=True)
    submitting, downloaded = JobState.SUBMITTING, JobState.DOWNLOADED
    assert BatchResult(1, "x", submitting, error=error).outcome == "not submitted"
    assert BatchResult(1, "x", downloaded, from_earlier_run=True).outcome == "already done"
    assert not BatchResult(1, "x", downloaded).from_earlier_run
