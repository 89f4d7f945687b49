"""Learnt generation times, and when the slot-time expected lost to unseen completions is due.

A task that has finished unseen keeps its concurrency slot idle in our view until the next
sweep shows it. From the generation times learnt so far (`Durations`), each running task's end is
known in distribution: started at s and seen running at the last sweep L, it ends at s + D with
D > L − s. By moment x the slot-time lost so far is expected to be

    A(x) = Σ_i E[(x − s_i − D)⁺ | D > L − s_i]

and a sweep, one request, is worth `budget` seconds of it: sweep when A(x) reaches the budget.
For a flat stream of completions (rate r) that is the interval sqrt(2 · budget / r) that
minimises lost time + budget × sweeps; where completions bunch (the first wave, tasks near the
end of their window, long and short kinds mixed) it sweeps sooner, and later where none is near.
Uniform polling gives (makespan ÷ greedy − 1) × requests per job ≈ 1/(2N); this rule ≈ 0.82/(2N)
in a discrete-event simulation of N tasks of T·U(0.8, 1.2).

The distribution is kept as `BINS` equal-mass bins between quantiles, uniform inside each, so
A(x) is piecewise quadratic and its crossing is found exactly in one pass over K + 1 edges per
task: cheap enough to run before every sweep.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import deque
from collections.abc import Iterable, Iterator, Sequence

__all__ = ["BINS", "Durations", "lost_time_due"]

#: Equal-mass bins the learnt distribution is kept in.
BINS = 16


class Durations:
    """The last `maxlen` generation times (seconds): median and quantile bin edges."""

    def __init__(self, maxlen: int = 256, bins: int = BINS) -> None:
        self._seen: deque[float] = deque(maxlen=maxlen)
        self._bins = bins
        self._edges: tuple[float, ...] | None = None
        self._median: float | None = None

    def __len__(self) -> int:
        return len(self._seen)

    def __iter__(self) -> Iterator[float]:
        return iter(self._seen)

    def add(self, seconds: float) -> None:
        """One more finished task's generation time (negative stamps are clamped to 0)."""
        self._seen.append(max(0.0, seconds))
        self._edges = self._median = None

    def extend(self, values: Iterable[float]) -> None:
        """Several at once."""
        for value in values:
            self.add(value)

    def median(self) -> float:
        """The median generation time (0 if none is known)."""
        if self._median is None:  # asked before every sweep: computed once per new duration
            self._median = statistics.median(self._seen) if self._seen else 0.0
        return self._median

    def edges(self) -> tuple[float, ...]:
        """`bins + 1` quantiles from the shortest to the longest, interpolated."""
        if self._edges is None:
            ordered = sorted(self._seen)
            top = len(ordered) - 1
            edges = []
            for j in range(self._bins + 1):
                rank = j * top / self._bins
                low = math.floor(rank)
                high = min(low + 1, top)
                edges.append(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))
            self._edges = tuple(edges)
        return self._edges


def _task_edges(
    start: float,
    last: float,
    edges: Sequence[float],
    out: list[tuple[float, float, float]],
    until: float = math.inf,
) -> bool:
    """Append (time, jump in F, change in F') for one task, F being its end's conditional CDF;
    True when it stopped at the first edge after `until` (the rest left out).

    The task (started at `start`) was seen running at `last`, so its end is after `last`.
    """
    k = len(edges) - 1
    age = last - start
    if age >= edges[k]:
        # Older than anything seen: expect its end spread over the next while (as long as the
        # spread seen, or as long as it is overdue), so a stuck task is swept ever less often.
        width = max(edges[k] - edges[0], age - edges[k], 1e-9)
        out.append((last, 0.0, 1.0 / width))
        out.append((last + width, 0.0, -1.0 / width))
        return False
    first = max(0, bisect.bisect_right(edges, age) - 1)
    low, high = edges[first], edges[first + 1]
    outlived = age > low  # the part of its first bin it has already outlived is no more
    head = (high - age) / (high - low) if outlived else 1.0
    total = head + (k - first - 1)  # the surviving bins' mass
    slope = 0.0
    for j in range(first, k):
        low, high = edges[j], edges[j + 1]
        share = 1.0 / total
        if j == first and outlived:
            low, share = age, head / total
        at = start + low
        if at > until:
            return True
        if high - low <= 1e-9:  # every recent task took exactly this long: a point mass
            out.append((at, share, -slope))
            slope = 0.0
        else:
            density = share / (high - low)
            out.append((at, 0.0, density - slope))
            slope = density
    if start + edges[k] > until:
        return True
    out.append((start + edges[k], 0.0, -slope))
    return False


def lost_time_due(
    last: float, starts: Iterable[float], edges: Sequence[float], budget: float
) -> float | None:
    """The moment (on the clock of `last` and `starts`) the expected lost slot-time A(x) since
    the sweep at `last` reaches `budget`; None when no task is given.

    `starts` are the running tasks' start times, all seen running at `last` (a task started
    after `last` is simply not old enough to have outlived anything); `edges` are the learnt
    distribution's bin edges (`Durations.edges()`).

    The crossing is usually within a bin or two of `last`: the edges are laid out only up to a
    horizon (one bin width, then four times as far each round) until it is found before it.
    """
    starts = list(starts)
    k = len(edges) - 1
    reach = max((edges[k] - edges[0]) / max(k, 1), edges[k] * 1e-3, 1e-6)
    while True:
        events: list[tuple[float, float, float]] = []
        until = last + reach
        cut = False
        for start in starts:
            cut = _task_edges(start, last, edges, events, until) or cut
        if not events and not cut:
            return None
        due = _crossing(events, last, budget, until if cut else math.inf)
        if due is not None:
            return due
        reach *= 4


def _crossing(
    events: list[tuple[float, float, float]], last: float, budget: float, until: float
) -> float | None:
    """Where A(x) reaches `budget`, from every event up to `until`; None if it is past it."""
    events.sort()
    lost, cdf, density, x = 0.0, 0.0, 0.0, last
    for at, jump, change in events:
        if at > until:
            break  # a task cut at `until` has events beyond it that are not in the list
        if at > x:
            step = at - x
            gain = cdf * step + density * step * step / 2
            if lost + gain >= budget:
                return x + _solve(budget - lost, cdf, density)
            lost += gain
            cdf += density * step
            x = at
        cdf += jump
        density += change
    if until < math.inf:  # A(x) is known exactly up to `until` only
        step = until - x
        if lost + cdf * step + density * step * step / 2 >= budget:
            return x + _solve(budget - lost, cdf, density)
        return None
    return x + (budget - lost) / max(cdf, 1e-12)


def _solve(rest: float, cdf: float, density: float) -> float:
    """The step t ≥ 0 with cdf·t + density·t²/2 = rest (stable form of the quadratic root)."""
    if rest <= 0:
        return 0.0
    root = math.sqrt(max(0.0, cdf * cdf + 2 * density * rest))
    return 2 * rest / (cdf + root) if cdf + root > 0 else 0.0
