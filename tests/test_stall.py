"""Progress-aware budgets (`_stall`): attempts in a row without progress, not attempts."""

from __future__ import annotations

import pytest

from kling_async import ConfigurationError
from kling_async._stall import Attempt, DownloadVerdict, StallBudget, download_verdict

RETRY, REFRESH, GIVE_UP, EXPIRED = (
    DownloadVerdict.RETRY,
    DownloadVerdict.REFRESH,
    DownloadVerdict.GIVE_UP,
    DownloadVerdict.EXPIRED,
)


def test_progress_resets_the_count_and_the_backoff() -> None:
    budget = StallBudget(limit=3)
    assert budget.failed(progressed=False) and budget.backoff_attempt == 0
    assert budget.failed(progressed=False) and budget.backoff_attempt == 1
    assert budget.failed(progressed=True)
    assert (budget.stalled, budget.backoff_attempt, budget.attempts) == (0, 0, 3)
    assert budget.failed(progressed=False)
    assert budget.failed(progressed=False)
    assert not budget.failed(progressed=False)  # three in a row without progress
    assert budget.exhausted and budget.attempts == 6


def test_a_transfer_truncated_every_time_is_never_given_up() -> None:
    # The case: 60 % of transfers cut short, each attempt still moving bytes.
    budget = StallBudget(limit=6)
    verdicts = [download_verdict(budget, Attempt.BYTES, past_expiry=False) for _ in range(50)]
    assert set(verdicts) == {RETRY}
    assert budget.attempts == 50 and budget.backoff_attempt == 0


def test_attempts_without_a_byte_give_up_after_the_limit_in_a_row() -> None:
    budget = StallBudget(limit=3)
    seq = [Attempt.NOTHING, Attempt.NOTHING, Attempt.BYTES, Attempt.NOTHING, Attempt.NOTHING]
    assert [download_verdict(budget, a, past_expiry=False) for a in seq] == [RETRY] * 5
    assert download_verdict(budget, Attempt.NOTHING, past_expiry=False) is GIVE_UP


def test_a_refused_url_is_refreshed_whatever_the_count() -> None:
    budget = StallBudget(limit=2)
    download_verdict(budget, Attempt.NOTHING, past_expiry=False)
    for _ in range(20):  # links that expire before each use: fetched again every time
        assert download_verdict(budget, Attempt.URL_REFUSED, past_expiry=False) is REFRESH
    assert budget.stalled == 1 and budget.attempts == 21


def test_past_expiry_ends_it_whatever_else() -> None:
    for attempt in Attempt:
        assert download_verdict(StallBudget(), attempt, past_expiry=True) is EXPIRED


def test_the_limit_is_checked() -> None:
    with pytest.raises(ConfigurationError, match=r"StallBudget\.limit must be ≥ 1, got 0"):
        StallBudget(limit=0)
