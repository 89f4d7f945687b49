"""The units budget: reserve / settle / release against a cap, and raised estimates."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from kling_async import MultiImageToVideoRequest
from kling_async._budget import Budget, BudgetState
from kling_async._prices import Kind

STD5 = Kind("kling-v1-6", "std", "5")
PRO5 = Kind("kling-v1-6", "pro", "5")
PRO10 = Kind("kling-v1-6", "pro", "10")
D = Decimal


def test_reservations_stop_at_the_cap() -> None:
    budget = Budget(cap=10)
    assert budget.estimate(PRO5) == D("3.5")
    assert budget.reserve("a", PRO5) and budget.reserve("b", PRO5)
    assert budget.reserved == 7 and budget.can_afford(D(3)) and not budget.can_afford(D("3.5"))
    assert not budget.reserve("c", PRO5)  # 7 + 3.5 > 10: nothing held
    assert budget.reserved == 7
    assert all(budget.reserve(job, STD5) for job in "cde")  # 8, 9, then exactly 10
    assert not budget.reserve("f", STD5)
    assert budget.state() == BudgetState(D(0), D(10), D(10), 5)
    assert budget.state().remaining == 0


def test_settle_moves_units_from_reserved_to_spent() -> None:
    budget = Budget(cap=20)
    budget.reserve("a", PRO10)
    s = budget.settle("a", D(7))
    assert (s.units, s.estimate, s.overshoot, s.reported, s.raised_to) == (7, 7, 0, True, None)
    assert (budget.spent, budget.reserved) == (7, 0)
    assert budget.settle("a", D(7)) is s  # reported twice (rerun, callback): charged once
    assert budget.spent == 7
    with pytest.raises(ValueError, match="already settled"):
        budget.reserve("a", PRO10)


def test_a_failed_task_costs_what_kling_deducted() -> None:
    budget = Budget(cap=5)
    budget.reserve("a", PRO5)
    assert budget.settle("a", D(0)).units == 0
    assert (budget.spent, budget.reserved) == (0, 0)


def test_unknown_deduction_is_charged_at_the_estimate() -> None:
    budget = Budget()
    budget.reserve("a", PRO5)
    s = budget.settle("a", None)
    assert (s.units, s.reported) == (D("3.5"), False)
    assert budget.spent == D("3.5")


def test_release_frees_a_create_that_never_happened() -> None:
    budget = Budget(cap=4)
    assert budget.reserve("a", PRO5)
    assert not budget.reserve("b", STD5)
    assert budget.release("a") == D("3.5") and budget.release("a") == 0
    assert budget.reserve("b", STD5)


def test_overshoot_raises_the_kind_estimate_and_is_reported() -> None:
    budget = Budget(cap=30)
    budget.reserve("a", PRO5)
    budget.reserve("b", PRO5)
    s = budget.settle("a", D(5))
    assert (s.estimate, s.overshoot, s.raised_to) == (D("3.5"), D("1.5"), D(5))
    assert budget.estimate(PRO5) == 5 and budget.estimate(STD5) == 1  # only that kind
    assert budget.reserve("c", PRO5) and budget.reserved == D("8.5")  # b at 3.5, c at 5
    s = budget.settle("b", D("4.5"))  # above b's estimate, below the raised one
    assert (s.overshoot, s.raised_to) == (D(1), None)
    assert budget.estimate(PRO5) == 5  # never lowered
    s = budget.settle("c", D(3))
    assert (s.overshoot, s.raised_to) == (0, None) and budget.estimate(PRO5) == 5


def test_resume_replays_the_journal_even_past_a_lower_cap() -> None:
    budget = Budget(cap=5)
    budget.settle("done", D(7), kind=PRO10)  # finished before the restart
    assert budget.spent == 7 and budget.estimate(PRO10) == 7
    assert budget.reserve("running", PRO5, units="3.5", force=True)  # exists: held anyway
    assert budget.state() == BudgetState(D(7), D("3.5"), D(5), 1)
    assert budget.state().remaining == 0
    assert not budget.reserve("new", STD5)
    with pytest.raises(ValueError, match="pass its kind"):
        budget.settle("stranger", D(1))


def test_reserving_twice_holds_once() -> None:
    budget = Budget(cap=4)
    assert budget.reserve("a", PRO5) and budget.reserve("a", PRO5)
    assert budget.reserved == D("3.5")


def test_prices_and_requests_drive_the_estimate() -> None:
    budget = Budget(cap="10.5", prices={"pro-10": 5})
    request = MultiImageToVideoRequest(
        images=["https://example.com/a.png"], prompt="p", mode="pro", duration="10"
    )
    assert budget.estimate(request) == 5 and budget.cap == D("10.5")
    assert budget.reserve("a", request) and budget.reserve("b", request)
    assert not budget.reserve("c", request)


def test_no_cap_means_no_limit() -> None:
    budget = Budget()
    assert all(budget.reserve(str(i), PRO10) for i in range(1000))
    assert budget.state().remaining is None
    assert "no cap" in str(budget.state()) and "7,000 reserved" in str(budget.state())


def test_state_reads_like_a_status_line() -> None:
    budget = Budget(cap=100)
    budget.reserve("a", PRO5)
    budget.settle("a", D("3.5"))
    budget.reserve("b", PRO10)
    assert str(budget.state()) == "3.5 spent, 7 reserved (1 in flight), 100 budget (units)"


# -- randomized: the cap is never crossed by what the budget allows -------------------------

KINDS = st.sampled_from([STD5, PRO5, PRO10, Kind("kling-v1-6", "std", "10")])
HALVES = st.integers(0, 40).map(lambda n: D(n) / 2)


class BudgetMachine(RuleBasedStateMachine):
    """Random reserve / settle / release sequences against an independent model."""

    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.next_id = 0
        self.in_flight: dict[str, tuple[Kind, Decimal]] = {}
        self.spent = D(0)
        self.overshoot = D(0)
        self.seen: dict[Kind, Decimal] = {}

    @initialize(cap=HALVES, prices=st.dictionaries(st.sampled_from(["std-5", "pro-10"]), HALVES))
    def start(self, cap: Decimal, prices: dict[str, Decimal]) -> None:
        self.budget = Budget(cap=cap, prices=prices)
        self.cap = cap

    @rule(target=jobs, kind=KINDS)
    def reserve(self, kind: Kind) -> str:
        job = f"j{self.next_id}"
        self.next_id += 1
        estimate = self.budget.estimate(kind)
        before = self.spent + sum(u for _, u in self.in_flight.values())
        granted = self.budget.reserve(job, kind)
        assert granted == (before + estimate <= self.cap)
        if granted:
            self.in_flight[job] = (kind, estimate)
        return job

    @rule(job=consumes(jobs), actual=HALVES, within=st.booleans())
    def settle(self, job: str, actual: Decimal, within: bool) -> None:
        if job not in self.in_flight:
            return
        kind, estimate = self.in_flight.pop(job)
        if within:  # Kling charged no more than we expected
            actual = min(actual, estimate)
        s = self.budget.settle(job, actual)
        assert s.overshoot == max(actual - estimate, 0)
        self.spent += actual
        self.overshoot += s.overshoot
        self.seen[kind] = max(self.seen.get(kind, D(0)), actual)

    @rule(job=consumes(jobs))
    def release(self, job: str) -> None:
        held = self.in_flight.pop(job, None)
        assert self.budget.release(job) == (held[1] if held else 0)

    @invariant()
    def books_balance(self) -> None:
        if not hasattr(self, "budget"):
            return
        reserved = sum((u for _, u in self.in_flight.values()), D(0))
        assert (self.budget.spent, self.budget.reserved) == (self.spent, reserved)
        # Only deductions above their estimate can take the total past the cap.
        assert self.spent + reserved <= self.cap + self.overshoot
        for kind, most in self.seen.items():
            assert self.budget.estimate(kind) >= most


TestBudgetMachine = BudgetMachine.TestCase
TestBudgetMachine.settings = settings(max_examples=300, stateful_step_count=40)


@given(
    cap=HALVES,
    steps=st.lists(st.tuples(KINDS, st.integers(0, 2), st.integers(0, 100)), max_size=60),
)
@settings(max_examples=500)
def test_with_honest_deductions_the_cap_is_never_crossed(
    cap: Decimal, steps: list[tuple[Kind, int, int]]
) -> None:
    budget = Budget(cap=cap)
    for n, (kind, action, pct) in enumerate(steps):
        budget.reserve(str(n), kind)
        flying = list(budget._reserved)
        if flying and action:
            job = flying[pct % len(flying)]
            if action == 1:  # ends, charged a share of its estimate
                budget.settle(job, budget._reserved[job][1] * pct / 100)
            else:
                budget.release(job)
        assert budget.spent + budget.reserved <= cap
