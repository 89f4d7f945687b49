"""A folder's units, replayed from its journal into a `Budget` (a run's start, `status`, and a
dry run against an existing folder all count the same way).

Each job's `units` column holds its price kind and what was reserved or spent (`Charge`).
Jobs that finished before that column existed have none; their stored task still carries
Kling's `final_unit_deduction`, which is counted instead (kind unknown: it raises no
estimate). A finished job whose deduction is missing or garbled has an *unknown cost*: it is
not counted, only reported, unless its kind becomes known (a dry run reads its job line).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._budget import Budget
from ._journal import Journal
from ._prices import deduction

__all__ = ["Replayed", "replay"]


@dataclass(frozen=True, slots=True)
class Replayed:
    """What replaying a journal found beyond the units column: finished jobs priced from their
    task's deduction (`backfilled`), and the keys of those whose cost is unknown."""

    backfilled: int
    unknown: frozenset[str]


def replay(journal: Journal, budget: Budget) -> Replayed:
    """Count the journal's units in `budget`: settled tasks spent, the rest reserved (whatever
    the cap: a task that may exist is being paid for), older finished tasks backfilled."""
    for key, _, charge in journal.charges():
        if charge.spent is not None:
            budget.restore(charge.kind, charge.spent)
        else:  # created, or its create's outcome is unknown: it may be billed
            budget.reserve(key, charge.kind, units=charge.reserved, force=True)
    backfilled, unknown = 0, set()
    for key, raw in journal.unpriced():
        units = deduction(raw)
        if units is None:
            unknown.add(key)
        else:
            budget.restore(None, units)
            backfilled += 1
    return Replayed(backfilled, frozenset(unknown))
