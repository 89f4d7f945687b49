"""Budget: units spent + reserved against a cap, so a batch never creates a task past it.

A task's units are *reserved* (its kind's estimate) before its create is sent and *settled*
(its real `final_unit_deduction`) when it ends; a create that never happened is *released*. A
new task is allowed only when spent + reserved + its estimate fits under the cap. When a real
deduction exceeds its estimate, the kind's estimate is raised to it (later reservations use the
dearer figure) and the overshoot is reported in the returned `Settlement`.

Every method is synchronous and never awaits, so on one event loop a check-and-reserve is
atomic: two submitters cannot both take the last units. State is rebuilt after a restart by
replaying the journal: `reserve(..., units=recorded, force=True)` for tasks that exist and
`restore(kind, units)` for finished ones (counted, not remembered one by one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from ._prices import Kind, Priced, PriceTable, Units, format_units, kind_of, parse_units

__all__ = ["Budget", "BudgetState", "Settlement"]


@dataclass(frozen=True, slots=True)
class Settlement:
    """What settling one task did: what it cost, what was expected, and any overshoot."""

    job: str
    kind: Kind
    units: Decimal  # charged (the estimate when Kling reported no deduction)
    estimate: Decimal  # what was reserved for it
    reported: bool  # False: no usable final_unit_deduction, the estimate was charged
    raised_to: Decimal | None = None  # the kind's new estimate, when this task raised it

    @property
    def overshoot(self) -> Decimal:
        """Units charged beyond the estimate (0 when within it)."""
        return max(self.units - self.estimate, Decimal(0))


@dataclass(frozen=True, slots=True)
class BudgetState:
    """A snapshot: units spent, reserved for tasks in flight, and the cap (None: no cap)."""

    spent: Decimal
    reserved: Decimal
    cap: Decimal | None
    in_flight: int

    @property
    def remaining(self) -> Decimal | None:
        """Units still free under the cap (never negative), or None without a cap."""
        if self.cap is None:
            return None
        return max(self.cap - self.spent - self.reserved, Decimal(0))

    def __str__(self) -> str:
        cap = "no cap" if self.cap is None else f"{format_units(self.cap)} budget"
        return (
            f"{format_units(self.spent)} spent, {format_units(self.reserved)} reserved "
            f"({self.in_flight} in flight), {cap} (units)"
        )


class Budget:
    """Units accounting for one batch: reserve before a create, settle or release after."""

    def __init__(
        self,
        cap: Units | None = None,
        prices: PriceTable | Mapping[str | Kind, Units] | None = None,
    ) -> None:
        self.cap = None if cap is None else parse_units(cap)
        self.prices = PriceTable.of(prices)
        self._reserved: dict[str, tuple[Kind, Decimal]] = {}  # job → (kind, units held)
        self._settled: dict[str, Settlement] = {}
        self._raised: dict[Kind, Decimal] = {}  # highest deduction seen above the table's price
        self._reserved_total = Decimal(0)
        self._spent = Decimal(0)

    @property
    def spent(self) -> Decimal:
        """Units charged for settled tasks."""
        return self._spent

    @property
    def reserved(self) -> Decimal:
        """Units held for tasks created (or being created) and not yet settled."""
        return self._reserved_total

    def state(self) -> BudgetState:
        """Spent, reserved and cap, for a status line."""
        return BudgetState(self._spent, self._reserved_total, self.cap, len(self._reserved))

    def estimate(self, kind: Priced | Kind) -> Decimal:
        """Units one task of this kind is expected to cost: its price, or more if seen."""
        k = kind_of(kind)
        return max(self.prices.price(k), self._raised.get(k, Decimal(0)))

    def can_afford(self, units: Decimal) -> bool:
        """True if `units` more fit: spent + reserved + units <= cap (always without a cap)."""
        return self.cap is None or self._spent + self._reserved_total + units <= self.cap

    def reserve(
        self,
        job: str,
        kind: Priced | Kind,
        *,
        units: Units | None = None,
        force: bool = False,
    ) -> bool:
        """Hold units for `job` before its create; False (nothing held) if over the cap.

        `units` defaults to the kind's estimate. `force=True` records a task that already
        exists (resumed from the journal) even past the cap: it is being paid for either way.
        Reserving a job that already holds units changes nothing and returns True.
        """
        if job in self._settled:
            raise ValueError(f"job {job!r} is already settled; it cannot be reserved again")
        if job in self._reserved:
            return True
        k = kind_of(kind)
        amount = self.estimate(k) if units is None else parse_units(units)
        if not force and not self.can_afford(amount):
            return False
        self._reserved[job] = (k, amount)
        self._reserved_total += amount
        return True

    def held(self, job: str) -> tuple[Kind, Decimal] | None:
        """The kind and units reserved for `job`, if any."""
        return self._reserved.get(job)

    def restore(self, kind: Priced | Kind | None, units: Units) -> None:
        """Count a task an earlier run settled: spent, and its kind's estimate raised if it
        cost more (no per-job record: a finished task is never settled again). `kind` None:
        a task recorded before units were, whose kind is unknown: only counted."""
        charged = parse_units(units)
        if kind is not None and charged > self.estimate(k := kind_of(kind)):
            self._raised[k] = charged
        self._spent += charged

    def release(self, job: str) -> Decimal:
        """Free the units held for `job` (its create never happened); returns them (0 if none)."""
        held = self._reserved.pop(job, None)
        if held is None:
            return Decimal(0)
        self._reserved_total -= held[1]
        return held[1]

    def settle(
        self, job: str, units: Decimal | None, *, kind: Priced | Kind | None = None
    ) -> Settlement:
        """Charge `job`'s real deduction (None: unknown, charge the estimate); once per job.

        `kind` is needed only for a job that was never reserved here (a replayed journal row).
        A deduction above the estimate raises the kind's estimate; see `Settlement.overshoot`.
        """
        if (done := self._settled.get(job)) is not None:
            return done  # a task ends once; a repeated report (rerun, callback) costs nothing
        held = self._reserved.get(job)
        if held is None:
            if kind is None:
                raise ValueError(f"job {job!r} holds no reservation: pass its kind")
            k = kind_of(kind)
            estimate = self.estimate(k)
        else:
            k, estimate = held
        reported = units is not None
        charged = estimate if units is None else parse_units(units)
        raised = None
        if charged > self.estimate(k):
            self._raised[k] = raised = charged
        self.release(job)
        self._spent += charged
        result = Settlement(job, k, charged, estimate, reported, raised)
        self._settled[job] = result
        return result
