"""The words a job's stored state is shown with (`BatchResult.outcome`, the CLI)."""

from __future__ import annotations

from kling_async import BatchResult
from kling_async._labels import LABELS, label


def test_a_submitting_row_says_what_it_is() -> None:
    auth = {"type": "AuthenticationError", "code": 1002, "message": "bad signature"}
    assert label("submitting") == "unconfirmed"
    assert label("submitting", auth) == "not submitted"
    assert label("submitting", {"type": "AccountError", "code": 1102}) == "not submitted"
    assert label("submitting", {"type": "NotSubmitted", "message": "not sent: x"}) == (
        "not submitted"
    )
    assert label("submitting", {"type": "RequestTimeoutError"}) == "outcome unknown"
    assert label("submitting", {"type": "TaskTimeoutError"}, "task-1") == "status unknown"


def test_other_states() -> None:
    assert label("succeeded") == "to download"
    assert label("succeeded", {"type": "DownloadError"}) == "download failed"
    assert label("downloaded") == "downloaded"
    assert label("downloaded", earlier=True) == "already done"
    for state in ("failed", "rejected", "expired", "pending", "submitted"):
        assert label(state) == state and label(state, earlier=True) == state
    assert all(word in LABELS for word in ("not reached", "already done", "not submitted"))


def test_batch_result_outcome() -> None:
    error = {"type": "AuthenticationError", "code": 1002, "message": "bad signature"}
    assert BatchResult(1, "x", "submitting", error=error).outcome == "not submitted"
    assert BatchResult(1, "x", "downloaded", from_earlier_run=True).outcome == "already done"
    assert not BatchResult(1, "x", "downloaded").from_earlier_run
