"""Sweep pacing: the lost-time rule (_lost_time) and the Pacer's modes (_pacing), no clocks."""

from __future__ import annotations

import itertools

import pytest

from kling_async import PollPolicy
from kling_async._lost_time import Durations, lost_time_due
from kling_async._pacing import RELIABLE, Pacer

POLICY = PollPolicy(interval=1.0, interval_max=30.0, backoff=2.0, min_interval=0.05)


def lost_by(x: float, last: float, starts: list[float], durations: list[float]) -> float:
    """Brute force: the expected lost slot-time by `x`, each task's end uniform between the
    learnt durations it has not yet outlived (the same piecewise-uniform model, finely sampled)."""
    edges = Durations(bins=len(durations) - 1)
    edges.extend(durations)
    knots = edges.edges()
    total = 0.0
    for start in starts:
        samples = []
        for low, high in itertools.pairwise(knots):
            samples += [low + (high - low) * (k + 0.5) / 400 for k in range(400)]
        alive = [d for d in samples if start + d > last]
        total += sum(max(0.0, x - start - d) for d in alive) / len(alive)
    return total


def test_durations_edges_are_interpolated_quantiles() -> None:
    durations = Durations(bins=4)
    durations.extend([10.0, 20.0, 30.0, 40.0, 50.0])
    assert durations.edges() == (10.0, 20.0, 30.0, 40.0, 50.0)
    assert durations.median() == 30.0
    durations.add(-5)  # a clock oddity never reads as a negative time
    assert min(durations) == 0.0
    assert len(durations) == 6


def test_lost_time_due_matches_brute_force() -> None:
    durations = [80.0, 95.0, 100.0, 110.0, 120.0]
    starts = [0.0, 10.0, 30.0]
    last = 90.0  # all three seen running then; the first is inside its window
    edges = Durations(bins=4)
    edges.extend(durations)
    due = lost_time_due(last, starts, edges.edges(), budget=2.0)
    assert due is not None and due > last
    assert lost_by(due, last, starts, durations) == pytest.approx(2.0, rel=0.02)


@pytest.mark.parametrize("budget", [0.01, 0.3, 5.0, 400.0])
def test_lost_time_due_is_exact_wherever_the_crossing_lies(budget: float) -> None:
    # The edges are laid out only up to a growing horizon: a crossing near `last`, several
    # bins away or past every window must all match the brute force.
    durations = [80.0, 85.0, 95.0, 100.0, 104.0, 110.0, 120.0, 150.0, 155.0]
    starts = [0.0, 10.0, 30.0, 45.0, 89.0, 120.0]
    last = 100.0
    edges = Durations(bins=8)
    edges.extend(durations)
    due = lost_time_due(last, starts, edges.edges(), budget=budget)
    assert due is not None and due > last
    assert lost_by(due, last, starts, durations) == pytest.approx(budget, rel=0.02)


def test_nothing_can_end_yet_means_a_late_sweep() -> None:
    edges = (100.0, 150.0, 200.0)
    due = lost_time_due(0.0, [0.0], edges, budget=1.0)
    assert due is not None and 100.0 < due < 120.0  # a few seconds into the window
    assert lost_time_due(0.0, [], edges, budget=1.0) is None


def test_more_tasks_in_their_window_mean_sooner_sweeps() -> None:
    edges = (100.0, 150.0, 200.0)
    one = lost_time_due(120.0, [0.0], edges, budget=1.0)
    ten = lost_time_due(120.0, [0.0] * 10, edges, budget=1.0)
    assert one is not None and ten is not None
    assert ten - 120.0 < (one - 120.0) / 2  # ~1/sqrt(10) of the interval


def test_a_task_older_than_any_seen_is_swept_ever_less_often() -> None:
    edges = (100.0, 150.0, 200.0)
    soon = lost_time_due(210.0, [0.0], edges, budget=1.0)  # 10 s overdue
    later = lost_time_due(1000.0, [0.0], edges, budget=1.0)  # 800 s overdue
    assert soon is not None and later is not None
    assert soon - 210.0 < later - 1000.0


def test_identical_durations_are_a_point_mass() -> None:
    due = lost_time_due(0.0, [0.0, 0.0], (10.0, 10.0, 10.0), budget=1.0)
    assert due == pytest.approx(10.5)  # two tasks end at 10: 1 s of slot-time by 10.5


def test_pacer_backs_off_until_durations_are_learnt() -> None:
    pacer = Pacer(POLICY)
    pacer.begin(0.0)
    assert pacer.delay(0.0, [0.0], claimed=0) == 1.0
    pacer.swept(1.0, changed=0)
    assert pacer.delay(1.0, [0.0], claimed=0) == 2.0
    pacer.failed(3.0)
    assert pacer.delay(3.0, [0.0], claimed=0) == 4.0
    pacer.swept(7.0, changed=1)  # something changed: quick again
    assert pacer.delay(7.5, [0.0], claimed=0) == 0.5


def test_pacer_uses_the_lost_time_rule_once_learnt() -> None:
    pacer = Pacer(POLICY)
    for took in (100.0, 150.0, 200.0):
        pacer.finished(took, announced=False)
    pacer.swept(0.0, changed=0)
    assert pacer.typical() == 150.0
    assert pacer.delay(0.0, [0.0], claimed=0) == 30.0  # capped by interval_max
    budget = POLICY.due_fraction * 150.0
    due = lost_time_due(0.0, [0.0], pacer.durations.edges(), budget)
    assert due is not None
    assert pacer.delay(due - 5, [0.0], claimed=0) == pytest.approx(5.0)
    assert pacer.delay(due + 5, [0.0], claimed=0) == POLICY.min_interval


def test_claimed_tasks_alone_are_confirmed_at_once() -> None:
    pacer = Pacer(POLICY)
    assert pacer.delay(0.0, [], claimed=2) == POLICY.min_interval


def test_reliable_callbacks_make_polling_a_safety_net() -> None:
    pacer = Pacer(POLICY)
    for _ in range(RELIABLE - 1):
        pacer.finished(150.0, announced=True)
    assert not pacer.callbacks_reliable
    pacer.finished(150.0, announced=True)
    assert pacer.callbacks_reliable
    pacer.swept(0.0, changed=0)
    # one sweep per typical generation time, past interval_max
    assert pacer.delay(10.0, [0.0, 50.0], claimed=1) == pytest.approx(140.0)
    pacer.finished(150.0, announced=False)  # a completion no callback announced: poll again
    assert not pacer.callbacks_reliable
    assert pacer.delay(10.0, [0.0, 50.0], claimed=0) <= POLICY.interval_max
