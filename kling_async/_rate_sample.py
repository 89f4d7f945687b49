"""What the adaptive rate measures: requests sent and answers seen lately (`_adaptive`'s input).

Pure bookkeeping on the caller's clock. Three numbers come out of it:

- the **send rate** over a span, counted over the time actually covered when sending began less
  than a span ago (0.2 s after the first request, 6 sends are 30 requests/s, not 6);
- the rate the server **took** (answers not throttled) over a span;
- the **throttled share** of the last `sample` answers, by count, whatever their age: at 2
  requests/s a one-second window holds two answers, and one throttle among them says nothing.
  Fewer answers than `sample` so far count the missing ones as accepted, so the first few
  answers cannot make a share on their own;
- the **streak**: how many of the last answers in a row were throttles.
"""

from __future__ import annotations

import math
from collections import deque
from itertools import islice

__all__ = ["RateSample"]


class RateSample:
    """Recent sends and answers: the send rate, the rate taken, and the throttled share."""

    def __init__(self, sample: int) -> None:
        self.sample = sample
        self._sends: deque[float] = deque()
        self._answers: deque[tuple[float, bool]] = deque()  # (when, throttled), oldest first
        self._throttles = 0  # throttles among `_answers`
        self.streak = 0  # throttles in a row, the last answers

    def sent(self, now: float, keep: float) -> None:
        """One request left now; sends are kept for `keep` seconds."""
        self._sends.append(now)
        self._trim(now, keep)

    def _trim(self, now: float, span: float) -> None:
        sends = self._sends
        while sends and sends[0] <= now - span:
            sends.popleft()

    def answer(self, now: float, throttled: bool, keep: float) -> None:
        """An answer came back now; answers are kept for `keep` seconds or `sample` answers."""
        self._answers.append((now, throttled))
        self._throttles += throttled
        self.streak = self.streak + 1 if throttled else 0
        answers = self._answers
        while len(answers) > self.sample and answers[0][0] <= now - keep:
            self._throttles -= answers.popleft()[1]

    def send_rate(self, now: float, span: float) -> float:
        """Requests per second over the last `span` seconds, or since the first of them when
        sending began later: n sends between the first and now are (n − 1) intervals."""
        self._trim(now, span)
        sends = self._sends
        count = len(sends)
        if count < 2 or now <= sends[0]:
            return count / span
        return max(count / span, (count - 1) / (now - sends[0]))

    def taken(self, now: float, span: float) -> float:
        """Answers not throttled per second over the last `span` seconds; inf when there were
        none (nothing to measure by: a span of throttles alone bounds nothing)."""
        taken = sum(not throttled for at, throttled in self._answers if at > now - span)
        return taken / span if taken else math.inf

    def throttled_share(self) -> float:
        """Throttles among the last `sample` answers (missing answers count as accepted)."""
        answers = self._answers
        extra = len(answers) - self.sample
        throttles = self._throttles
        if extra > 0:  # older answers kept for `taken`'s span are not part of the sample
            throttles -= sum(throttled for _, throttled in islice(answers, extra))
        return throttles / self.sample
